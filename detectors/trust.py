"""The fitted trust scorer the service loads: detector + conformal calibration + provenance."""

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from detectors.base import Detector, as_features
from detectors.calibration import ConformalCalibrator, check_alpha
from detectors.persistence import (
    DetectorFileError,
    detector_from_dict,
    detector_to_dict,
    read_detector_file,
    write_detector_file,
)


class TrustScorer:
    """Outlier score -> conformal trust score -> flag, for one model's GGA features.

    Args:
        detector: a fitted detector on GGA features (LODA or logistic).
        calibrator: calibration on held-out clean, correctly classified inputs.
        alpha: flag inputs whose trust is below this (the false-alarm rate on clean inputs).
        feature_names: names of the feature columns, in order.
        engine_options: the ``EngineOptions`` fields the features were computed with.
        model_name: the model it was fitted for.
        weights_sha256: hash of that model's weights.
        provenance: data, split, sizes and seeds used (free-form JSON).
    """

    def __init__(
        self,
        detector: Detector,
        calibrator: ConformalCalibrator,
        alpha: float,
        feature_names: tuple[str, ...],
        engine_options: dict[str, Any],
        model_name: str,
        weights_sha256: str,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.detector = detector
        self.calibrator = calibrator
        self.alpha = check_alpha(alpha)
        self.feature_names = tuple(feature_names)
        self.engine_options = dict(engine_options)
        self.model_name = model_name
        self.weights_sha256 = weights_sha256
        self.provenance = dict(provenance or {})

    def score(self, features: Any) -> np.ndarray:
        """Outlier scores (N,) of GGA features (N, 10); higher = less trustworthy."""
        z = as_features(features)
        if z.shape[1] != len(self.feature_names):
            raise ValueError(
                f"features have {z.shape[1]} columns; this scorer expects "
                f"{len(self.feature_names)}: {', '.join(self.feature_names)}"
            )
        return self.detector.predict_features(z)

    def trust(self, features: Any) -> np.ndarray:
        """Trust scores (N,) in (0, 1]: conformal p-values of the outlier scores."""
        return self.calibrator.trust(self.score(features))

    def flagged(self, trust: Any) -> np.ndarray:
        """Boolean (N,): trust below ``alpha``."""
        return np.asarray(trust, dtype=np.float64) < self.alpha

    def summary(self) -> dict[str, Any]:
        """What the API's model card endpoint shows about the detector (JSON-ready)."""
        return {
            "kind": self.detector.kind,
            "alpha": self.alpha,
            "n_calibration": self.calibrator.n,
            "feature_names": list(self.feature_names),
            "engine_options": dict(self.engine_options),
            "weights_sha256": self.weights_sha256,
            **{k: v for k, v in self.provenance.items() if k != "created_at"},
            "created_at": self.provenance.get("created_at"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": {"name": self.model_name, "weights_sha256": self.weights_sha256},
            "detector": detector_to_dict(self.detector),
            "feature_names": list(self.feature_names),
            "engine_options": dict(self.engine_options),
            "calibration": {
                "alpha": self.alpha,
                "n": self.calibrator.n,
                "sorted_scores": self.calibrator.sorted_scores.tolist(),
            },
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "detector.json") -> "TrustScorer":
        """Rebuild from ``to_dict`` output.

        Raises:
            DetectorFileError: a field is missing or malformed.
        """
        try:
            return cls(
                detector=detector_from_dict(data["detector"], source),
                calibrator=ConformalCalibrator(data["calibration"]["sorted_scores"]),
                alpha=data["calibration"]["alpha"],
                feature_names=tuple(data["feature_names"]),
                engine_options=data["engine_options"],
                model_name=data["model"]["name"],
                weights_sha256=data["model"]["weights_sha256"],
                provenance=data.get("provenance", {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, DetectorFileError):
                raise
            raise DetectorFileError(f"{source}: malformed ({err!r}); re-fit the detector") from err

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
