"""How well does each GGA feature alone separate clean from PGD inputs?

A diagnostic for the open question in docs/results.md: prints, for a zoo model, the clean and
adversarial S1 means and the per-feature AUROC (clean = 0, PGD = 1), with and without the
reference code's logit rescaling.

    python scripts/feature_probe.py mnist-lenet-low --data-dir ../shared/data
"""

import argparse
import sys

import torch
from sklearn.metrics import roc_auc_score

from attacks.pgd import PGD
from detectors.engine import EngineOptions, GradientEngine
from detectors.features import FEATURE_NAMES
from models.data import load_dataset
from models.repository import ModelRepository


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--data-dir")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--eps", type=float, help="l_inf budget (default 0.3 MNIST, 0.1 else)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = ModelRepository().load(args.model)
    data = load_dataset(loaded.card.dataset, "test", data_dir=args.data_dir, limit=args.n)
    x, y = data.float(), data.y
    eps = args.eps or (0.3 if loaded.card.dataset == "mnist" else 0.1)
    result = PGD(loaded.module, eps=eps, steps=args.steps, seed=0)(x, y)
    x_adv = result.x_adv[result.success]
    out = sys.stdout
    out.write(
        f"{args.model}: PGD eps {eps}, {args.steps} steps, "
        f"success {result.success.float().mean():.3f}\n"
    )
    for rescale in (True, False):
        engine = GradientEngine(loaded.module, EngineOptions(rescale_logits=rescale))
        clean, adv = engine(x).features, engine(x_adv).features
        labels = [0] * len(clean) + [1] * len(adv)
        aucs = {
            name: roc_auc_score(labels, torch.cat([clean[:, i], adv[:, i]]).numpy())
            for i, name in enumerate(FEATURE_NAMES)
        }
        out.write(
            f"rescale={rescale}: "
            f"S1 mean clean {clean[:, 0].mean():+.3f} adv {adv[:, 0].mean():+.3f}; "
            f"S2 mean clean {clean[:, 5].mean():+.3f} adv {adv[:, 5].mean():+.3f}\n  AUROC "
            + ", ".join(f"{k} {v:.2f}" for k, v in aucs.items())
            + "\n"
        )


if __name__ == "__main__":
    main()
