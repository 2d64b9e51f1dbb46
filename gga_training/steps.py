"""One step function per training regime: the loss of one batch, chosen once from the recipe.

Every step function has one signature, ``step(ctx, x, y) -> (loss, logits)``; ``STEPS`` maps a
regime to its function and ``choose_step`` picks the recipe's (``gga_training.train`` calls it
once per run). The regimes are standard training, distillation (Hinton et al.), FGSM/PGD
adversarial training (Goodfellow et al., Madry et al.) and fast AT (Wong et al. 2020); VAT
(Miyato et al.) adds its term to any of them.

A step draws its random numbers from the run's generator (fast-AT random starts, VAT's
unlabelled images) or torch's global one (PGD's random start, VAT's direction, dropout), which a
checkpoint saves; so a step must keep the order of its draws and forward passes, or a resumed run
no longer ends where an uninterrupted one does (and BatchNorm's running statistics follow the
forward passes made in train mode).
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from attacks.fgsm import FGSM
from attacks.pgd import PGD
from gga_training.recipe import AdversarialSection, Recipe
from gga_training.regularizers import distillation_loss, vat_loss
from models.errors import RecipeError


@dataclass
class StepContext:
    """What a step function reads besides the batch; fixed for the whole run.

    Attributes:
        recipe: the run's recipe (label smoothing, its regime's sections).
        model: the model being trained; attacks and VAT call it directly.
        forward: the training forward pass: ``model``, or its ``torch.compile`` wrapper.
        generator: the run's generator (fast-AT random starts, VAT's unlabelled draws), which a
            checkpoint saves so that a resumed run draws the same.
        teacher: the distillation teacher, in eval mode, or None.
        x_unl: unlabelled images for VAT, float in [0, 1], (U, C, H, W); U may be 0.
    """

    recipe: Recipe
    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    generator: torch.Generator
    teacher: nn.Module | None = None
    x_unl: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.recipe.optim.label_smoothing)


# A step's (loss, logits): the loss is a batch mean, ready for backward; the logits, (B, classes),
# are the ones the epoch's training accuracy counts.
StepOutput = tuple[torch.Tensor, torch.Tensor]
# (context, images (B, C, H, W) in [0, 1], labels (B,)) -> (loss, logits)
Step = Callable[[StepContext, torch.Tensor, torch.Tensor], StepOutput]


def standard_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
    """Cross-entropy on the batch, with the recipe's label smoothing."""
    logits = ctx.forward(x)
    return ctx.cross_entropy(logits, y), logits


def distillation_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
    """Hinton et al.: match the teacher's softened outputs and the true labels."""
    logits = ctx.forward(x)
    with torch.no_grad():
        teacher_logits = ctx.teacher(x)
    d = ctx.recipe.distillation
    return distillation_loss(logits, teacher_logits, y, d.temperature, d.weight), logits


def adversarial_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
    """FGSM or PGD adversarial training: ``alpha * clean loss + (1 - alpha) * CE(x_adv)``.

    ``x_adv`` is crafted through ``attacks`` in eval mode, after the clean pass; the clean loss is
    distillation's when the recipe has a teacher. The logits are the clean inputs'.
    """
    adv = ctx.recipe.adversarial
    clean_step = distillation_step if ctx.recipe.distillation is not None else standard_step
    loss, logits = clean_step(ctx, x, y)
    x_adv = _adversarial_batch(ctx.model, x, y, adv)
    return adv.alpha * loss + (1 - adv.alpha) * ctx.cross_entropy(ctx.forward(x_adv), y), logits


def fast_at_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
    """Wong et al.'s fast AT: CE on one signed step from a random start, crafted in train mode.

    ``alpha > 0`` mixes in the clean CE as ``adversarial_step`` does (its pass comes after the
    adversarial one); ``alpha = 0`` skips it. The logits are the adversarial inputs', the ones the
    optimiser learns from. A distillation teacher plays no part.
    """
    adv = ctx.recipe.adversarial
    x_adv = _fgsm_random_start(ctx.forward, x, y, adv, ctx.generator)
    logits = ctx.forward(x_adv)
    loss = ctx.cross_entropy(logits, y)
    if adv.alpha:
        loss = adv.alpha * ctx.cross_entropy(ctx.forward(x), y) + (1 - adv.alpha) * loss
    return loss, logits


def vat_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, inner: Step) -> StepOutput:
    """Miyato et al.'s VAT on top of another regime: ``inner``'s loss + ``alpha`` * VAT loss.

    The VAT term is taken around the clean batch, with ``inner``'s logits as the reference, and
    around as many unlabelled images drawn with replacement (if the recipe holds some back).
    """
    loss, logits = inner(ctx, x, y)
    v = ctx.recipe.vat
    vat_inputs, vat_logits = x, logits
    if len(ctx.x_unl):
        # Unlabelled inputs join the VAT term only: it needs no labels.
        u = ctx.x_unl[torch.randint(len(ctx.x_unl), (len(x),), generator=ctx.generator)]
        vat_inputs = torch.cat([x, u])  # (2B, C, H, W)
        vat_logits = torch.cat([logits, ctx.model(u)])  # (2B, classes)
    term = vat_loss(ctx.model, vat_inputs, vat_logits, v.eps, v.xi, v.power_iterations)
    return loss + v.alpha * term, logits


# Regime -> step function; ``regime`` names a recipe's regime.
STEPS: dict[str, Step] = {
    "standard": standard_step,
    "distillation": distillation_step,
    "fgsm": adversarial_step,
    "pgd": adversarial_step,
    "fgsm-rs": fast_at_step,
}


def regime(recipe: Recipe) -> str:
    """The recipe's training regime, its key in ``STEPS``.

    The ``[adversarial]`` method if there is one, else ``"distillation"`` with a teacher, else
    ``"standard"``. VAT is not a regime of its own: ``choose_step`` adds it to any of them.
    """
    if recipe.adversarial is not None:
        return recipe.adversarial.method
    return "distillation" if recipe.distillation is not None else "standard"


def choose_step(recipe: Recipe) -> Step:
    """The step function of the recipe's regime, with VAT's term added when it has ``[vat]``.

    Raises:
        RecipeError: the regime has no step function (a ``Recipe`` built without
            ``recipe_from_dict``'s checks, with an unknown adversarial method).
    """
    name = regime(recipe)
    if name not in STEPS:
        raise RecipeError(
            f"no training step for regime {name!r} (known: {', '.join(STEPS)}): set the "
            "recipe's [adversarial] method to one of these"
        )
    if recipe.vat is not None:
        return functools.partial(vat_step, inner=STEPS[name])
    return STEPS[name]


def _adversarial_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, section: AdversarialSection
) -> torch.Tensor:
    if section.method == "fgsm":
        attack = FGSM(model, eps=section.eps)
    else:
        step = section.step_size or 2.5 * section.eps / section.steps
        attack = PGD(model, eps=section.eps, step_size=step, steps=section.steps)
    return attack(x, y).x_adv.detach()


def _fgsm_random_start(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    section: AdversarialSection,
    generator: torch.Generator,
) -> torch.Tensor:
    """Wong et al.'s fast-AT input: a uniform random start in the eps ball, one signed step.

    Runs the model as it is (train mode, as the paper does: BatchNorm sees the batch); only the
    input gradient is taken, the weights' gradients are not touched.
    """
    eps = section.eps
    step = section.step_size or 1.25 * eps
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    delta = ((x + delta).clamp(0.0, 1.0) - x).requires_grad_(True)
    loss = F.cross_entropy(forward(x + delta), y)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + step * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0.0, 1.0)
