"""Fitting a model's multi-view trust scorer on its training split (``gga fit``).

The training images are cut, with a seed, into four disjoint parts:

- **fit**: the views are fitted on its clean, correctly classified images;
- **view calibration**: each view's conformal p-values are computed against these;
- **tune**: clean images here, and the untrusted inputs made from them (``gga_lab.untrusted``:
  FGSM, PGD, noise, corruptions, ...), choose the rescaling, the fusion and its views, and train
  a supervised fusion (``gga_lab.selection``);
- **calibration**: the fused score's final conformal p-value (the trust score) is computed
  against these, which neither the views nor the fusion saw.

Calibration always draws from the images the model was not trained on (its recipe's validation
part and what its ``train_limit`` left out) when the caller names them, as ``gga fit`` does for
models trained by ``gga train``: on images it has fitted, a model's gradients and features are
more regular than on new ones, and a calibration on those would flag new clean inputs more often
than alpha. View calibration and tuning draw from the rest of those held-out images when there
are enough, else from training images the views are not fitted on. The test split is never
read, so evaluation on it is honest; ``detector.json`` records every part's size, source and a
hash of its indices, and every choice with what it measured.
"""

import dataclasses
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detectors.base import DetectorFitError
from detectors.calibration import (
    DEFAULT_ALPHA,
    MIN_CALIBRATION,
    TAILS,
    ConformalCalibrator,
    check_alpha,
)
from detectors.engine import EngineOptions, GradientEngine
from detectors.fusion import FUSIONS
from detectors.pipeline import engine_options_dict
from detectors.row_cost import RowChoice, choose_rows
from detectors.trust import TrustScorer
from detectors.views import VIEWS, View, ViewInputs, ViewUnavailableError, available_views
from detectors.views.gga import GGAPaperView
from detectors.views.penultimate import KNNView
from gga_lab.collect import collect_view_inputs
from gga_lab.selection import CRITERIA, FusionChoice, Method, choose_fusion, default_methods
from gga_lab.top_n import TopNChoice, choose_top_n
from gga_lab.untrusted import TRAINING_KINDS, make_training_untrusted
from models.blocks import has_blocks
from models.penultimate import has_penultimate

logger = logging.getLogger(__name__)

MIN_FIT_CORRECT = 50
RESCALE_CHOICES: tuple[str, ...] = ("auto", "on", "off")
# l_inf budgets of the paper (MNIST 0.3, CIFAR 8/255); Fashion-MNIST is ours: 0.1, the usual
# budget in the robustness literature for it, since 0.3 erases most garments' texture.
# Two-digit MNIST is made of MNIST digits: MNIST's budget.
LINF_EPS: dict[str, float] = {
    "mnist": 0.3,
    "two-digit-mnist": 0.3,
    "fashion-mnist": 0.1,
    "cifar10": 8 / 255,
}
HELD_OUT = "held out from training"
TRAINING = "training"


@dataclass
class FitConfig:
    """How to fit one trust scorer.

    Attributes:
        views: the views to fuse; ``None`` lets the fit choose among every view the model can
            serve (``detectors.views.available_views``).
        fusion: a rule in ``detectors.fusion.FUSIONS``; ``None`` chooses the rule and its views
            by measurement (``gga_lab.selection``).
        rescale: the reference code's logit rescaling before the GGA loss: ``"auto"`` chooses
            by measurement on the tune part, ``"on"``/``"off"`` force it.
        criterion: what the choices of fusion and rescaling maximise
            (``gga_lab.selection.CRITERIA``): ``"auroc"`` or ``"tnr"`` (share flagged at
            alpha).
        view_tail: each view's p-value beyond its calibration maximum
            (``detectors.calibration``): ``"none"`` floors it at ``1/(n+1)``, ``"exponential"``
            extrapolates (measured in docs/detectors.md: it barely moves the chosen fusions).
        n_fit: most training images drawn to fit the views.
        n_view_cal: most images drawn for the views' own calibration.
        n_tune: most images drawn to choose and train the fusion (untrusted inputs are made
            from them).
        n_cal: most images drawn for the final calibration.
        alpha: flag threshold on the trust score.
        seed: seeds the split, the views and the untrusted inputs.
        projections: LODA projections of the ``gga-paper`` view.
        bins: its LODA bins; ``None`` = 100 for grey inputs, 500 for colour (the paper's).
        knn_k: the ``knn`` view's k.
        top_n: the classes read per input: ``"auto"`` (measured: the most the engine affords
            on this machine, ``detectors.row_cost``, then the fewest under that which detect
            as well, ``gga_lab.top_n``), ``None`` for all, or a number of the most probable.
        saliency_layer: where GGA's gradients are taken: ``"auto"`` (the input, or the block
            ``detectors.row_cost`` moves to where the input cannot afford 10 classes), ``None``
            (the input) or a block's index (``detectors.block_cut``; the backward stops there).
            At a block the channel max is off (it would make every map +1); measured in
            docs/performance.md.
        untrusted_kinds: kinds made from tune images (``gga_lab.untrusted``).
        pgd_steps: iterations of the PGD kinds made for tuning.
        batch_size: inputs per engine call.
        strategy: the engine's backward strategy (speed only; ``"auto"`` measures them).
    """

    views: tuple[str, ...] | None = None
    fusion: str | None = None
    rescale: str = "auto"
    criterion: str = "strength"
    view_tail: str = "none"
    n_fit: int = 10_000
    n_view_cal: int = 1_000
    n_tune: int = 1_000
    n_cal: int = 2_000
    alpha: float = DEFAULT_ALPHA
    seed: int = 0
    projections: int = 100
    bins: int | None = None
    knn_k: int = 10
    top_n: int | str | None = "auto"
    saliency_layer: int | str | None = "auto"
    untrusted_kinds: tuple[str, ...] = TRAINING_KINDS
    pgd_steps: int = 40
    batch_size: int = 128
    strategy: str = "auto"

    def __post_init__(self) -> None:
        if self.views is not None:
            unknown = sorted(set(self.views) - set(VIEWS))
            if unknown or not self.views:
                raise DetectorFitError(
                    f"unknown views {unknown or '(none given)'}; choose from {', '.join(VIEWS)}"
                )
            self.views = tuple(v for v in VIEWS if v in self.views)
        if self.fusion is not None and self.fusion not in FUSIONS:
            raise DetectorFitError(
                f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}"
            )
        if self.view_tail not in TAILS:
            raise DetectorFitError(
                f"view_tail must be one of {', '.join(TAILS)}, got {self.view_tail!r}"
            )
        if self.criterion not in CRITERIA:
            raise DetectorFitError(
                f"criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}"
            )
        if self.rescale not in RESCALE_CHOICES:
            raise DetectorFitError(
                f"rescale must be one of {', '.join(RESCALE_CHOICES)}, got {self.rescale!r}"
            )
        sizes = (self.n_fit, self.n_view_cal, self.n_tune, self.n_cal)
        if min(sizes) < 1:
            raise DetectorFitError(f"n_fit, n_view_cal, n_tune and n_cal must be positive: {sizes}")
        check_alpha(self.alpha)
        unknown = sorted(set(self.untrusted_kinds) - set(TRAINING_KINDS))
        if unknown or not self.untrusted_kinds:
            raise DetectorFitError(
                f"unknown untrusted kinds {unknown or '(none given)'}; choose from "
                f"{', '.join(TRAINING_KINDS)}"
            )


@dataclass
class FitSplits:
    """Disjoint index sets of the training split, and where each was drawn from."""

    fit: Tensor
    view_cal: Tensor
    tune: Tensor
    cal: Tensor
    sources: dict[str, str] = field(default_factory=dict)

    def parts(self) -> dict[str, Tensor]:
        return {"fit": self.fit, "view_cal": self.view_cal, "tune": self.tune, "cal": self.cal}


def indices_digest(indices: Tensor) -> str:
    """sha256 of the sorted indices, so a detector.json says exactly which images it used."""
    values = np.sort(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(values.astype("<i8").tobytes()).hexdigest()


def fit_splits(
    n_total: int, held_out: Tensor | None, config: FitConfig, seed: int | None = None
) -> FitSplits:
    """The four disjoint parts of a training split of ``n_total`` images (module docstring).

    Args:
        n_total: size of the training split.
        held_out: indices of the images the model was not trained on; ``None`` when unknown
            (then every part draws from all images).
        config: the part sizes.
        seed: seeds the draws (default ``config.seed``).

    Returns:
        The ``FitSplits``.

    Raises:
        DetectorFitError: the split cannot hold all four parts.
    """
    generator = torch.Generator().manual_seed(config.seed if seed is None else seed)
    everything = torch.arange(n_total)
    if held_out is None:
        pool = everything[torch.randperm(n_total, generator=generator)]
        trained = pool
        held = pool[:0]
    else:
        held_out = torch.as_tensor(held_out, dtype=torch.long)
        if len(held_out) == 0:
            raise DetectorFitError("no held-out images to calibrate on")
        held = held_out[torch.randperm(len(held_out), generator=generator)]
        rest = torch.ones(n_total, dtype=torch.bool)
        rest[held] = False
        trained = everything[rest]
        trained = trained[torch.randperm(len(trained), generator=generator)]
    sources = {}
    if len(held):
        cal, spare = held[: config.n_cal], held[config.n_cal :]
        sources["cal"] = HELD_OUT
    else:
        # Nothing known to be held out: calibration takes its share of all images first.
        share = min(config.n_cal, n_total // 4)
        cal, trained, spare = trained[:share], trained[share:], held
        sources["cal"] = TRAINING
    if len(spare) >= config.n_view_cal + config.n_tune:
        view_cal = spare[: config.n_view_cal]
        tune = spare[config.n_view_cal : config.n_view_cal + config.n_tune]
        sources["view_cal"] = sources["tune"] = HELD_OUT
    else:
        # Too few held-out images left: the views are calibrated and the fusion chosen on
        # training images the views are not fitted on; only the final calibration must
        # resemble new inputs for the false-alarm promise to hold.
        share = min(config.n_view_cal + config.n_tune, len(trained) // 2)
        n_view_cal = round(share * config.n_view_cal / (config.n_view_cal + config.n_tune))
        view_cal, tune = trained[:n_view_cal], trained[n_view_cal:share]
        trained = trained[share:]
        sources["view_cal"] = sources["tune"] = TRAINING
    fit = trained[: config.n_fit]
    sources["fit"] = TRAINING if held_out is not None else "training (nothing known held out)"
    if min(len(fit), len(view_cal), len(tune), len(cal)) == 0:
        raise DetectorFitError(
            f"the training split ({n_total} images) cannot hold the fit, view calibration, tune "
            "and calibration parts; use more images"
        )
    return FitSplits(fit=fit, view_cal=view_cal, tune=tune, cal=cal, sources=sources)


def part_accuracies(
    model: nn.Module, x: Tensor, y: Tensor, config: FitConfig, held_out: Tensor | None = None
) -> dict[str, float]:
    """The model's accuracy on all of ``x`` and on each part ``fit_splits`` will draw.

    Args:
        model: the classifier (eval mode).
        x: inputs (N, C, H, W) in [0, 1].
        y: labels (N,).
        config: the fit's sizes and seed (the same parts as ``fit_trust_scorer`` draws).
        held_out: as for ``fit_trust_scorer``.

    Returns:
        ``{"all": ..., "fit": ..., "view_cal": ..., "tune": ..., "cal": ...}``, fractions.
    """
    with torch.no_grad():
        predicted = torch.cat(
            [
                model(x[i : i + config.batch_size]).argmax(1)
                for i in range(0, len(x), config.batch_size)
            ]
        )
    correct = (predicted == y).float()
    parts = fit_splits(len(x), held_out, config).parts()
    return {
        "all": round(float(correct.mean()), 4),
        **{part: round(float(correct[idx].mean()), 4) for part, idx in parts.items()},
    }


def _make_view(name: str, config: FitConfig, channels: int) -> View:
    if name == GGAPaperView.name:
        bins = config.bins or (100 if channels == 1 else 500)
        return GGAPaperView(projections=config.projections, bins=bins, seed=config.seed)
    if name == KNNView.name:
        return KNNView(k=config.knn_k, seed=config.seed)
    return VIEWS[name]()


def _correct(inputs: ViewInputs, y: Tensor, part: str) -> ViewInputs:
    """The correctly classified rows with finite GGA inputs (those the views model)."""
    finite = np.isfinite(inputs.gga).all(axis=1) & np.isfinite(inputs.csm).all(axis=(1, 2))
    if (~finite).any():
        logger.warning("%s: dropped %d inputs with non-finite CSMs", part, int((~finite).sum()))
    return inputs.take((inputs.predicted == y.cpu().numpy()) & finite)


@dataclass
class _Candidate:
    """Everything fitted for one rescaling option."""

    rescale: bool
    views: dict[str, View]
    view_calibrators: dict[str, ConformalCalibrator]
    choice: FusionChoice
    engine: GradientEngine
    counts: dict[str, int]
    top_n: TopNChoice | None = None


def _fit_candidate(
    model: nn.Module,
    rescale: bool,
    view_names: tuple[str, ...],
    data: dict[str, tuple[Tensor, Tensor]],
    untrusted: dict[str, Tensor],
    config: FitConfig,
    rows: RowChoice,
    progress: bool,
) -> _Candidate:
    options = EngineOptions(
        top_n=rows.top_n,
        rescale_logits=rescale,
        saliency_layer=rows.saliency_layer,
        channel_max=rows.saliency_layer is None,
        strategy=config.strategy,
        # One forward per squeezer: only for a detector that fits the view reading them.
        squeeze=any(VIEWS[name].needs_squeezed for name in view_names),
        blocks=any(VIEWS[name].needs_blocks for name in view_names),
    )
    engine = GradientEngine(model, options)
    tag = "rescaled" if rescale else "not rescaled"

    def collect(x: Tensor, what: str) -> ViewInputs:
        return collect_view_inputs(engine, x, config.batch_size, f"fit ({tag}): {what}", progress)

    fit = _correct(collect(data["fit"][0], "fit"), data["fit"][1], "fit")
    if len(fit) < MIN_FIT_CORRECT:
        raise DetectorFitError(
            f"only {len(fit)} fit inputs are classified correctly; the views need at least "
            f"{MIN_FIT_CORRECT}: raise --n-fit, or check the model's accuracy on its training data"
        )
    view_cal = _correct(
        collect(data["view_cal"][0], "view calibration"), data["view_cal"][1], "view calibration"
    )
    tune = _correct(collect(data["tune"][0], "tune"), data["tune"][1], "tune")
    for part, inputs in (("view calibration", view_cal), ("tune", tune)):
        if len(inputs) < MIN_CALIBRATION:
            raise DetectorFitError(
                f"only {len(inputs)} {part} inputs are classified correctly; at least "
                f"{MIN_CALIBRATION} are needed: raise --n-view-cal / --n-tune"
            )
    untrusted_inputs = {k: collect(x, k) for k, x in untrusted.items() if len(x)}
    top_n = None
    if config.top_n == "auto" and rows.top_n is not None:
        # Computed once at the affordable ceiling; fewer rows are its leading blocks.
        top_n = choose_top_n(rows.top_n, fit, tune, untrusted_inputs, seed=config.seed)
        if top_n.top_n < rows.top_n:
            fit, view_cal, tune = (p.leading_rows(top_n.top_n) for p in (fit, view_cal, tune))
            untrusted_inputs = {k: v.leading_rows(top_n.top_n) for k, v in untrusted_inputs.items()}
            engine = GradientEngine(model, dataclasses.replace(options, top_n=top_n.top_n))
    channels = int(data["fit"][0].shape[1])
    views = {n: _make_view(n, config, channels).fit_features(fit) for n in view_names}
    calibrators = {
        n: ConformalCalibrator(v.predict_features(view_cal), tail=config.view_tail)
        for n, v in views.items()
    }

    def p_values(inputs: ViewInputs) -> dict[str, np.ndarray]:
        return {n: calibrators[n].trust(v.predict_features(inputs)) for n, v in views.items()}

    untrusted_p = {k: p_values(inputs) for k, inputs in untrusted_inputs.items()}
    methods = default_methods() if config.fusion is None else (Method(config.fusion, "all"),)
    choice = choose_fusion(
        view_names,
        p_values(tune),
        untrusted_p,
        methods=methods,
        seed=config.seed,
        criterion=config.criterion,
        alpha=config.alpha,
    )
    logger.info(
        "fit (%s): fusion %s over %s, left-out-kind %s %.4f",
        tag,
        choice.method,
        ",".join(choice.fusion.views),
        config.criterion,
        choice.scores[choice.method],
    )
    counts = {"fit": len(fit), "view_cal": len(view_cal), "tune": len(tune)}
    return _Candidate(rescale, views, calibrators, choice, engine, counts, top_n)


def fit_trust_scorer(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    model_name: str,
    weights_sha256: str,
    config: FitConfig,
    dataset: str = "unknown",
    held_out: Tensor | None = None,
    progress: bool = True,
) -> TrustScorer:
    """Fit the views, choose and fit their fusion, and calibrate the trust score.

    Args:
        model: the classifier (eval mode), taking [0, 1] pixels.
        x: training inputs (N, C, H, W) in [0, 1].
        y: training labels (N,).
        model_name: recorded in the scorer (and in its error messages).
        weights_sha256: the model's weights hash, recorded so loading can refuse other weights.
        config: sizes, seeds and choices.
        dataset: data set name, recorded as provenance (and choosing the attack budget).
        held_out: indices of ``x`` the model was not trained on (``gga_training.splits``); ``None``
            when unknown (a model trained elsewhere): then calibration draws from all images and
            may flag new clean inputs more often than alpha.
        progress: show progress bars.

    Returns:
        The fitted ``TrustScorer``; ``provenance`` holds sizes, sources, seeds and choices.

    Raises:
        DetectorFitError: too few usable inputs, a view the model cannot serve, or no untrusted
            input to choose a fusion with.
    """
    start = time.perf_counter()
    model = model.eval()
    view_names = _view_names(model, model_name, config, tuple(x.shape[1:]))
    splits = fit_splits(len(x), held_out, config)
    data = {part: (x[idx], y[idx]) for part, idx in splits.parts().items()}
    eps = LINF_EPS.get(dataset, 0.1)
    untrusted = _tune_untrusted(model, *data["tune"], eps, config, progress)
    rows = _rows_read(model, x, config)
    options = {"auto": (True, False), "on": (True,), "off": (False,)}[config.rescale]
    candidates = [
        _fit_candidate(model, rescale, view_names, data, untrusted, config, rows, progress)
        for rescale in options
    ]
    best = max(candidates, key=lambda c: c.choice.scores[c.choice.method])
    cal_inputs = _calibration_inputs(best.engine, *data["cal"], config, progress)
    provenance = _provenance(
        dataset=dataset,
        config=config,
        splits=splits,
        counts={**best.counts, "cal": len(cal_inputs)},
        eps=eps,
        untrusted=untrusted,
        candidates=candidates,
        best=best,
        view_names=view_names,
        rows=rows,
        seconds=time.perf_counter() - start,
    )
    scorer = TrustScorer.calibrated(
        cal_inputs,
        views=best.views,
        view_calibrators=best.view_calibrators,
        fusion=best.choice.fusion,
        alpha=config.alpha,
        engine_options=engine_options_dict(best.engine.options),
        model_name=model_name,
        weights_sha256=weights_sha256,
        provenance=provenance,
    )
    logger.info(
        "fitted %s: views %s, fusion %s, rescaled %s; calibrated on %d inputs (%s)",
        model_name,
        ",".join(best.choice.fusion.views),
        best.choice.method,
        best.rescale,
        len(cal_inputs),
        splits.sources["cal"],
    )
    return scorer


def _view_names(
    model: nn.Module, model_name: str, config: FitConfig, input_shape: tuple[int, ...]
) -> tuple[str, ...]:
    """The views to fit: ``config.views``, else every default view the model can serve.

    Raises:
        ViewUnavailableError: ``config.views`` names a view the model cannot serve.
    """
    penultimate, blocks = has_penultimate(model), has_blocks(model, input_shape)
    lacking = [
        what
        for what, has in (
            ("penultimate features (embed(x), a linear head: models/penultimate.py)", penultimate),
            ("blocks (4-D layer outputs, models/blocks.py)", blocks),
        )
        if not has
    ]
    served = available_views(penultimate, has_blocks=blocks)
    if config.views is None:
        if lacking:
            logger.warning(
                "%s has no %s: fitting without the views that need them (%s)",
                model_name,
                " and no ".join(lacking),
                ", ".join(v for v in VIEWS if v not in served),
            )
        return served
    missing = [v for v in config.views if v not in served]
    if missing:
        raise ViewUnavailableError(
            f"views {missing} need what {model_name} does not have: {'; '.join(lacking)}. This "
            f"model can serve {', '.join(served)}: run `gga fit {model_name} --views "
            f"{','.join(served)}`"
        )
    return config.views


def _rows_read(model: nn.Module, x: Tensor, config: FitConfig) -> RowChoice:
    """The classes the engine reads: ``config.top_n``, or the most it affords here (measured).

    Raises:
        RowChoiceError: a ``top_n`` above the model's number of classes.
    """
    with torch.no_grad():
        num_classes = int(model(x[:1]).shape[1])
    requested = "all" if config.top_n is None else config.top_n
    # Timed as it will run: gradients at a block cost less per class than at the input.
    choice = choose_rows(
        requested,
        model,
        tuple(x.shape[1:]),
        num_classes,
        saliency_layer=config.saliency_layer,
        log=logger.info,
    )
    logger.info("fit: classes read per input: %s", choice.reason)
    return choice


def _tune_untrusted(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, config: FitConfig, progress: bool
) -> dict[str, Tensor]:
    """The untrusted inputs, made once from the correctly classified tune images ``x``."""
    with torch.no_grad():
        predicted = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    ok = predicted == y
    return make_training_untrusted(
        model,
        x[ok],
        y[ok],
        eps=eps,
        seed=config.seed,
        kinds=config.untrusted_kinds,
        pgd_steps=config.pgd_steps,
        batch_size=config.batch_size,
        progress=progress,
    )


def _calibration_inputs(
    engine: GradientEngine, x: Tensor, y: Tensor, config: FitConfig, progress: bool
) -> ViewInputs:
    """The calibration part's correctly classified inputs, through the chosen engine.

    Raises:
        DetectorFitError: fewer than ``MIN_CALIBRATION`` of them.
    """
    inputs = collect_view_inputs(engine, x, config.batch_size, "fit: calibration", progress)
    inputs = _correct(inputs, y, "calibration")
    if len(inputs) < MIN_CALIBRATION:
        raise DetectorFitError(
            f"only {len(inputs)} calibration inputs are classified correctly; at least "
            f"{MIN_CALIBRATION} are needed: raise --n-cal"
        )
    return inputs


def _provenance(
    *,
    dataset: str,
    config: FitConfig,
    splits: FitSplits,
    counts: dict[str, int],
    eps: float,
    untrusted: dict[str, Tensor],
    candidates: list[_Candidate],
    best: _Candidate,
    view_names: tuple[str, ...],
    rows: RowChoice,
    seconds: float,
) -> dict[str, Any]:
    """What a fit drew, made, measured and chose: the scorer's JSON ``provenance``."""
    measured = {str(c.rescale): round(c.choice.scores[c.choice.method], 4) for c in candidates}
    return {
        "dataset": dataset,
        "split": "train",
        "seed": config.seed,
        "calibration_inputs": splits.sources["cal"],
        "parts": {
            part: {
                "drawn": len(idx),
                "correct": counts[part],
                "source": splits.sources[part],
                "indices_sha256": indices_digest(idx),
            }
            for part, idx in splits.parts().items()
        },
        "n_fit": counts["fit"],
        "n_cal": counts["cal"],
        "untrusted": {
            "made_from": "tune",
            "eps_linf": eps,
            "pgd_steps": config.pgd_steps,
            "kinds": {k: len(v) for k, v in untrusted.items()},
        },
        "choices": {
            "rescale_logits": {
                "chosen": best.rescale,
                "given" if config.rescale != "auto" else "measured": measured,
            },
            "fusion": best.choice.to_dict(),
            "views_offered": list(view_names),
            "classes_read": {
                "affordable": rows.to_dict(),
                "by_detection": best.top_n.to_dict() if best.top_n is not None else None,
            },
        },
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "seconds": round(seconds, 1),
    }
