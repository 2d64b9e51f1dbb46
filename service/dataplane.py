"""The data plane: finds the model, runs requests through its batcher, reads the store.

KServe's ``DataPlane`` is the pattern: endpoints stay thin, this layer raises domain errors
(``ModelNotFound``, ``ModelNotReady``, ``PredictionNotFound``) and knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from detectors.features import FEATURE_NAMES
from service.errors import InvalidInput, ModelNotReady
from service.input_spec import InputSpec
from service.model import RequestContext, ServedModel
from service.predictions import Predictions
from service.registry import ModelRegistry
from service.settings import Settings
from service.store import Database
from service.store import repository as store

_WINDOW = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Longer windows reach before the year 1 (datetime's range) for no use: omit window for all time.
MAX_WINDOW = dt.timedelta(days=36_500)


def parse_window(window: str | None) -> dt.timedelta | None:
    """``"15m"``, ``"24h"``, ``"7d"`` as a timedelta; None for all time.

    Raises:
        InvalidInput: Not a number followed by s, m, h or d, or longer than 36500 days.
    """
    if window is None or window == "":
        return None
    match = _WINDOW.match(window.strip())
    if match is None:
        raise InvalidInput(f"window {window!r} must look like 30s, 15m, 24h or 7d")
    span = dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if span > MAX_WINDOW:
        raise InvalidInput(
            f"window {window!r} is longer than {MAX_WINDOW.days}d; omit window for all time"
        )
    return span


@dataclass(frozen=True)
class ResolvedModel:
    """A served model as one request sees it, from decoding to its answer.

    Attributes:
        model: The served model, found once by name.
        spec: What its decoders accept: its card's input shape and the request limits.
    """

    model: ServedModel
    spec: InputSpec


class DataPlane:
    """Everything the endpoints ask of models and the store.

    Args:
        registry: The served models.
        db: The result store.
        settings: Limits (images per request, pixels, timeout).
    """

    def __init__(self, registry: ModelRegistry, db: Database, settings: Settings) -> None:
        self.registry = registry
        self.db = db
        self.settings = settings

    # -- models ------------------------------------------------------------------------------

    def model(self, name: str, *, require_ready: bool = True) -> ServedModel:
        """The served model ``name``.

        Raises:
            ModelNotFound: Not served here.
            ModelNotReady: Still loading (when ``require_ready``).
        """
        model = self.registry.get(name)
        if require_ready and not model.ready:
            raise ModelNotReady(name)
        return model

    def resolve(self, name: str) -> ResolvedModel:
        """The ready model ``name`` with its input spec, looked up once for one request.

        Raises:
            ModelNotFound: Not served here.
            ModelNotReady: Still loading.
        """
        model = self.model(name)
        card = model.card
        spec = InputSpec(
            input_shape=tuple(card.input_shape),
            resize=bool(card.preprocessing.resize),
            max_images=self.settings.max_images_per_request,
            max_pixels=self.settings.max_pixels,
            resize_mode=card.preprocessing.resize_mode,
        )
        return ResolvedModel(model, spec)

    def model_info(self, name: str) -> dict[str, Any]:
        model = self.model(name, require_ready=False)
        card = model.card
        summary = model.detector_summary()
        return {
            "name": card.name,
            "version": str(card.version),
            "ready": model.ready,
            "architecture": card.architecture,
            "dataset": card.dataset,
            "input_shape": list(card.input_shape),
            "class_names": list(card.class_names),
            "preprocessing": {
                "color_mode": card.preprocessing.color_mode,
                "resize": card.preprocessing.resize,
                "resize_mode": card.preprocessing.resize_mode,
            },
            "metrics": card.metrics,
            "description": card.description,
            "detector": summary or None,
            "warnings": list(model.warnings),
        }

    def models_info(self) -> list[dict[str, Any]]:
        return [self.model_info(name) for name in self.registry.names()]

    # -- inference -----------------------------------------------------------------------------

    async def predict(
        self, target: ResolvedModel, inputs: Tensor, context: RequestContext
    ) -> Predictions:
        """Predictions for a batch decoded for ``target``, stored before they are returned.

        Args:
            target: The model the inputs were decoded for (:meth:`resolve`), never looked up
                again: a reload meanwhile cannot hand them to a model of another shape.
            inputs: (N, C, H, W) pixels in [0, 1].
            context: The request's id, caller and flags.

        Raises:
            ModelNotReady: The model stopped meanwhile (replaced or unloaded); retry.
            QueueFull, DeadlineExceeded, ShuttingDown, StoreUnavailable, StoreRejected.
        """
        return await target.model.predict(inputs, context, self.settings.request_timeout_s)

    # -- the store ----------------------------------------------------------------------------

    async def get_prediction(self, prediction_id: str, owner: str | None) -> dict[str, Any]:
        row = await asyncio.to_thread(store.get_prediction, self.db, prediction_id, owner)
        return _public(row)

    async def list_predictions(
        self, owner: str | None, **filters: Any
    ) -> tuple[list[dict[str, Any]], str | None]:
        if filters.get("model") is not None:
            self.registry.get(filters["model"])  # an unknown model is a 404, not an empty page
        rows, cursor = await asyncio.to_thread(store.list_predictions, self.db, owner, **filters)
        return [_public(r) for r in rows], cursor

    async def stats(
        self, owner: str | None, model: str | None, window: str | None
    ) -> dict[str, Any]:
        if model is not None:
            self.registry.get(model)
        span = parse_window(window)
        since = dt.datetime.now(dt.UTC) - span if span is not None else None
        result = await asyncio.to_thread(
            store.prediction_stats, self.db, owner, model=model, since=since
        )
        return {"model": model, "window": window, **result}


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "api_key_id"}
    features = row.get("features")
    if features is not None and len(features) == len(FEATURE_NAMES):
        out["features"] = dict(zip(FEATURE_NAMES, map(float, features), strict=True))
    else:
        out["features"] = None
    out["probabilities"] = [float(p) for p in np.asarray(row["probabilities"]).ravel()]
    return out
