"""Fitting a trust scorer for a model: features of the training split, fit, calibrate.

The training split is cut, with a seed, into two disjoint parts: up to ``n_cal`` inputs
calibrate, up to ``n_fit`` others fit the detector. Calibration draws from the images the model
was not trained on (its recipe's validation part and what its ``train_limit`` left out) when the
caller names them, as ``gga fit`` does for models trained by ``gga train``: on images it has
fitted, a model's gradients are more regular than on new ones, and a calibration on those would
flag new clean inputs more often than alpha. Only inputs the model classifies correctly are kept
in either part (GGA's detector models *trusted* behaviour). The test split is never touched, so
evaluation on it is honest.
"""

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from detectors.base import Detector, DetectorFitError
from detectors.calibration import DEFAULT_ALPHA, ConformalCalibrator, check_alpha
from detectors.engine import EngineOptions, GradientEngine
from detectors.features import FEATURE_NAMES
from detectors.loda import LODA
from detectors.logistic import LogisticDetector
from detectors.pipeline import engine_options_dict
from detectors.trust import TrustScorer

logger = logging.getLogger(__name__)

DETECTOR_CHOICES: tuple[str, ...] = ("loda", "logistic")
MIN_FIT_CORRECT = 50
# l_inf budgets of the paper (MNIST 0.3, CIFAR 8/255); Fashion-MNIST is ours: 0.1, the usual
# budget in the robustness literature for it, since 0.3 erases most garments' texture.
LINF_EPS: dict[str, float] = {"mnist": 0.3, "fashion-mnist": 0.1, "cifar10": 8 / 255}


@dataclass
class FitConfig:
    """How to fit one trust scorer.

    Attributes:
        detector: ``"loda"`` (unsupervised, the paper's) or ``"logistic"`` (clean vs FGSM/PGD).
        n_fit: training inputs drawn for fitting (before keeping the correct ones).
        n_cal: training inputs drawn for calibration, disjoint from the fit inputs.
        alpha: flag threshold on the trust score.
        seed: seeds the split, LODA's projections and the attacks.
        projections: LODA projections.
        bins: LODA bins; ``None`` = 100 for grey inputs, 500 for colour (the paper's choice).
        top_n: saliency for the N most probable classes only (``None`` = all classes).
        rescale_logits: the reference code's logit rescaling before the loss (see
            ``EngineOptions``); stored in ``detector.json`` and used wherever it is served.
        batch_size: inputs per engine call.
        n_adversarial: logistic only: fit inputs attacked (half FGSM, half PGD).
        strategy: the engine's backward strategy (speed only; ``"auto"`` measures them).
    """

    detector: str = "loda"
    n_fit: int = 10_000
    n_cal: int = 2_000
    alpha: float = DEFAULT_ALPHA
    seed: int = 0
    projections: int = 100
    bins: int | None = None
    top_n: int | None = None
    rescale_logits: bool = True
    batch_size: int = 128
    n_adversarial: int = 2_000
    strategy: str = "auto"

    def __post_init__(self) -> None:
        if self.detector not in DETECTOR_CHOICES:
            raise DetectorFitError(
                f"unknown detector {self.detector!r}; choose one of {', '.join(DETECTOR_CHOICES)}"
            )
        if self.n_fit < 1 or self.n_cal < 1:
            raise DetectorFitError(
                f"n_fit and n_cal must be positive, got {self.n_fit}, {self.n_cal}"
            )
        check_alpha(self.alpha)


def compute_features(
    engine: GradientEngine,
    x: Tensor,
    batch_size: int = 128,
    desc: str | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """GGA features and predictions of ``x``, batch by batch with a progress bar.

    Args:
        engine: the gradient engine.
        x: float pixels (N, C, H, W) in [0, 1].
        batch_size: inputs per engine call.
        desc: progress bar label.
        progress: show the bar (off in tests).

    Returns:
        Features (N, 10) float64 and predicted labels (N,) int64.
    """
    feats, preds = [], []
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        out = engine(x[i : i + batch_size])
        feats.append(out.features.detach().cpu().double().numpy())
        preds.append(out.predicted.detach().cpu().numpy())
    if not feats:
        return np.empty((0, len(FEATURE_NAMES))), np.empty(0, dtype=np.int64)
    return np.concatenate(feats), np.concatenate(preds).astype(np.int64)


def split_indices(
    n_total: int, n_fit: int, n_cal: int, seed: int, cal_pool: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Disjoint seeded (fit, calibration) index sets of the training split.

    Args:
        n_total: size of the training split.
        n_fit: most inputs to fit on.
        n_cal: most inputs to calibrate on.
        seed: seeds both draws.
        cal_pool: draw calibration inputs only from these indices (the images the model was
            not trained on); fitting draws from everything else. ``None``: both draw from the
            whole split, and when it is smaller than ``n_fit + n_cal`` calibration keeps up to
            half and fitting takes the rest.

    Raises:
        DetectorFitError: the split cannot hold both parts.
    """
    generator = torch.Generator().manual_seed(seed)
    if cal_pool is None:
        order = torch.randperm(n_total, generator=generator)
        n_cal = min(n_cal, n_total // 2)
        cal, fit = order[:n_cal], order[n_cal : n_cal + n_fit]
    else:
        cal_pool = torch.as_tensor(cal_pool, dtype=torch.long)
        if len(cal_pool) == 0:
            raise DetectorFitError("no held-out inputs to calibrate on")
        cal = cal_pool[torch.randperm(len(cal_pool), generator=generator)[:n_cal]]
        rest = torch.ones(n_total, dtype=torch.bool)
        rest[cal] = False
        others = torch.nonzero(rest).flatten()
        fit = others[torch.randperm(len(others), generator=generator)[:n_fit]]
    if len(fit) == 0:
        raise DetectorFitError(f"the training split has only {n_total} inputs")
    return fit, cal


def _correct_finite(feats: np.ndarray, pred: np.ndarray, y: np.ndarray, part: str) -> np.ndarray:
    finite = np.isfinite(feats).all(axis=1)
    if (~finite).any():
        logger.warning("%s: dropped %d inputs with non-finite features", part, int((~finite).sum()))
    return (pred == y) & finite


def _adversarial_features(
    model: nn.Module,
    engine: GradientEngine,
    x: Tensor,
    y: Tensor,
    eps: float,
    config: FitConfig,
    progress: bool,
) -> np.ndarray:
    """Features of successful FGSM (first half) and PGD (second half) attacks on ``x``."""
    from attacks.fgsm import FGSM
    from attacks.pgd import PGD

    half = len(x) // 2
    kept = []
    attacks = [
        (FGSM(model, eps=eps), slice(0, half)),
        (PGD(model, eps=eps, steps=20, seed=config.seed), slice(half, len(x))),
    ]
    for attack, part in attacks:
        xs, ys = x[part], y[part]
        for i in tqdm(
            range(0, len(xs), config.batch_size),
            desc=f"fit: {attack.name}",
            disable=not progress,
            leave=False,
        ):
            res = attack(xs[i : i + config.batch_size], ys[i : i + config.batch_size])
            if res.success.any():
                kept.append(res.x_adv[res.success])
    if not kept:
        raise DetectorFitError(
            "no FGSM/PGD attack on the fit inputs succeeded; use --detector loda"
        )
    feats, _ = compute_features(
        engine, torch.cat(kept), config.batch_size, "fit: adversarial", progress
    )
    return feats[np.isfinite(feats).all(axis=1)]


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
    """Fit and calibrate a trust scorer on a model's training split.

    Args:
        model: the classifier (eval mode), taking [0, 1] pixels.
        x: training inputs (N, C, H, W) in [0, 1].
        y: training labels (N,).
        model_name: recorded in the scorer (and in its error messages).
        weights_sha256: the model's weights hash, recorded so loading can refuse other weights.
        config: sizes, seeds and detector choice.
        dataset: data set name, recorded as provenance (and choosing the attack budget).
        held_out: indices of ``x`` the model was not trained on (``models.splits``);
            calibration draws only from them, so trust scores of new clean inputs flag at
            about alpha. ``None``: calibrate on any training inputs not fitted on, which flags
            more than alpha where the model has fitted its training data closely.
        progress: show progress bars.

    Returns:
        The fitted ``TrustScorer``; ``provenance`` holds sizes, accuracy and seeds.

    Raises:
        DetectorFitError: too few correctly classified inputs to fit or calibrate.
    """
    options = EngineOptions(
        top_n=config.top_n, rescale_logits=config.rescale_logits, strategy=config.strategy
    )
    engine = GradientEngine(model, options)
    fit_idx, cal_idx = split_indices(
        len(x), config.n_fit, config.n_cal, config.seed, cal_pool=held_out
    )
    y_np = y.cpu().numpy()

    f_fit, p_fit = compute_features(
        engine, x[fit_idx], config.batch_size, "fit: features", progress
    )
    ok_fit = _correct_finite(f_fit, p_fit, y_np[fit_idx.numpy()], "fit")
    if ok_fit.sum() < MIN_FIT_CORRECT:
        raise DetectorFitError(
            f"only {int(ok_fit.sum())} of {len(ok_fit)} fit inputs are classified correctly; "
            f"the detector needs at least {MIN_FIT_CORRECT}: raise --n-fit, or check the model's "
            "accuracy on its training data"
        )
    detector: Detector
    if config.detector == "loda":
        bins = config.bins or (100 if x.shape[1] == 1 else 500)
        detector = LODA(projections=config.projections, bins=bins, seed=config.seed)
        detector.fit_features(f_fit[ok_fit])
        params: dict[str, Any] = {"projections": config.projections, "bins": bins}
    else:
        eps = LINF_EPS.get(dataset, 0.1)
        good = fit_idx[torch.as_tensor(ok_fit)][: config.n_adversarial]
        f_adv = _adversarial_features(model, engine, x[good], y[good], eps, config, progress)
        z = np.r_[f_fit[ok_fit], f_adv]
        labels = np.r_[np.zeros(int(ok_fit.sum())), np.ones(len(f_adv))]
        detector = LogisticDetector().fit_features(z, labels)
        params = {"attack_eps_linf": eps, "n_adversarial": len(f_adv), "attacks": ["fgsm", "pgd"]}

    f_cal, p_cal = compute_features(
        engine, x[cal_idx], config.batch_size, "fit: calibration", progress
    )
    ok_cal = _correct_finite(f_cal, p_cal, y_np[cal_idx.numpy()], "calibration")
    calibrator = ConformalCalibrator(detector.predict_features(f_cal[ok_cal]))
    provenance = {
        "dataset": dataset,
        "split": "train",
        "seed": config.seed,
        "n_fit_drawn": len(fit_idx),
        "n_fit": int(ok_fit.sum()),
        "n_cal_drawn": len(cal_idx),
        "calibration_inputs": "held out from training" if held_out is not None else "training",
        "n_cal": int(ok_cal.sum()),
        "train_accuracy_fit_part": float(ok_fit.mean()),
        "config": asdict(config),
        **params,
    }
    logger.info(
        "fitted %s for %s on %d inputs, calibrated on %d",
        config.detector,
        model_name,
        provenance["n_fit"],
        provenance["n_cal"],
    )
    return TrustScorer(
        detector=detector,
        calibrator=calibrator,
        alpha=config.alpha,
        feature_names=FEATURE_NAMES,
        engine_options=engine_options_dict(options),
        model_name=model_name,
        weights_sha256=weights_sha256,
        provenance=provenance,
    )
