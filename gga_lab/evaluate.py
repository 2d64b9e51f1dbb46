"""The paper's evaluation protocol on our models: GGA against the baselines.

Positives are clean, correctly classified test inputs. Untrusted kinds, each built from those
inputs (or independent of them, for out-of-distribution sets):

- ``noise``: uniform noise in the l_inf eps ball (every noisy input counts);
- ``pgd_linf``, ``pgd_l2``: PGD, 70 steps of eps/4, l_2 eps = 10 x l_inf eps (successful only);
- ``rotation``: rotations up to 45 degrees that change the prediction;
- ``lbfgs``: Szegedy et al.'s L-BFGS attack (successful only; our stand-in for the paper's
  Brendel & Bethge minimal attacks);
- ``ood_dataset``, ``ood_noise``, ``ood_photos``: the other grey data set (Fashion-MNIST for a
  CIFAR-10 model; two Fashion-MNIST items side by side for a two-digit MNIST model), uniform and
  Gaussian noise images, crops of photos (pooled into the table's OOD column);
- two-digit MNIST models: ``ood_mnist``, single MNIST digits (one half of the input blank),
  pooled into the OOD column too;
- CIFAR-10 models only: ``ood_mnist`` (MNIST digits as 32x32 RGB) and ``ood_corrupted`` (test
  images under a common corruption at severity 5, ``attacks.corruptions``, that the model still
  classifies correctly), pooled into the OOD column too; the corrupted images it gets wrong are
  reported separately as ``corrupted_wrong`` (a misclassification to catch, not a shift alone);
- adaptive attacks on GGA: ``tpgd_ce``, ``tpgd_mse`` (targeted PGD, random targets) and ``csa``
  (the cosine-similarity attack), successful only;
- the adaptive attack on the shipped trust score itself, ``adaptive_trust``
  (``gga_lab.adaptive_trust``), on the first ``n_slow`` positives: its misclassified outputs,
  and, beside the plain PGD on the same inputs, the share that ends misclassified **and** trusted
  (``EvalResult.adaptive_trust``);
- beyond the paper: ``pgd_linf_min``, PGD l_inf stopped at each input's first successful step.

Per kind: TNR@95TPR and each detector's rank; pooled over the table's kinds: AUROC, AUPR-In,
AUPR-Out; for the shipped trust score (the fused views, ranked by its fused statistic: the same
order as the trust score up to ties), each of its views alone, and every baseline.
"""

import logging
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from attacks.base import TargetMode
from detectors.base import Detector
from detectors.engine import EngineOutput
from detectors.pipeline import GGAPipeline
from detectors.trust import TrustScorer
from gga_lab.adaptive_trust import DEFAULT_LAM, AdaptiveReport, attack_trust
from gga_lab.attack_registry import AttackKind
from gga_lab.baselines import KNN, ODIN, EnergyScore, GradNorm, Mahalanobis, MaxSoftmax
from gga_lab.fit import LINF_EPS
from gga_lab.metrics import OODMetrics, auroc, roc_points, tnr_at_tpr
from models.penultimate import has_penultimate

logger = logging.getLogger(__name__)

TABLE_KINDS: tuple[str, ...] = (
    "noise",
    "pgd_linf",
    "pgd_l2",
    "rotation",
    "lbfgs",
    "ood_dataset",
    "ood_noise",
    "ood_photos",
    "ood_mnist",
    "ood_corrupted",
)
ADAPTIVE_KINDS: tuple[str, ...] = ("tpgd_ce", "tpgd_mse", "csa", "adaptive_trust")
# Made by attacking the served pipeline itself, so only once it is built (and not by an attack of
# the registry, which knows the model alone).
PIPELINE_KINDS: tuple[str, ...] = ("adaptive_trust",)
# Not in the paper: PGD l_inf that stops each input at its first successful step, so it sits just
# past the decision boundary (as L-BFGS's minimal perturbations do) rather than deep inside;
# and the corrupted CIFAR-10 images the model gets wrong.
EXTRA_KINDS: tuple[str, ...] = ("pgd_linf_min", "corrupted_wrong")
# OOD sets of colour models only: MNIST is in-distribution for an MNIST model, and the common
# corruptions' severities are CIFAR-10-C's.
CIFAR_KINDS: tuple[str, ...] = ("ood_mnist", "ood_corrupted", "corrupted_wrong")
# Other data sets that run one of those: for a two-digit MNIST model, MNIST is a single digit
# where two belong.
ALSO_RUN_ON: dict[str, tuple[str, ...]] = {"ood_mnist": ("two-digit-mnist",)}
ALL_KINDS: tuple[str, ...] = TABLE_KINDS + ADAPTIVE_KINDS + EXTRA_KINDS
SLOW_KINDS: tuple[str, ...] = ("lbfgs", "csa")  # capped at ``n_slow`` inputs
OOD_KINDS: tuple[str, ...] = (
    "ood_dataset",
    "ood_noise",
    "ood_photos",
    "ood_mnist",
    "ood_corrupted",
)
# l_2 budgets where the paper does not use 10 x the l_inf one: CIFAR-10's 0.5 (l_inf 8/255).
L2_EPS: dict[str, float] = {"cifar10": 0.5}
CORRUPTION_SEVERITY = 5
# Table 1 columns: ours -> the paper's closest column (L-BFGS and PGD l_2 stand in for B&B).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("noise", "noise", "noise"),
    ("pgd_linf", "PGD l∞", "PGD"),
    ("rotation", "rotation", "rotation"),
    ("lbfgs", "L-BFGS", "B&B"),
    ("pgd_l2", "PGD l2", "B&B-L2"),
    ("ood", "OOD", "OOD"),
)
UNDEFINED_SCORE = 1e300  # finite (scikit-learn refuses inf) and above any real score
TRUST = "trust score"  # the shipped, fused score
BASELINES: tuple[str, ...] = ("max softmax", "ODIN", "energy", "Mahalanobis", "k-NN", "GradNorm")
# Our rows that the paper's rows describe: its GGA is LODA on the ten features, our gga-paper.
PAPER_ROWS: dict[str, str] = {
    "max softmax": "max softmax",
    "ODIN": "ODIN",
    "Mahalanobis": "Mahalanobis",
    "view gga-paper": "GGA",
}


def view_row(name: str) -> str:
    """The report's row name of a trust view alone."""
    return f"view {name}"


# The paper's Table 1 (TNR@95TPR in %, pooled AUROC) and its adaptive attacks (GGA only).
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "mnist": {
        "max softmax": {
            "noise": 45.8,
            "PGD": 3.3,
            "rotation": 59.7,
            "B&B": 99.9,
            "B&B-L2": 99.3,
            "OOD": 55.0,
            "AUROC": 86.1,
        },
        "ODIN": {
            "noise": 97.2,
            "PGD": 2.5,
            "rotation": 92.0,
            "B&B": 93.6,
            "B&B-L2": 89.1,
            "OOD": 69.4,
            "AUROC": 88.2,
        },
        "Mahalanobis": {
            "noise": 100.0,
            "PGD": 12.4,
            "rotation": 93.5,
            "B&B": 98.4,
            "B&B-L2": 99.0,
            "OOD": 97.9,
            "AUROC": 92.4,
        },
        "GGA": {
            "noise": 100.0,
            "PGD": 98.9,
            "rotation": 98.2,
            "B&B": 100.0,
            "B&B-L2": 100.0,
            "OOD": 98.1,
            "AUROC": 99.5,
            "tpgd_ce": 95.4,
            "tpgd_mse": 97.3,
            "csa": 72.1,
        },
    },
    "cifar10": {
        "max softmax": {
            "noise": 10.5,
            "PGD": 0.0,
            "rotation": 55.1,
            "B&B": 97.5,
            "B&B-L2": 95.4,
            "OOD": 77.2,
            "AUROC": 82.7,
        },
        "ODIN": {
            "noise": 25.3,
            "PGD": 0.0,
            "rotation": 45.1,
            "B&B": 14.0,
            "B&B-L2": 14.5,
            "OOD": 83.6,
            "AUROC": 81.2,
        },
        "Mahalanobis": {
            "noise": 93.1,
            "PGD": 85.9,
            "rotation": 73.2,
            "B&B": 90.8,
            "B&B-L2": 91.3,
            "OOD": 88.2,
            "AUROC": 90.0,
        },
        "GGA": {
            "noise": 95.6,
            "PGD": 92.6,
            "rotation": 84.5,
            "B&B": 93.2,
            "B&B-L2": 93.3,
            "OOD": 84.2,
            "AUROC": 96.3,
            "tpgd_ce": 90.3,
            "tpgd_mse": 91.5,
            "csa": 69.7,
        },
    },
}


SPLITS: dict[str, str] = {"test": "test", "held-out": "held-out training"}


@dataclass
class EvalConfig:
    """Sizes, seeds and budgets of one evaluation.

    Attributes:
        n: clean test inputs drawn (positives are the correctly classified ones); each kind has
            at most this many inputs.
        n_slow: cap for the slow attacks (L-BFGS, CSA, the adaptive attack on the trust score).
        seed: seeds every attack and noise source.
        eps_linf: l_inf budget; ``None`` = the data set's (MNIST 0.3, Fashion-MNIST 0.1, CIFAR
            8/255). ``eps_l2`` defaults to the data set's (CIFAR-10: 0.5, the paper's), else 10 x
            the l_inf budget (the paper's rule for the grey data sets).
        pgd_steps: PGD iterations (the paper: 70, step eps/4).
        csa_steps: CSA iterations (the paper: 100).
        adaptive_steps: iterations of the adaptive attack on the trust score and of the plain
            PGD it is compared with (steps of eps/4).
        adaptive_lam: its weight of the views' evidence against the cross-entropy once the
            label is wrong (``gga_lab.adaptive_trust``).
        n_baseline_fit: clean training inputs the baselines are fitted/tuned on.
        kinds: kinds to run, a subset of ``ALL_KINDS``.
        batch_size: inputs per batch.
        examples: inputs shown per kind in the example figures.
        split: where the clean inputs come from, for the report: ``"test"`` (to report numbers)
            or ``"held-out"`` (training images the model never trained on: to choose between
            detector settings without looking at the test set).
        drawn: which of the split's images are the clean inputs, in words, for the report
            (``Dataset.drawn``, e.g. ``"a class-balanced subset, seed 0"``).
    """

    n: int = 1000
    n_slow: int = 100
    seed: int = 0
    eps_linf: float | None = None
    eps_l2: float | None = None
    pgd_steps: int = 70
    csa_steps: int = 100
    adaptive_steps: int = 100
    adaptive_lam: float = DEFAULT_LAM
    n_baseline_fit: int = 5000
    kinds: tuple[str, ...] = ALL_KINDS
    batch_size: int = 128
    examples: int = 4
    split: str = "test"
    drawn: str = "chosen by the caller"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        unknown = sorted(set(self.kinds) - set(ALL_KINDS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; choose from {', '.join(ALL_KINDS)}")
        if self.n < 20:
            raise ValueError(f"n must be at least 20 for TNR@95TPR to mean anything, got {self.n}")


@dataclass
class EvalResult:
    """Everything an evaluation measured (``to_dict`` is the JSON written)."""

    model: str
    dataset: str
    config: dict[str, Any]
    eps: dict[str, float]
    n_clean: int
    clean_accuracy: float
    false_alarm: dict[str, float]
    kinds: dict[str, dict[str, Any]]
    tnr: dict[str, dict[str, float]]
    auroc: dict[str, dict[str, float]]
    pooled: dict[str, dict[str, float]]
    ranks: dict[str, dict[str, int]]
    detector: dict[str, Any]
    seconds: float
    adaptive_trust: AdaptiveReport | None = None  # None when the kind was not run
    scores: dict[str, dict[str, np.ndarray]] = field(repr=False, default_factory=dict)
    examples: dict[str, dict[str, np.ndarray]] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["scores"], data["examples"]
        data["published"] = PUBLISHED.get(self.dataset, {})
        return data


def attack_kinds(
    eps: dict[str, float], cfg: EvalConfig, rows: int | None = None
) -> dict[str, AttackKind]:
    """The kinds made by an attack, each a registered attack (``LAB_ATTACKS``) and its parameters.

    Args:
        eps: ``{"linf": ..., "l2": ...}`` (``attack_budgets``).
        cfg: the evaluation config (steps and seed).
        rows: the classes the evaluated detector reads (``EngineOptions.top_n``), which CSA's
            CSM must match; ``None`` = all.

    Returns:
        Kind -> ``AttackKind``.
    """
    seed = cfg.seed
    pgd_linf = {"eps": eps["linf"], "steps": cfg.pgd_steps, "seed": seed}
    # Both corrupted kinds draw the same corruptions (same seed): together one corrupted set,
    # split by whether the model still gets an image right.
    corruption = {"corruption": "random", "severity": CORRUPTION_SEVERITY, "seed": seed + 7}
    return {
        "noise": AttackKind("noise", {"eps": eps["linf"], "seed": seed}, keep="all"),
        "pgd_linf": AttackKind("pgd", pgd_linf),
        "pgd_linf_min": AttackKind("pgd", {**pgd_linf, "early_stop": True}),
        "pgd_l2": AttackKind(
            "pgd", {"eps": eps["l2"], "steps": cfg.pgd_steps, "norm": "l2", "seed": seed}
        ),
        "rotation": AttackKind("rotation", {"max_degrees": 45.0, "seed": seed}),
        "lbfgs": AttackKind("lbfgs", {"seed": seed}),
        **{
            f"tpgd_{loss}": AttackKind(
                "pgd", {**pgd_linf, "loss": loss, "target_mode": TargetMode.RANDOM}
            )
            for loss in ("ce", "mse")
        },
        "csa": AttackKind(
            "csa", {"eps": eps["linf"], "steps": cfg.csa_steps, "seed": seed, "top_n": rows}
        ),
        "ood_corrupted": AttackKind("corruption", corruption, keep="failures"),
        "corrupted_wrong": AttackKind("corruption", corruption, keep="successes"),
    }


def attack_budgets(dataset: str, cfg: EvalConfig) -> dict[str, float]:
    """The l_inf and l_2 budgets of an evaluation: the config's, else the data set's.

    Returns:
        ``{"linf": ..., "l2": ...}``: CIFAR-10 8/255 and 0.5 (the paper's), MNIST 0.3 and 3.0,
        Fashion-MNIST 0.1 and 1.0; an explicit ``eps_linf`` alone gives l_2 = 10 x it.
    """
    linf = cfg.eps_linf if cfg.eps_linf is not None else LINF_EPS.get(dataset, 0.1)
    l2 = L2_EPS.get(dataset, 10 * linf) if cfg.eps_linf is None else 10 * linf
    return {"linf": linf, "l2": cfg.eps_l2 if cfg.eps_l2 is not None else l2}


def make_untrusted(
    kind: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: dict[str, float],
    cfg: EvalConfig,
    dataset: str,
    data_dir: str | None,
    progress: bool = True,
    rows: int | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """The untrusted inputs of one kind, and how many were attempted and kept.

    Args:
        kind: one of ``ALL_KINDS``.
        model: the classifier.
        x, y: clean, correctly classified test inputs and their labels.
        eps: ``{"linf": ..., "l2": ...}``.
        cfg: the evaluation config.
        dataset: the model's data set (chooses the other data set for ``ood_dataset``).
        data_dir: data directory.
        progress: progress bars.
        rows: the classes the evaluated detector reads (``attack_kinds``).

    Returns:
        ``(inputs (M, C, H, W), {"n_attempted", "n_untrusted", "success_rate"})``.
    """
    by_attack = attack_kinds(eps, cfg, rows)
    if kind not in by_attack:
        out = _ood_inputs(kind, len(x), tuple(x.shape[1:]), cfg.seed, dataset, data_dir)
        return out, {"n_attempted": len(out), "n_untrusted": len(out), "success_rate": None}
    size = cfg.batch_size
    if kind in SLOW_KINDS:
        x, y, size = x[: cfg.n_slow], y[: cfg.n_slow], min(cfg.batch_size, 50)
    out, hits = by_attack[kind].run(model, x, y, size, f"attack {kind}", progress)
    info = {"n_attempted": len(x), "n_untrusted": len(out), "success_rate": hits / max(len(x), 1)}
    return out, info


def _ood_inputs(
    kind: str, n: int, shape: tuple[int, ...], seed: int, dataset: str, data_dir: str | None
) -> Tensor:
    """``n`` inputs of an out-of-distribution kind that no attack makes."""
    from models.data.ood import (
        SIDE_BY_SIDE,
        gaussian_noise,
        other_dataset,
        other_images,
        photo_crops,
        single_digits,
        uniform_noise,
    )

    if kind == "ood_mnist":
        if dataset in SIDE_BY_SIDE:  # two-digit MNIST: one digit, the other half blank
            return single_digits(n, shape, data_dir=data_dir, seed=seed)
        return other_dataset("mnist", n, shape, data_dir=data_dir, seed=seed)
    if kind == "ood_dataset":
        return other_images(dataset, n, shape, data_dir=data_dir, seed=seed)
    if kind == "ood_noise":
        half = n // 2
        return torch.cat(
            [uniform_noise(half, shape, seed=seed), gaussian_noise(n - half, shape, seed=seed + 1)]
        )
    if kind == "ood_photos":
        return photo_crops(n, shape, seed=seed)
    raise ValueError(f"{kind} is not a kind of the evaluation; choose from {', '.join(ALL_KINDS)}")


def _skipped(kind: str, dataset: str) -> bool:
    """Whether a model of ``dataset`` skips ``kind``: ``CIFAR_KINDS`` run on CIFAR-10 models, and
    on the data sets ``ALSO_RUN_ON`` names."""
    return kind in CIFAR_KINDS and dataset not in ("cifar10", *ALSO_RUN_ON.get(kind, ()))


def fit_baselines(model: nn.Module, x: Tensor, y: Tensor, cfg: EvalConfig) -> dict[str, Detector]:
    """Every baseline the model allows, fitted or tuned on clean training inputs.

    Args:
        model: the classifier.
        x, y: training inputs and labels (a seeded shuffle of ``cfg.n_baseline_fit`` is used).
        cfg: the evaluation config.

    Returns:
        Report row -> fitted detector.
    """
    # A seeded shuffle: some training files are stored class by class.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed))
    order = order[: cfg.n_baseline_fit]
    x_fit, y_fit = x[order], y[order]
    baselines: dict[str, Detector] = {
        "max softmax": MaxSoftmax(model).fit(),
        "ODIN": ODIN(model).fit(x_fit[:500]),
        "energy": EnergyScore(model).fit(),
    }
    if callable(getattr(model, "embed", None)):
        baselines["Mahalanobis"] = Mahalanobis(model).fit(x_fit, y_fit)
        baselines["k-NN"] = KNN(model).fit(x_fit)
    if has_penultimate(model):
        baselines["GradNorm"] = GradNorm(model).fit()
    return baselines


@dataclass
class _TrustScores:
    """What the served pipeline says about a set of inputs, as the evaluation reports it.

    Attributes:
        rows: outlier scores per report row: the trust score's fused statistic and each fitted
            view alone (an input no view could score gets ``UNDEFINED_SCORE``).
        flagged: the pipeline's flag of each input.
        example: the first inputs with their saliency maps, CSMs and trust, for the figures.
    """

    rows: dict[str, np.ndarray]
    flagged: np.ndarray
    example: dict[str, np.ndarray]


def _score_with_pipeline(
    pipeline: GGAPipeline, x: Tensor, cfg: EvalConfig, desc: str, progress: bool
) -> _TrustScores:
    """Score ``x`` through the served pipeline, batch by batch.

    ``GGAPipeline.scored`` gives the steps behind what the service returns: the fused statistic
    (the ranking the tables use), and the inputs from which every fitted view's raw score is
    read, fused or not.
    """
    scorer = pipeline.scorer
    assert scorer is not None  # evaluate_model builds the pipeline with the scorer
    names = tuple(scorer.views)
    parts: dict[str, list[np.ndarray]] = {}
    flagged, example = [], {}
    starts = range(0, len(x), cfg.batch_size)
    for i in tqdm(starts, desc=f"trust {desc}", unit="batch", disable=not progress, leave=False):
        scored = pipeline.scored(x[i : i + cfg.batch_size])
        out, inputs, result = scored.engine, scored.inputs, scored.result
        rows = {TRUST: result.score}
        rows.update({view_row(n): s for n, s in scorer.view_scores(inputs, names).items()})
        for name, s in rows.items():
            # An input no view could score is never trusted.
            parts.setdefault(name, []).append(np.where(np.isfinite(s), s, UNDEFINED_SCORE))
        flagged.append(result.flagged)
        if i == 0:
            example = _example(x, out, result.trust, cfg.examples)
    rows = {name: np.concatenate(p) for name, p in parts.items()}
    return _TrustScores(rows, np.concatenate(flagged) if flagged else np.empty(0, bool), example)


def _example(x: Tensor, out: EngineOutput, trust: np.ndarray, r: int) -> dict[str, np.ndarray]:
    """The first ``r`` inputs of a batch with what the figures show of them."""
    return {
        "images": x[:r].numpy(),
        "saliency": out.saliency[:r].detach().numpy(),
        "csm": out.csm[:r].detach().numpy(),
        "classes": out.classes[:r].numpy(),
        "predicted": out.predicted[:r].numpy(),
        "trust": trust[:r],
    }


def rank_detectors(tnr: dict[str, dict[str, float]]) -> dict[str, dict[str, int]]:
    """Per kind, each detector's rank by TNR@95TPR (1 = best; ties share the better rank)."""
    kinds = sorted({k for per_kind in tnr.values() for k in per_kind})
    ranks: dict[str, dict[str, int]] = {}
    for kind in kinds:
        values = {name: per_kind[kind] for name, per_kind in tnr.items() if kind in per_kind}
        for name, value in values.items():
            ranks.setdefault(name, {})[kind] = 1 + sum(v > value + 1e-12 for v in values.values())
    return ranks


def _metrics(
    scores: dict[str, dict[str, np.ndarray]],
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per detector: TNR@95TPR and AUROC per kind (TNR also for the pooled OOD kinds), and the
    pooled metrics over the table's kinds.

    Args:
        scores: detector -> kind -> outlier scores; every detector has ``"clean"``.

    Returns:
        ``(tnr, auroc, pooled)``.
    """
    tnr: dict[str, dict[str, float]] = {}
    aurocs: dict[str, dict[str, float]] = {}
    pooled: dict[str, dict[str, float]] = {}
    for name, per_kind in scores.items():
        clean = per_kind["clean"]
        tnr[name] = {k: tnr_at_tpr(clean, s) for k, s in per_kind.items() if k != "clean"}
        aurocs[name] = {k: auroc(clean, s) for k, s in per_kind.items() if k != "clean"}
        ood = [per_kind[k] for k in OOD_KINDS if k in per_kind]
        if ood:
            tnr[name]["ood"] = tnr_at_tpr(clean, np.concatenate(ood))
        metrics = OODMetrics().update(clean, np.zeros(len(clean)))
        table = [per_kind[k] for k in TABLE_KINDS if k in per_kind]
        if table:
            pooled_scores = np.concatenate(table)
            metrics.update(pooled_scores, -np.ones(len(pooled_scores)))
            pooled[name] = metrics.compute()
    return tnr, aurocs, pooled


def _positives(
    model: nn.Module, x: Tensor, y: Tensor, cfg: EvalConfig, model_name: str
) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``cfg.n`` clean inputs, their labels, and which the model classifies right."""
    x, y = x[: cfg.n], y[: cfg.n]
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    correct = pred == y
    logger.info(
        "%s: %d of %d clean %s inputs correct",
        model_name,
        int(correct.sum()),
        len(x),
        SPLITS[cfg.split],
    )
    return x, y, correct


def _untrusted_inputs(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: EvalConfig,
    dataset: str,
    data_dir: str | None,
    progress: bool,
    rows: int | None = None,
) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]]]:
    """Every kind of ``cfg.kinds`` the data set has, made from the positives ``x``, ``y``;
    ``rows``: the classes the detector reads (``attack_kinds``)."""
    eps = attack_budgets(dataset, cfg)
    inputs, info = {}, {}
    for kind in cfg.kinds:
        if _skipped(kind, dataset) or kind in PIPELINE_KINDS:
            continue
        inputs[kind], info[kind] = make_untrusted(
            kind, model, x, y, eps, cfg, dataset, data_dir, progress, rows
        )
        logger.info("%s: %s", kind, info[kind])
    return inputs, info


def _attack_the_trust_score(
    model: nn.Module,
    pipeline: GGAPipeline,
    x: Tensor,
    y: Tensor,
    dataset: str,
    cfg: EvalConfig,
    progress: bool,
) -> tuple[AdaptiveReport | None, dict[str, Tensor], dict[str, dict[str, Any]]]:
    """The adaptive attack on the trust score (``gga_lab.adaptive_trust``), when asked for.

    Args:
        model: the classifier.
        pipeline: the served pipeline, whose scorer the attack knows.
        x, y: the positives; the first ``cfg.n_slow`` are attacked.
        dataset: the model's data set (the l_inf budget, ``attack_budgets``).
        cfg: the evaluation config (``kinds``, ``adaptive_steps``, ``adaptive_lam``, seed).
        progress: progress bars.

    Returns:
        ``(report, {"adaptive_trust": misclassified outputs}, {"adaptive_trust": kind info})``,
        or ``(None, {}, {})`` when ``adaptive_trust`` is not in ``cfg.kinds``.
    """
    if "adaptive_trust" not in cfg.kinds:
        return None, {}, {}
    x, y = x[: cfg.n_slow], y[: cfg.n_slow]
    bar = partial(tqdm, desc="attack adaptive_trust", unit="batch", leave=False)
    run = attack_trust(
        model,
        pipeline,
        x,
        y,
        eps=attack_budgets(dataset, cfg)["linf"],
        steps=cfg.adaptive_steps,
        lam=cfg.adaptive_lam,
        seed=cfg.seed,
        batch_size=min(cfg.batch_size, 50),
        progress=partial(bar, disable=not progress),
    )
    wrong = torch.as_tensor(run.outcome.pred != y.cpu().numpy())
    info = {
        "n_attempted": len(x),
        "n_untrusted": int(wrong.sum()),
        "success_rate": run.report.adaptive_misclassified,
    }
    logger.info("adaptive_trust: %s", info)
    return run.report, {"adaptive_trust": run.x_adv[wrong]}, {"adaptive_trust": info}


def _false_alarm(
    pipeline: GGAPipeline, flagged_clean: np.ndarray, x_wrong: Tensor, cfg: EvalConfig
) -> dict[str, Any]:
    """The pipeline's flag rate on the positives (the calibration promises about alpha) and on
    the misclassified clean inputs ``x_wrong``."""
    flagged_wrong = None
    if len(x_wrong):
        flagged_wrong = _score_with_pipeline(pipeline, x_wrong, cfg, "misclassified", False).flagged
    return {
        "alpha": pipeline.alpha,
        "rate": float(np.mean(flagged_clean)),
        "n": len(flagged_clean),
        "flag_rate_misclassified": (
            float(np.mean(flagged_wrong)) if flagged_wrong is not None else None
        ),
        "n_misclassified": len(x_wrong),
    }


def evaluate_model(
    model: nn.Module,
    scorer: TrustScorer,
    *,
    model_name: str,
    dataset: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    cfg: EvalConfig,
    data_dir: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Run the protocol on one model.

    Args:
        model: the classifier (eval mode).
        scorer: its fitted trust scorer (``detector.json``), scored through the served pipeline.
        model_name: for the report.
        dataset: the model's data set name (eps and OOD pairing).
        train: clean training inputs and labels (baselines are fitted on these only).
        test: clean inputs and labels (the first ``cfg.n`` are used): the test set, or held-out
            training images (``cfg.split``); never images the baselines are fitted on.
        cfg: sizes, seeds, budgets.
        data_dir: data directory for the other data set.
        progress: progress bars.

    Returns:
        The ``EvalResult``.
    """
    start = time.perf_counter()
    x_test, y_test, correct = _positives(model, *test, cfg, model_name)
    baselines = fit_baselines(model, *train, cfg)
    rows = scorer.engine_options.get("top_n")  # CSA attacks the CSM the detector reads
    untrusted, kinds_info = _untrusted_inputs(
        model, x_test[correct], y_test[correct], cfg, dataset, data_dir, progress, rows
    )
    # Built after the attacks: the served pipeline runs numpy's BLAS on one thread from here on,
    # as the service does, while L-BFGS's optimiser above kept its usual threads.
    pipeline = GGAPipeline(model, scorer)
    adaptive, made, made_info = _attack_the_trust_score(
        model, pipeline, x_test[correct], y_test[correct], dataset, cfg, progress
    )
    untrusted, kinds_info = {**untrusted, **made}, {**kinds_info, **made_info}
    scores: dict[str, dict[str, np.ndarray]] = {}
    examples: dict[str, dict[str, np.ndarray]] = {}
    flagged_clean = np.empty(0, dtype=bool)
    for kind, x in {"clean": x_test[correct], **untrusted}.items():
        if len(x) == 0:
            continue
        trust = _score_with_pipeline(pipeline, x, cfg, kind, progress)
        examples[kind] = trust.example
        if kind == "clean":
            flagged_clean = trust.flagged
        for name, s in trust.rows.items():
            scores.setdefault(name, {})[kind] = s
        for name, det in baselines.items():
            scores.setdefault(name, {})[kind] = det(x)
    tnr, aurocs, pooled = _metrics(scores)
    return EvalResult(
        model=model_name,
        dataset=dataset,
        config=asdict(cfg),
        eps=attack_budgets(dataset, cfg),
        n_clean=len(x_test),
        clean_accuracy=float(correct.float().mean()),
        false_alarm=_false_alarm(pipeline, flagged_clean, x_test[~correct], cfg),
        kinds=kinds_info,
        tnr=tnr,
        auroc=aurocs,
        pooled=pooled,
        ranks=rank_detectors(tnr),
        detector=scorer.summary(),
        seconds=time.perf_counter() - start,
        adaptive_trust=adaptive,
        scores=scores,
        examples=examples,
    )


def roc_curves(result: EvalResult) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Pooled ROC curve (table kinds) per detector."""
    curves = {}
    for name, per_kind in result.scores.items():
        table = [per_kind[k] for k in TABLE_KINDS if k in per_kind]
        if name in result.pooled and table:
            fpr, tpr = roc_points(per_kind["clean"], np.concatenate(table))
            curves[name] = (fpr, tpr, result.pooled[name]["AUROC"])
    return curves
