"""One request's predictions as the batcher hands them back: stored, and still numpy.

The persist thread builds a :class:`Predictions` per request once its rows are committed; the
protocol encoders (v1 JSON, v2 tensors) read its arrays directly, so each array leaves the engine
as numpy once and is converted only by the encoder that writes it out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from detectors.pipeline import PipelineOutput
from detectors.trust import TrustScorer


@dataclass(frozen=True)
class Predictions:
    """A request's predictions, in the order of its images.

    Attributes:
        model: The served model's name.
        model_version: Its card's version.
        class_names: Its card's class names (a label indexes them).
        ids: Each prediction's id in the store.
        created_at: When the micro-batch was scored (stored with each row).
        out: The request's rows of the pipeline output.
        inputs: The images as the model saw them, (n, C, H, W) in [0, 1] (saliency shows them).
        statistic: Which fused statistic ``out.score`` is (:func:`statistic_id` of the scorer),
            stored with the scores: a recalibration refits only on scores of the same one.
    """

    model: str
    model_version: str
    class_names: Sequence[str]
    ids: tuple[str, ...]
    created_at: dt.datetime
    out: PipelineOutput
    inputs: Tensor
    statistic: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def trust_score(self, i: int) -> float | None:
        """Image ``i``'s trust score; None for a model served without a detector (NaN)."""
        trust = float(self.out.trust[i])
        return trust if np.isfinite(trust) else None

    def to_rows(self, owner: str | None, request_id: str) -> list[dict[str, Any]]:
        """The store's rows of these predictions (``service.store.tables.Prediction``'s columns).

        Args:
            owner: The caller's API key id (None in open mode).
            request_id: The HTTP request's id.
        """
        out = self.out
        return [
            {
                "id": prediction_id,
                "created_at": self.created_at,
                "model": self.model,
                "model_version": self.model_version,
                "label": int(out.labels[i]),
                "class_name": self.class_names[int(out.labels[i])],
                "probabilities": out.probabilities[i].tolist(),
                "trust_score": self.trust_score(i),
                "flagged": bool(out.flagged[i]),
                "features": out.features[i].tolist(),
                "api_key_id": owner,
                "request_id": request_id,
                "scores": self.scores(i),
            }
            for i, prediction_id in enumerate(self.ids)
        ]

    def scores(self, i: int) -> dict[str, Any] | None:
        """Image ``i``'s fused statistic before calibration and each view's raw score.

        None without a detector. A non-finite value is kept as None: JSON has no NaN, and
        PostgreSQL refuses one in a JSON column.
        """
        score = self.out.score
        if score is None or not np.isfinite(score[i]):
            return None
        return {
            "fused": float(score[i]),
            "views": {name: _finite(v[i]) for name, v in self.out.view_scores.items()},
            "statistic": self.statistic,
        }


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


def statistic_id(scorer: TrustScorer) -> str:
    """A short hash of what defines the scorer's fused statistic: its fused views, their
    calibrations and the fusion, not the final calibration.

    Recalibrating changes only the final calibration, so scores stored before and after a
    recalibration share an id; a new ``gga fit`` changes it. It serialises the whole detector:
    a served model computes it once, at load (``ServedModel.statistic``).
    """
    payload = scorer.to_dict()
    fused = {name: payload["views"][name] for name in scorer.view_names}
    text = json.dumps({"views": fused, "fusion": payload["fusion"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
