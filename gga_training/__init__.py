"""Training: recipes, the training loop and its regimes (standard, adversarial, virtual
adversarial, distillation), regularisers, augmentation, checkpoints and the seeded splits.

Sits above ``attacks`` (adversarial training runs FGSM and PGD) and ``models`` (architectures,
data, model folders); the service never imports it.
"""
