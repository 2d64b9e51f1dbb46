"""Choosing how to fuse the views, by measurement on held-out training images.

Each candidate *method* is a fusion rule (``detectors.fusion``) with a way of choosing its
views: all of them, or the subset that does best on the untrusted kinds it is shown. The
logistic fusion learns its weights. Methods that learn anything from untrusted inputs are
scored by **leave-one-kind-out**: for each kind of untrusted input (``gga_lab.untrusted``),
the method learns on the other kinds and is measured on the one it never saw, against clean
inputs it did not learn from. That is the question a user cares about: how well the trust score
catches a kind of input nobody prepared it for. A method's score is its mean measure over the
left-out kinds; the best method is then learnt again on every kind.

What "does best" means is the *criterion*. ``auroc`` (the default) ranks: how often an untrusted
input scores above a clean one, at every threshold. ``tnr`` measures where the service works:
the share of the left-out kind flagged at the trust score's alpha, the threshold set on the
clean inputs the method did not learn from. AUROC can reward a view that ranks a kind just past
the clean inputs' tail, which the flag then mostly misses (docs/results.md, CIFAR-10). ``worst``
measures as ``tnr`` but scores a method by its worst left-out kind rather than the mean: a method
that loses a whole family to win on the others scores low (issue 23). ``strength`` asks what
issue 23 asks of the fusion, to keep every view's strength: a method's measure on a left-out
kind is its share flagged minus that of the best single view on that kind, and its score is the
worst of these (ties broken by the mean). ``worst`` is ruled by a kind no view catches (small
noise on Fashion-MNIST: about 10% flagged whatever the fusion); ``strength`` is ruled by the
kind where the fusion loses most of what one of its own views would have caught.

Every candidate subset contains one of the GGA views (``gga-csm`` or ``gga-paper``) where the
model has them: the gradient geometry is part of every trust score this service gives.
"""

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.base import DetectorFitError
from detectors.fusion import FUSIONS, Fusion, surprise
from gga_lab.metrics import auroc, tnr_at_tpr

logger = logging.getLogger(__name__)

GGA_VIEWS: tuple[str, ...] = ("gga-csm", "gga-paper")
UNSUPERVISED_RULES: tuple[str, ...] = ("fisher", "cauchy", "tippett", "clean-knn", "guarded")
CRITERIA: dict[str, str] = {
    "auroc": "mean AUROC over untrusted kinds, each left out of what the method learnt",
    "tnr": "mean share flagged at alpha over untrusted kinds, each left out of what the method "
    "learnt",
    "worst": "smallest share flagged at alpha over untrusted kinds, each left out of what the "
    "method learnt (ties broken by the mean)",
    "strength": "smallest share flagged at alpha minus the best single view's, over untrusted "
    "kinds, each left out of what the method learnt (ties broken by the mean)",
}


@dataclass(frozen=True)
class Method:
    """A fusion rule and how its views are chosen (``"all"`` or ``"subset"``)."""

    rule: str
    views: str = "all"

    @property
    def name(self) -> str:
        return self.rule if self.views == "all" else f"{self.rule}-subset"


@dataclass
class FusionChoice:
    """The chosen fusion and what each candidate measured.

    Attributes:
        method: the chosen method's name.
        fusion: the fusion learnt on every kind, ready to use.
        scores: each method's mean left-out-kind measure (``criterion``).
        per_kind: each method's measure per left-out kind.
        criterion: a key of ``CRITERIA``.
    """

    method: str
    fusion: Fusion
    scores: dict[str, float] = field(default_factory=dict)
    per_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    criterion: str = "auroc"

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.method,
            "views": list(self.fusion.views),
            "criterion": CRITERIA[self.criterion],
            "criterion_name": self.criterion,
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "per_kind": {
                m: {k: round(v, 4) for k, v in kinds.items()} for m, kinds in self.per_kind.items()
            },
        }


def default_methods(supervised: bool = True) -> tuple[Method, ...]:
    """Every unsupervised rule over all views and over a chosen subset, and the logistic.

    ``clean-knn`` runs over all views only: it learns which views agree on clean inputs, which
    is what a subset would choose by hand, and a search over hundreds of subsets of its
    neighbour distances would cost minutes of the fit.
    """
    methods = [
        Method(r, v)
        for r in UNSUPERVISED_RULES
        for v in ("all", "subset")
        if not (r == "clean-knn" and v == "subset")
    ]
    if supervised:
        methods.append(Method("logistic", "all"))
    return tuple(methods)


def candidate_subsets(views: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``views`` (order kept) holding a GGA view, if any exists."""
    required = [v for v in views if v in GGA_VIEWS]
    subsets = []
    for r in range(1, len(views) + 1):
        for subset in itertools.combinations(views, r):
            if not required or any(v in GGA_VIEWS for v in subset):
                subsets.append(subset)
    return subsets


class _Data:
    """P-values of clean and untrusted inputs, as (N, V) matrices in ``views`` order."""

    def __init__(
        self,
        views: tuple[str, ...],
        clean: dict[str, np.ndarray],
        untrusted: dict[str, dict[str, np.ndarray]],
    ) -> None:
        self.views = views
        self.clean = np.stack([clean[v] for v in views], axis=1)
        self.untrusted = {
            k: np.stack([p[v] for v in views], axis=1)
            for k, p in untrusted.items()
            if len(p[views[0]])
        }

    def columns(self, subset: tuple[str, ...]) -> list[int]:
        return [self.views.index(v) for v in subset]


@dataclass(frozen=True)
class _Criterion:
    """One left-out kind's measure: ``auroc``, or the share flagged at ``alpha`` (``tnr``,
    ``worst``), less the best single view's share on that kind for ``strength``
    (``best_view``)."""

    name: str = "auroc"
    alpha: float = 0.05
    best_view: dict[str, float] = field(default_factory=dict)

    @property
    def flags(self) -> bool:
        return self.name in ("tnr", "worst", "strength")

    def __call__(self, trusted: np.ndarray, untrusted: np.ndarray, kind: str) -> float:
        if self.flags:  # the share flagged where 1 - alpha of clean pass
            share = tnr_at_tpr(trusted, untrusted, 1.0 - self.alpha)
            return share - self.best_view.get(kind, 0.0) if self.name == "strength" else share
        return auroc(trusted, untrusted)

    def aggregate(self, per_kind: list[float]) -> float:
        """A method's score from its per-kind measures: their mean, or (``worst``,
        ``strength``) their minimum plus a thousandth of the mean, which only breaks ties
        between equal worst kinds."""
        mean = float(np.mean(per_kind))
        if self.name in ("worst", "strength"):
            return float(np.min(per_kind)) + 1e-3 * mean
        return mean


def _best_views(data: "_Data", rows: np.ndarray, alpha: float) -> dict[str, float]:
    """Per kind, the largest share any single view flags at ``alpha`` against clean ``rows``."""
    clean = surprise(data.clean[rows])
    return {
        kind: max(
            tnr_at_tpr(clean[:, v], surprise(p[:, v]), 1.0 - alpha) for v in range(p.shape[1])
        )
        for kind, p in data.untrusted.items()
    }


def _learn(
    method: Method,
    data: _Data,
    clean: np.ndarray,
    kinds: list[str],
    subsets: list[tuple[str, ...]],
    criterion: _Criterion,
) -> Fusion:
    """The fusion ``method`` learns from clean rows ``clean`` and the untrusted ``kinds``."""
    if method.rule == "logistic":
        return _learn_logistic(data, clean, kinds)
    rule = FUSIONS[method.rule]
    if method.views == "all":
        return _fitted(rule(data.views), data, clean)
    # A rule that learns from clean inputs is measured on clean rows it did not learn from.
    fit_rows, measure_rows = (clean[::2], clean[1::2]) if rule.fits_clean else (clean, clean)
    best, best_score = None, -np.inf
    for subset in _allowed(rule, subsets, data.views):
        fusion = _fitted(rule(subset), data, fit_rows)
        cols = data.columns(subset)
        trusted = fusion.statistic(data.clean[measure_rows][:, cols])
        score = criterion.aggregate(
            [criterion(trusted, fusion.statistic(data.untrusted[k][:, cols]), k) for k in kinds]
        )
        if score > best_score:
            best, best_score = subset, score
    assert best is not None
    return _fitted(rule(best), data, clean)


def _allowed(
    rule: type[Fusion], subsets: list[tuple[str, ...]], views: tuple[str, ...]
) -> list[tuple[str, ...]]:
    """The subsets holding every view the rule requires (of those the model has)."""
    required = [v for v in rule.required if v in views]
    return [s for s in subsets if all(v in s for v in required)] or [views]


def _fitted(fusion: Fusion, data: _Data, clean: np.ndarray) -> Fusion:
    """``fusion``, fitted on the clean rows ``clean`` where it learns from clean inputs."""
    if fusion.fits_clean:
        fusion.fit(data.clean[clean][:, data.columns(fusion.views)])
    return fusion


def _learn_logistic(data: _Data, clean: np.ndarray, kinds: list[str]) -> Fusion:
    """The logistic fusion of every view, trained on clean rows ``clean`` against ``kinds``."""
    fusion = FUSIONS["logistic"](data.views)
    x = np.r_[data.clean[clean], *[data.untrusted[k] for k in kinds]]
    labels = np.r_[np.zeros(len(clean)), np.ones(sum(len(data.untrusted[k]) for k in kinds))]
    # Each kind weighs as much as any other, whatever its size.
    weights = np.r_[
        np.ones(len(clean)),
        *[np.full(len(data.untrusted[k]), 1.0 / len(data.untrusted[k])) for k in kinds],
    ]
    weights[len(clean) :] *= len(clean) / len(kinds)
    return fusion.fit(x, labels, sample_weight=weights)


def _statistic(
    fusion: Fusion, data: _Data, rows: np.ndarray | None, kind: str | None
) -> np.ndarray:
    cols = data.columns(fusion.views)
    matrix = data.clean[rows] if kind is None else data.untrusted[kind]
    return fusion.statistic(matrix[:, cols])


def _left_out_measure(
    method: Method,
    data: _Data,
    learn_rows: np.ndarray,
    measure_rows: np.ndarray,
    kinds: list[str],
    left_out: str,
    subsets: list[tuple[str, ...]],
    measure: _Criterion,
) -> float:
    """``method``'s measure on ``left_out``, having learnt from the other kinds."""
    others = [k for k in kinds if k != left_out]
    fusion = _learn(method, data, learn_rows, others, subsets, measure)
    trusted = _statistic(fusion, data, measure_rows, None)
    return measure(trusted, _statistic(fusion, data, None, left_out), left_out)


def choose_fusion(
    views: tuple[str, ...],
    clean: dict[str, np.ndarray],
    untrusted: dict[str, dict[str, np.ndarray]],
    *,
    methods: tuple[Method, ...] | None = None,
    seed: int = 0,
    criterion: str = "auroc",
    alpha: float = 0.05,
) -> FusionChoice:
    """Measure every method by leave-one-kind-out and learn the best on every kind.

    Args:
        views: the views available, in order.
        clean: each view's p-values (N,) of clean, correctly classified held-out inputs.
        untrusted: per kind, each view's p-values (M_k,) of the untrusted inputs.
        methods: candidates (default ``default_methods()``).
        seed: seeds the split of the clean inputs into a learning and a measuring half.
        criterion: what "best" means, a key of ``CRITERIA``.
        alpha: the flag threshold the ``tnr`` criterion measures at.

    Returns:
        The ``FusionChoice``.

    Raises:
        ValueError: fewer than two kinds with inputs, too few clean inputs, or an unknown
            criterion.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    data = _Data(tuple(views), clean, untrusted)
    kinds = sorted(data.untrusted)
    if len(kinds) < 2:
        raise ValueError(
            f"choosing a fusion needs untrusted inputs of two kinds at least, got {kinds}"
        )
    if len(data.clean) < 20:
        raise ValueError(f"choosing a fusion needs 20 clean inputs at least, got {len(data.clean)}")
    order = np.random.default_rng(seed).permutation(len(data.clean))
    learn_rows, measure_rows = np.sort(order[::2]), np.sort(order[1::2])
    best_view = _best_views(data, measure_rows, alpha) if criterion == "strength" else {}
    measure = _Criterion(criterion, alpha, best_view)
    subsets = candidate_subsets(data.views)
    methods = methods or default_methods()
    scores, per_kind = {}, {}
    for method in methods:
        try:
            per_kind[method.name] = {
                left_out: _left_out_measure(
                    method, data, learn_rows, measure_rows, kinds, left_out, subsets, measure
                )
                for left_out in kinds
            }
        except DetectorFitError as err:  # e.g. a rule fitted on clean rows, with too few
            logger.info("fusion %s is no candidate here: %s", method.name, err)
            continue
        scores[method.name] = measure.aggregate(list(per_kind[method.name].values()))
    best = max((m for m in methods if m.name in scores), key=lambda m: scores[m.name])
    fusion = _learn(best, data, np.arange(len(data.clean)), kinds, subsets, measure)
    return FusionChoice(best.name, fusion, scores, per_kind, criterion)
