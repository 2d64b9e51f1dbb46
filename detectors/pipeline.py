"""The one call the service makes: gradient engine + trust scorer, numpy out.

``load_pipeline(model_dir, model, weights_sha256)`` reads the model's ``detector.json`` (refusing
one fitted for other weights, or one whose views the model cannot serve), builds the gradient
engine with the options the detector was fitted with, and returns a ``GGAPipeline`` whose
``__call__`` turns a batch of [0, 1] pixels into probabilities, labels, trust scores, flags, each
view's p-value, features and CSMs: one forward and one all-class backward, then arithmetic.
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from detectors.collect import view_inputs
from detectors.engine import EngineOptions, EngineOutput, GradientEngine
from detectors.persistence import DetectorFileError, DetectorNotFoundError
from detectors.trust import TrustResult, TrustScorer
from detectors.views.base import ViewInputs
from models.card import ModelCard
from models.penultimate import has_penultimate

# Options that change the features (and so must match the fit); others, like the backward
# strategy, only change speed and are chosen on the serving machine.
FEATURE_OPTIONS: tuple[str, ...] = (
    "rescale_logits",
    "sign",
    "channel_max",
    "top_n",
    "squeeze",
    "blocks",
    "saliency_layer",
)


_blas_limited = False


def limit_blas_threads() -> None:
    """Run numpy's BLAS on one thread in this process, once.

    The views' products are small (a batch of features against a 256-wide whitening, a k-NN
    bank) and torch already keeps the cores busy with the engine. With OpenBLAS's default of one
    thread per core, its threads spun against torch's on a busy two-core machine and made a
    32 x 500 by 500 x 256 product 30 times slower (32 ms instead of 1 ms): the mahalanobis view
    alone cost half an engine call.
    """
    global _blas_limited
    if not _blas_limited:
        threadpool_limits(limits=1, user_api="blas")
        _blas_limited = True


def engine_options_dict(options: EngineOptions) -> dict[str, Any]:
    """The feature-relevant fields of ``options``, as stored in ``detector.json``."""
    values = dataclasses.asdict(options)
    return {k: values[k] for k in FEATURE_OPTIONS}


@dataclass
class PipelineOutput:
    """Everything the service needs about a batch of B inputs, as numpy arrays.

    Attributes:
        probabilities: (B, C) float32 softmax probabilities.
        labels: (B,) int64 predicted classes.
        trust: (B,) float64 trust scores in (0, 1] (conformal p-values); NaN without a scorer.
        flagged: (B,) bool, trust below the scorer's alpha (never, without a scorer).
        features: (B, 10) float32 GGA features, ``FEATURE_NAMES`` order.
        csm: (B, K, K) float32 cosine similarity matrices (K = C, or top-N).
        classes: (B, K) int64 the class of each CSM row.
        saliency: (B, K, D) float32 saliency maps when asked for, else ``None``.
        engine_seconds: wall time of the gradient engine for the batch.
        views: each view's own p-value (B,) float64, by view name (which view raised a flag).
        score: (B,) float64 fused outlier statistic before the final calibration; NaN without
            a scorer (the store keeps it for recalibration from traffic).
        view_scores: each fused view's raw outlier score (B,) float64, by view name.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    trust: np.ndarray
    flagged: np.ndarray
    features: np.ndarray
    csm: np.ndarray
    classes: np.ndarray
    saliency: np.ndarray | None
    engine_seconds: float
    views: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    score: np.ndarray | None = None
    view_scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, start: int, stop: int) -> "PipelineOutput":
        """Inputs ``start:stop`` of the batch, as views of its arrays (nothing is copied).

        ``engine_seconds`` stays the whole batch's: the engine timed the batch, not its rows.
        """
        cut = slice(start, stop)
        return dataclasses.replace(
            self,
            probabilities=self.probabilities[cut],
            labels=self.labels[cut],
            trust=self.trust[cut],
            flagged=self.flagged[cut],
            features=self.features[cut],
            csm=self.csm[cut],
            classes=self.classes[cut],
            saliency=None if self.saliency is None else self.saliency[cut],
            views={name: p[cut] for name, p in self.views.items()},
            score=None if self.score is None else self.score[cut],
            view_scores={name: s[cut] for name, s in self.view_scores.items()},
        )

    @classmethod
    def concat(cls, parts: "list[PipelineOutput]") -> "PipelineOutput":
        """One output from the outputs of consecutive chunks of a batch (engine times added)."""
        first = parts[0]

        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return cls(
            probabilities=joined("probabilities"),
            labels=joined("labels"),
            trust=joined("trust"),
            flagged=joined("flagged"),
            features=joined("features"),
            csm=joined("csm"),
            classes=joined("classes"),
            saliency=None if first.saliency is None else joined("saliency"),
            engine_seconds=float(sum(p.engine_seconds for p in parts)),
            views={name: np.concatenate([p.views[name] for p in parts]) for name in first.views},
            score=None if first.score is None else joined("score"),
            view_scores={
                name: np.concatenate([p.view_scores[name] for p in parts])
                for name in first.view_scores
            },
        )


@dataclass(frozen=True)
class Scored:
    """One batch through the pipeline, step by step (``GGAPipeline.scored``).

    Attributes:
        engine: the gradient engine's output (tensors).
        inputs: what the views read of it (numpy).
        result: the trust scorer's result; None for a pipeline without a scorer.
        engine_seconds: the engine call's wall time.
    """

    engine: EngineOutput
    inputs: ViewInputs
    result: TrustResult | None
    engine_seconds: float


class GGAPipeline:
    """Model + gradient engine + trust scorer for one served model.

    Args:
        model: the classifier (eval mode, parameters frozen), taking [0, 1] pixels.
        scorer: its fitted trust scorer; the engine uses the options it was fitted with.
            ``None`` for a model without a fitted detector: labels, probabilities and CSMs are
            computed (default engine options) and the trust score is NaN, never flagged.
        device: where the engine runs (default: CPU, or the model's device).
        unfitted_options: the engine's options without a scorer (the classes the card says
            to read: ``ModelCard.top_n``); a scorer's own options always win.

    Raises:
        DetectorFileError: the scorer uses views the model cannot serve.
    """

    def __init__(
        self,
        model: nn.Module,
        scorer: TrustScorer | None,
        device: torch.device | str | None = None,
        unfitted_options: EngineOptions | None = None,
    ) -> None:
        if scorer is not None and scorer.needs_penultimate and not has_penultimate(model):
            needing = [n for n, v in scorer.views.items() if v.needs_penultimate]
            raise DetectorFileError(
                f"detector.json of {scorer.model_name!r} uses views {needing} that need "
                "penultimate features, which this model does not expose (embed(x) and a linear "
                f"head, models/penultimate.py); re-fit it: run `gga fit {scorer.model_name}`"
            )
        limit_blas_threads()
        self.model = model
        self.scorer = scorer
        if scorer is not None:
            self.options = EngineOptions(**scorer.engine_options)
        else:
            self.options = unfitted_options or EngineOptions()
        self.engine = GradientEngine(model, self.options, device=device)

    @property
    def alpha(self) -> float | None:
        """The scorer's flag threshold; ``None`` without a scorer."""
        return self.scorer.alpha if self.scorer is not None else None

    def warmup(
        self, input_shape: tuple[int, int, int], batch_sizes: tuple[int, ...] = (1, 8, 32)
    ) -> dict[int, str]:
        """Run the engine once per batch size (choosing its backward strategy); returns them."""
        return self.engine.warmup(input_shape, batch_sizes)

    def scored(self, x: Tensor) -> "Scored":
        """The engine's output of a batch, what the views read of it, and the scorer's result.

        The steps ``__call__`` serves; the evaluation reads them whole (the fused statistic, the
        maps of its example figures).
        """
        start = time.perf_counter()
        out = self.engine(x)
        seconds = time.perf_counter() - start
        inputs = view_inputs(out)
        result = None if self.scorer is None else self.scorer.evaluate(inputs)
        return Scored(out, inputs, result, seconds)

    def __call__(self, x: Tensor, *, saliency: bool = False) -> PipelineOutput:
        """Score a batch.

        Args:
            x: float pixels (B, C, H, W) in [0, 1].
            saliency: also return the saliency maps (large: B * K * D floats).

        Returns:
            The batch's ``PipelineOutput``.
        """
        scored = self.scored(x)
        out, inputs, result = scored.engine, scored.inputs, scored.result
        if result is None:
            n = len(inputs.predicted)
            trust, flagged, views = np.full(n, np.nan), np.zeros(n, dtype=bool), {}
            score, raw = np.full(n, np.nan), {}
        else:
            trust, flagged, views = result.trust, result.flagged, result.views
            score, raw = result.score, result.raw
        # Each tensor leaves the device once: the views' inputs are the output's arrays.
        return PipelineOutput(
            probabilities=out.probabilities.detach().cpu().numpy().astype(np.float32),
            labels=inputs.predicted,
            trust=trust.astype(np.float64),
            flagged=flagged,
            features=inputs.gga.astype(np.float32),
            csm=inputs.csm,
            classes=inputs.classes,
            saliency=(out.saliency.detach().cpu().numpy().astype(np.float32) if saliency else None),
            engine_seconds=scored.engine_seconds,
            views=views,
            score=np.asarray(score, dtype=np.float64),
            view_scores={name: np.asarray(v, dtype=np.float64) for name, v in raw.items()},
        )


def load_pipeline(
    model_dir: Path,
    model: nn.Module,
    weights_sha256: str,
    device: torch.device | str | None = None,
) -> GGAPipeline:
    """The pipeline of the model in ``model_dir``.

    Args:
        model_dir: the model folder holding ``detector.json``.
        model: the loaded classifier.
        weights_sha256: the served weights' hash (``card.weights_sha256``).
        device: engine device.

    Returns:
        The ready pipeline.

    Raises:
        DetectorNotFoundError: the folder has no ``detector.json`` (run ``gga fit MODEL``).
        DetectorFileError: the file is malformed, fitted for other weights, or uses views the
            model cannot serve.
    """
    scorer = TrustScorer.load(Path(model_dir), weights_sha256)
    return GGAPipeline(model, scorer, device=device)


def serving_pipeline(
    model_dir: Path,
    model: nn.Module,
    card: ModelCard,
    device: torch.device | str | None = None,
) -> GGAPipeline:
    """The model's fitted pipeline or, without ``detector.json``, one without a trust score.

    An unfitted model reads the classes its card says (``ModelCard.top_n``, measured at
    ``gga import``), at the input or at the block it names (``ModelCard.saliency_layer``): a
    1,000-class model would otherwise cost over a thousand forwards per image.
    ``pipeline.scorer is None`` tells the two apart.

    Raises:
        DetectorFileError: a ``detector.json`` that cannot be used.
    """
    try:
        return load_pipeline(model_dir, model, card.weights_sha256, device=device)
    except DetectorNotFoundError:
        layer = card.saliency_layer
        options = EngineOptions(top_n=card.top_n, saliency_layer=layer, channel_max=layer is None)
        return GGAPipeline(model, None, device=device, unfitted_options=options)
