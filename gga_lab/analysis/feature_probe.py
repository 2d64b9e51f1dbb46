"""How much do the ten GGA features say about each kind of untrusted input?

A diagnostic for docs/results.md. For a zoo model it compares clean, correctly classified test
inputs with three kinds of untrusted input: PGD l_inf run for all its steps (deep inside the
wrong class), the same PGD stopped at each input's first successful step (just past the
boundary), and uniform noise images. Per kind it prints the mean S1 and S2 similarities, the
best single feature's AUROC (either direction), and, under 5-fold cross-validation, the AUROC of a
logistic regression on all ten features, the AUROC and TNR@95TPR of gradient-boosted trees on
them (a nonlinear bound on what a detector on these features could do) and of the same trees on
the whole CSM (a bound for any GGA feature set: every off-diagonal entry, those with the
predicted class and those without each sorted, so that the classes' order does not matter),
next to the same trees on the predicted class alone: an attack that favours some target classes
is told apart by that alone, and the whole CSM implies the predicted class. Last, an
unsupervised detector on the whole CSM, as GGA's must be: a Gaussian per predicted class
(Ledoit-Wolf covariance) on the 45 entries of correctly classified clean training images,
scoring the Mahalanobis distance to the predicted class's mean.
Both with and without the reference code's logit rescaling. It also
prints each kind's logits (median top logit, median mean of the others, and how often the
largest |z_j|, the rescaling's divisor, belongs to another class than the predicted one).

    gga lab feature-probe mnist-lenet-low --data-dir ../shared/data \
        --n 1000 --out docs/results/mnist-lenet-low/feature_probe.txt
"""

import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from attacks.pgd import PGD
from detectors.engine import EngineOptions, GradientEngine
from detectors.features import FEATURE_NAMES, pair_masks
from gga_lab.metrics import auroc, tnr_at_tpr
from models.data import load_dataset
from models.repository import ModelRepository


def separability(clean: torch.Tensor, other: torch.Tensor) -> tuple[str, float, float]:
    """(best single feature, its AUROC either way round, cross-validated logistic AUROC)."""
    x, labels = _stacked(clean, other)
    single = [auroc(x[labels == 0, i], x[labels == 1, i]) for i in range(x.shape[1])]
    single = [max(a, 1 - a) for a in single]
    best = int(np.argmax(single))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    scores = cross_val_predict(model, x, labels, cv=5, method="predict_proba")[:, 1]
    return FEATURE_NAMES[best], single[best], auroc(scores[labels == 0], scores[labels == 1])


def boosted_bound(clean: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    """Cross-validated (AUROC, TNR@95TPR) of gradient-boosted trees, which need no linearity."""
    x, labels = _stacked(clean, other)
    model = HistGradientBoostingClassifier(max_iter=200, random_state=0)
    scores = cross_val_predict(model, x, labels, cv=5, method="predict_proba")[:, 1]
    trusted, untrusted = scores[labels == 0], scores[labels == 1]
    return auroc(trusted, untrusted), tnr_at_tpr(trusted, untrusted)


def csm_entries(csm: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Every off-diagonal CSM entry, without (S1) and with (S2) the predicted class, each sorted."""
    s1_mask, s2_mask = pair_masks(predicted, csm.shape[1])
    s1 = csm[s1_mask].view(len(csm), -1).sort(dim=1).values  # every row has the same count
    s2 = csm[s2_mask].view(len(csm), -1).sort(dim=1).values
    return torch.cat([s1, s2], dim=1)


class Probed(NamedTuple):
    features: torch.Tensor
    csm: torch.Tensor
    predicted: torch.Tensor


def probe(engine: GradientEngine, x: torch.Tensor, batch_size: int = 128) -> Probed:
    """The engine's features, CSMs and predictions of ``x``, batch by batch (as ``gga fit``)."""
    outs = [engine(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return Probed(*(torch.cat([getattr(o, f) for o in outs]) for f in Probed._fields))


class ClassGaussians:
    """A Gaussian per predicted class on the CSM's upper triangle (class order kept)."""

    def __init__(self, csm: torch.Tensor, predicted: torch.Tensor) -> None:
        self.fits = {}
        for k in predicted.unique().tolist():
            self.fits[k] = LedoitWolf().fit(upper_triangle(csm[predicted == k]))

    def auroc_and_tnr(
        self, clean: tuple[torch.Tensor, torch.Tensor], other: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[float, float]:
        trusted, untrusted = self.score(*clean), self.score(*other)
        return auroc(trusted, untrusted), tnr_at_tpr(trusted, untrusted)

    def score(self, csm: torch.Tensor, predicted: torch.Tensor) -> np.ndarray:
        entries = upper_triangle(csm)
        return np.array(
            [
                self.fits[k].mahalanobis(e[None])[0]
                for e, k in zip(entries, predicted.tolist(), strict=True)
            ]
        )


def upper_triangle(csm: torch.Tensor) -> np.ndarray:
    rows, cols = np.triu_indices(csm.shape[1], 1)
    return csm.numpy()[:, rows, cols]


def one_hot(predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(predicted, num_classes).float()


def _stacked(clean: torch.Tensor, other: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = torch.cat([clean, other]).numpy()
    return x, np.r_[np.zeros(len(clean)), np.ones(len(other))]


def logit_summary(logits: torch.Tensor) -> str:
    """Median top logit, median mean of the rest, share whose max |z_j| is not the top class."""
    ordered = logits.sort(dim=1, descending=True).values
    other_divisor = logits.abs().argmax(1) != logits.argmax(1)
    return (
        f"top logit {ordered[:, 0].median():+.1f}, others {ordered[:, 1:].mean(1).median():+.1f}, "
        f"max |z| not the top class {100 * other_divisor.float().mean():.0f}%"
    )


def probe_model(
    model: str,
    data_dir: str | None = None,
    n: int = 200,
    eps: float | None = None,
    steps: int = 70,
    out: Path | None = None,
    repo: str | None = None,
) -> None:
    """Print the module docstring's figures for ``model``, line by line; also write them to
    ``out``."""
    torch.manual_seed(0)
    loaded = ModelRepository(repo).load(model)
    data = load_dataset(loaded.card.dataset, "test", data_dir=data_dir, limit=n)
    x, y = data.float(), data.y
    with torch.no_grad():
        correct = loaded.module(x).argmax(1) == y
    train = load_dataset(loaded.card.dataset, "train", data_dir=data_dir, limit=5000)
    eps = eps or (0.3 if loaded.card.dataset == "mnist" else 0.1)
    kinds = _untrusted_kinds(loaded.module, x, y, correct, eps, steps)
    report = Report()
    report.write(
        f"{model}: {int(correct.sum())} clean inputs; PGD l_inf eps {eps}, {steps} steps\n"
    )
    with torch.no_grad():
        for label, inputs in {"clean": x[correct], **kinds}.items():
            report.write(f"  logits, {label:24s} {logit_summary(loaded.module(inputs))}\n")
    for rescale in (True, False):
        _probe_engine(loaded.module, rescale, x[correct], (train.float(), train.y), kinds, report)
    if out:
        report.save(out)


def _untrusted_kinds(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    correct: torch.Tensor,
    eps: float,
    steps: int,
) -> dict[str, torch.Tensor]:
    """Full PGD, PGD stopped at success (both on correctly classified inputs), noise images."""
    kinds = {}
    for label, early_stop in (("PGD, all steps", False), ("PGD, stopped at success", True)):
        result = PGD(model, eps=eps, steps=steps, seed=0, early_stop=early_stop)(x, y)
        kinds[label] = result.x_adv[result.success & correct]
    generator = torch.Generator().manual_seed(0)
    kinds["uniform noise images"] = torch.rand(
        int(correct.sum()), *x.shape[1:], generator=generator
    )
    return kinds


def _probe_engine(
    model: torch.nn.Module,
    rescale: bool,
    clean_x: torch.Tensor,
    train: tuple[torch.Tensor, torch.Tensor],
    kinds: dict[str, torch.Tensor],
    out: "Report",
) -> None:
    """One engine setting's separability figures per kind."""
    engine = GradientEngine(model, EngineOptions(rescale_logits=rescale))
    clean_result = probe(engine, clean_x)
    clean = clean_result.features
    clean_csm = csm_entries(clean_result.csm, clean_result.predicted)
    fitted = probe(engine, train[0])
    correct_train = fitted.predicted == train[1]
    gaussians = ClassGaussians(fitted.csm[correct_train], fitted.predicted[correct_train])
    out.write(
        f"rescale={rescale}: clean S1 mean {clean[:, 0].mean():+.3f}, "
        f"S2 mean {clean[:, 5].mean():+.3f}\n"
    )
    for label, inputs in kinds.items():
        result = probe(engine, inputs)
        other = result.features
        name, single, logistic = separability(clean, other)
        boosted_auroc, boosted_tnr = boosted_bound(clean, other)
        csm_auroc, csm_tnr = boosted_bound(clean_csm, csm_entries(result.csm, result.predicted))
        gauss_auroc, gauss_tnr = gaussians.auroc_and_tnr(
            (clean_result.csm, clean_result.predicted), (result.csm, result.predicted)
        )
        class_auroc, class_tnr = boosted_bound(
            one_hot(clean_result.predicted, clean_result.csm.shape[1]),
            one_hot(result.predicted, result.csm.shape[1]),
        )
        out.write(
            f"  {label:24s} n={len(other):3d}  S1 mean {other[:, 0].mean():+.3f}  "
            f"S2 mean {other[:, 5].mean():+.3f}  best feature {name} {single:.2f}  "
            f"logistic (5-fold) {logistic:.2f}  boosted {boosted_auroc:.2f} "
            f"(TNR@95 {100 * boosted_tnr:.0f}%)  whole CSM boosted {csm_auroc:.2f} "
            f"(TNR@95 {100 * csm_tnr:.0f}%)  predicted class alone {class_auroc:.2f} "
            f"(TNR@95 {100 * class_tnr:.0f}%)  unsupervised whole-CSM Gaussians "
            f"{gauss_auroc:.2f} (TNR@95 {100 * gauss_tnr:.0f}%)\n"
        )


class Report:
    """Prints each line as it comes (the probe takes minutes) and keeps it for ``--out``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self.lines.append(text)

    def save(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("".join(self.lines))
