"""How much do the ten GGA features say about each kind of untrusted input?

A diagnostic for docs/results.md. For a zoo model it compares clean, correctly classified test
inputs with three kinds of untrusted input: PGD l_inf run for all its steps (deep inside the
wrong class), the same PGD stopped at each input's first successful step (just past the
boundary), and uniform noise images. Per kind it prints the mean S1 and S2 similarities, the
best single feature's AUROC (either direction), and the AUROC of a logistic regression on all
ten features under 5-fold cross-validation: a supervised upper bound on what any detector on
these features could do. Both with and without the reference code's logit rescaling. It also
prints each kind's logits (median top logit, median mean of the others, and how often the
largest |z_j|, the rescaling's divisor, belongs to another class than the predicted one).

    python scripts/feature_probe.py mnist-lenet-low --data-dir ../shared/data
"""

import argparse
import sys

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from attacks.pgd import PGD
from detectors.engine import EngineOptions, GradientEngine
from detectors.features import FEATURE_NAMES
from models.data import load_dataset
from models.repository import ModelRepository


def separability(clean: torch.Tensor, other: torch.Tensor) -> tuple[str, float, float]:
    """(best single feature, its AUROC either way round, cross-validated logistic AUROC)."""
    x = torch.cat([clean, other]).numpy()
    labels = np.r_[np.zeros(len(clean)), np.ones(len(other))]
    single = [roc_auc_score(labels, x[:, i]) for i in range(x.shape[1])]
    single = [max(a, 1 - a) for a in single]
    best = int(np.argmax(single))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    scores = cross_val_predict(model, x, labels, cv=5, method="predict_proba")[:, 1]
    return FEATURE_NAMES[best], single[best], roc_auc_score(labels, scores)


def logit_summary(logits: torch.Tensor) -> str:
    """Median top logit, median mean of the rest, share whose max |z_j| is not the top class."""
    ordered = logits.sort(dim=1, descending=True).values
    other_divisor = logits.abs().argmax(1) != logits.argmax(1)
    return (
        f"top logit {ordered[:, 0].median():+.1f}, others {ordered[:, 1:].mean(1).median():+.1f}, "
        f"max |z| not the top class {100 * other_divisor.float().mean():.0f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--data-dir")
    parser.add_argument("--n", type=int, default=200, help="clean test inputs")
    parser.add_argument("--eps", type=float, help="l_inf budget (default 0.3 MNIST, 0.1 else)")
    parser.add_argument("--steps", type=int, default=70, help="PGD steps (the paper's 70)")
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = ModelRepository().load(args.model)
    data = load_dataset(loaded.card.dataset, "test", data_dir=args.data_dir, limit=args.n)
    x, y = data.float(), data.y
    with torch.no_grad():
        correct = loaded.module(x).argmax(1) == y
    eps = args.eps or (0.3 if loaded.card.dataset == "mnist" else 0.1)
    kinds = {}
    for label, early_stop in (("PGD, all steps", False), ("PGD, stopped at success", True)):
        result = PGD(loaded.module, eps=eps, steps=args.steps, seed=0, early_stop=early_stop)(x, y)
        kinds[label] = result.x_adv[result.success & correct]
    generator = torch.Generator().manual_seed(0)
    kinds["uniform noise images"] = torch.rand(
        int(correct.sum()), *x.shape[1:], generator=generator
    )
    out = sys.stdout
    out.write(
        f"{args.model}: {int(correct.sum())} clean inputs; "
        f"PGD l_inf eps {eps}, {args.steps} steps\n"
    )
    with torch.no_grad():
        for label, inputs in {"clean": x[correct], **kinds}.items():
            out.write(f"  logits, {label:24s} {logit_summary(loaded.module(inputs))}\n")
    for rescale in (True, False):
        engine = GradientEngine(loaded.module, EngineOptions(rescale_logits=rescale))
        clean = engine(x[correct]).features
        out.write(
            f"rescale={rescale}: clean S1 mean {clean[:, 0].mean():+.3f}, "
            f"S2 mean {clean[:, 5].mean():+.3f}\n"
        )
        for label, inputs in kinds.items():
            other = engine(inputs).features
            name, single, logistic = separability(clean, other)
            out.write(
                f"  {label:24s} n={len(other):3d}  S1 mean {other[:, 0].mean():+.3f}  "
                f"S2 mean {other[:, 5].mean():+.3f}  best feature {name} {single:.2f}  "
                f"logistic (5-fold) {logistic:.2f}\n"
            )


if __name__ == "__main__":
    main()
