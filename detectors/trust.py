"""The fitted trust scorer the service loads: views, their fusion, and the final calibration.

For a batch of ``ViewInputs`` (what the gradient engine computed): every view gives an outlier
score; each score becomes a conformal p-value against that view's calibration inputs; the
fusion combines the p-values into one statistic; and the statistic becomes the **trust score**,
a conformal p-value against a last calibration split that neither the views nor the fusion saw.
So ``P(trust <= alpha) <= alpha`` holds for clean inputs exchangeable with that split, and each
view's own p-value says which view raised a flag.

A ``detector.json`` of format 1 (one LODA or logistic detector on the ten GGA features) loads as
a scorer with the single view ``gga-paper`` and the ``single`` fusion.
"""

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.calibration import ConformalCalibrator, check_alpha
from detectors.features import FEATURE_NAMES
from detectors.fusion import Fusion, SingleFusion, fusion_from_dict
from detectors.persistence import (
    DetectorFileError,
    read_detector_file,
    write_detector_file,
)
from detectors.views import VIEWS, View, ViewInputs
from detectors.views.gga import FEATURE_DETECTORS, GGAPaperView


@dataclass
class TrustResult:
    """What the scorer says about N inputs.

    Attributes:
        score: (N,) fused outlier score (higher = less trustworthy).
        trust: (N,) trust scores in [0, 1] (conformal p-values; 0 only for a NaN score).
        flagged: (N,) trust below alpha.
        views: each view's own p-value (N,), by view name.
        raw: each fused view's raw outlier score (N,) before its calibration, by view name
            (with ``score``, what a recalibration from traffic refits on).
    """

    score: np.ndarray
    trust: np.ndarray
    flagged: np.ndarray
    views: dict[str, np.ndarray]
    raw: dict[str, np.ndarray] = field(default_factory=dict)


def _check_parts(
    views: dict[str, View], view_calibrators: dict[str, ConformalCalibrator], fusion: Fusion
) -> None:
    """Raise ``ValueError`` unless every fused view is there and every view is calibrated."""
    missing = [v for v in fusion.views if v not in views]
    if missing:
        raise ValueError(f"the fusion uses views {missing} that the scorer does not have")
    if not isinstance(fusion, SingleFusion):
        uncalibrated = [v for v in views if v not in view_calibrators]
        if uncalibrated:
            raise ValueError(f"views {uncalibrated} have no calibration")


def fused_statistic(
    views: dict[str, View],
    view_calibrators: dict[str, ConformalCalibrator],
    fusion: Fusion,
    inputs: ViewInputs,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fused outlier statistic of a batch, before the final calibration.

    Args:
        views: fitted views by name (those ``fusion`` names are computed).
        view_calibrators: their calibrations (unused by the ``single`` fusion).
        fusion: how the views' p-values are combined.
        inputs: what the engine computed for N inputs.

    Returns:
        ``(statistic (N,), each fused view's p-value (N,) by name)``; for the ``single`` fusion
        the statistic is its view's score and there are no per-view p-values.
    """
    scores = {name: views[name].predict_features(inputs) for name in fusion.views}
    return fuse(scores, view_calibrators, fusion)


def fuse(
    scores: dict[str, np.ndarray],
    view_calibrators: dict[str, ConformalCalibrator],
    fusion: Fusion,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`fused_statistic` from the fused views' raw scores (N,) by name."""
    if isinstance(fusion, SingleFusion):
        return scores[fusion.views[0]], {}
    p_values = {n: view_calibrators[n].trust(scores[n]) for n in fusion.views}
    return fusion.statistic(np.stack([p_values[n] for n in fusion.views], axis=1)), p_values


class TrustScorer:
    """Views -> per-view p-values -> fusion -> calibrated trust score, for one model.

    Args:
        views: fitted views by name: those the fusion combines, and any others fitted beside
            them (kept so evaluation can show every view alone; not computed when serving).
        view_calibrators: each view's calibration (empty for the ``single`` fusion).
        fusion: how the views' p-values are combined; its ``views`` are the served ones.
        calibrator: the final calibration of the fused statistic (``calibrated`` builds the scorer
            with it from calibration inputs).
        alpha: flag inputs whose trust is below this (the false-alarm rate on clean inputs).
        engine_options: the ``EngineOptions`` fields the views' inputs were computed with.
        model_name: the model it was fitted for.
        weights_sha256: hash of that model's weights.
        provenance: data, splits, sizes, seeds and the choices made (free-form JSON).

    Raises:
        ValueError: the fusion names views that are missing, or a view lacks its calibration.
    """

    def __init__(
        self,
        views: dict[str, View],
        view_calibrators: dict[str, ConformalCalibrator],
        fusion: Fusion,
        calibrator: ConformalCalibrator,
        alpha: float,
        engine_options: dict[str, Any],
        model_name: str,
        weights_sha256: str,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        _check_parts(views, view_calibrators, fusion)
        self.views = dict(views)
        self.view_calibrators = dict(view_calibrators)
        self.fusion = fusion
        self.calibrator = calibrator
        self.alpha = check_alpha(alpha)
        self.engine_options = dict(engine_options)
        self.model_name = model_name
        self.weights_sha256 = weights_sha256
        self.provenance = dict(provenance or {})

    @property
    def view_names(self) -> tuple[str, ...]:
        """The views the trust score fuses (and the API explains), in order."""
        return self.fusion.views

    @property
    def needs_penultimate(self) -> bool:
        """Whether a view needs the model's penultimate features."""
        return any(v.needs_penultimate for v in self.views.values())

    def view_scores(
        self, inputs: ViewInputs, names: tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """Outlier scores (N,) of the fused views, or of ``names`` (any fitted views)."""
        return {
            name: self.views[name].predict_features(inputs) for name in names or self.view_names
        }

    @classmethod
    def calibrated(
        cls,
        calibration_inputs: ViewInputs,
        *,
        views: dict[str, View],
        view_calibrators: dict[str, ConformalCalibrator],
        fusion: Fusion,
        alpha: float,
        engine_options: dict[str, Any],
        model_name: str,
        weights_sha256: str,
        provenance: dict[str, Any] | None = None,
    ) -> "TrustScorer":
        """A scorer whose final calibration is its fused statistic on ``calibration_inputs``.

        Args:
            calibration_inputs: clean, correctly classified inputs that neither the views nor
                the fusion saw.
            views, view_calibrators, fusion, alpha, engine_options, model_name, weights_sha256,
                provenance: as for the constructor.

        Returns:
            The calibrated scorer.

        Raises:
            ValueError: as for the constructor.
            DetectorFitError: too few calibration inputs, or a NaN fused statistic.
        """
        _check_parts(views, view_calibrators, fusion)
        statistic, _ = fused_statistic(views, view_calibrators, fusion, calibration_inputs)
        return cls(
            views=views,
            view_calibrators=view_calibrators,
            fusion=fusion,
            calibrator=ConformalCalibrator(statistic),
            alpha=alpha,
            engine_options=engine_options,
            model_name=model_name,
            weights_sha256=weights_sha256,
            provenance=provenance,
        )

    def evaluate(self, inputs: ViewInputs) -> TrustResult:
        """Scores, trust, flags and per-view p-values of a batch, in one pass over the views."""
        raw = self.view_scores(inputs)
        fused, views = fuse(raw, self.view_calibrators, self.fusion)
        trust = self.calibrator.trust(fused)
        if isinstance(self.fusion, SingleFusion):
            views = {self.fusion.views[0]: trust}  # its one view's p-value is the trust score
        return TrustResult(
            score=fused, trust=trust, flagged=self.flagged(trust), views=views, raw=raw
        )

    def flagged(self, trust: Any) -> np.ndarray:
        """Boolean (N,): trust below ``alpha``."""
        return np.asarray(trust, dtype=np.float64) < self.alpha

    def summary(self) -> dict[str, Any]:
        """What the API's model endpoint shows about the detector (JSON-ready)."""
        source = self.provenance.get("calibration_inputs", "unknown")
        return {
            "kind": "multi-view" if len(self.views) > 1 else self.fusion.views[0],
            "views": list(self.view_names),
            "view_titles": {n: self.views[n].title for n in self.view_names},
            "views_fitted": list(self.views),
            "fusion": self.fusion.kind,
            "alpha": self.alpha,
            "calibration": {"source": source, "n": self.calibrator.n},
            "n_calibration": self.calibrator.n,
            "feature_names": list(FEATURE_NAMES),
            "engine_options": dict(self.engine_options),
            "weights_sha256": self.weights_sha256,
            **{k: v for k, v in self.provenance.items() if k not in ("created_at", "choices")},
            "created_at": self.provenance.get("created_at"),
        }

    # -- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": {"name": self.model_name, "weights_sha256": self.weights_sha256},
            "engine_options": dict(self.engine_options),
            "views": {
                name: {
                    "params": view.get_params(),
                    **(
                        {"calibration": self.view_calibrators[name].to_dict()}
                        if name in self.view_calibrators
                        else {}
                    ),
                }
                for name, view in self.views.items()
            },
            "fusion": self.fusion.to_dict(),
            "calibration": {"alpha": self.alpha, **self.calibrator.to_dict()},
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "detector.json") -> "TrustScorer":
        """Rebuild from ``to_dict`` output (format 2) or a format-1 file.

        Raises:
            DetectorFileError: a field is missing or malformed, or a view is unknown.
        """
        try:
            if data.get("format_version", 2) == 1:
                return cls._from_v1(data, source)
            views, calibrators = {}, {}
            for name, entry in data["views"].items():
                if name not in VIEWS:
                    raise DetectorFileError(
                        f"{source}: unknown view {name!r}; known: {', '.join(VIEWS)}; re-fit "
                        "the detector with this release: run `gga fit MODEL`"
                    )
                views[name] = VIEWS[name].from_params(entry["params"])
                if "calibration" in entry:
                    calibrators[name] = ConformalCalibrator.from_dict(entry["calibration"])
            return cls(
                views=views,
                view_calibrators=calibrators,
                fusion=fusion_from_dict(data["fusion"]),
                calibrator=ConformalCalibrator(data["calibration"]["sorted_scores"]),
                alpha=data["calibration"]["alpha"],
                engine_options=data["engine_options"],
                model_name=data["model"]["name"],
                weights_sha256=data["model"]["weights_sha256"],
                provenance=data.get("provenance", {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, DetectorFileError):
                raise
            raise DetectorFileError(f"{source}: malformed ({err!r}); re-fit the detector") from err

    @classmethod
    def _from_v1(cls, data: dict[str, Any], source: str) -> "TrustScorer":
        """A format-1 file: one detector on the ten features, calibrated directly."""
        if tuple(data["feature_names"]) != FEATURE_NAMES:
            raise DetectorFileError(
                f"{source} was fitted on features {list(data['feature_names'])}, the engine "
                f"computes {list(FEATURE_NAMES)}; re-fit it: run `gga fit MODEL`"
            )
        kind = data["detector"]["kind"]
        if kind not in FEATURE_DETECTORS:
            raise DetectorFileError(
                f"{source}: unknown detector kind {kind!r}; known: {', '.join(FEATURE_DETECTORS)}"
            )
        detector = FEATURE_DETECTORS[kind].from_params(data["detector"]["params"])
        view = GGAPaperView(detector=detector)
        return cls(
            views={view.name: view},
            view_calibrators={},
            fusion=SingleFusion((view.name,)),
            calibrator=ConformalCalibrator(data["calibration"]["sorted_scores"]),
            alpha=data["calibration"]["alpha"],
            engine_options=data["engine_options"],
            model_name=data["model"]["name"],
            weights_sha256=data["model"]["weights_sha256"],
            provenance={**data.get("provenance", {}), "format_version": 1},
        )

    def save(self, folder: Path) -> Path:
        """Write ``folder/detector.json``; stamps ``provenance.created_at`` if unset."""
        self.provenance.setdefault(
            "created_at", dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        )
        return write_detector_file(Path(folder), self.to_dict())

    @classmethod
    def load(
        cls, folder: Path, weights_sha256: str | None, model_name: str | None = None
    ) -> "TrustScorer":
        """Load ``folder/detector.json``, refusing one fitted for other weights.

        Args:
            folder: the model folder.
            weights_sha256: hash of the served weights (``card.weights_sha256``); ``None`` skips
                the check.
            model_name: name for error messages (default: the folder's name).

        Raises:
            DetectorNotFoundError: no detector.json; the message says to run ``gga fit MODEL``.
            DetectorFileError: malformed, or fitted for other weights.
        """
        folder = Path(folder)
        data = read_detector_file(folder, weights_sha256, model_name)
        return cls.from_dict(data, source=str(folder / "detector.json"))
