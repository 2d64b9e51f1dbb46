"""A served model: its classifier, GGA pipeline and batcher, with a ``load()``/``ready`` lifecycle.

KServe's ``Model`` is the pattern: ``load()`` does the slow work once (weights, detector, engine
warm-up) and sets ``ready``; the data plane refuses requests until then. The micro-batch function
runs on the batcher's worker thread: it scores the batch, stores every row in one transaction
and only then returns, so no response is ever sent for a prediction that is not stored.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detectors.features import FEATURE_NAMES
from detectors.pipeline import GGAPipeline, PipelineOutput, load_pipeline
from models.card import ModelCard
from models.imaging import encode_png
from models.repository import ModelRepository
from service.batcher import Batcher, WorkItem
from service.errors import ModelNotReady
from service.metrics import ServiceMetrics
from service.store import Database, new_id
from service.store import repository as store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestContext:
    """Per-request facts the batch function needs.

    Attributes:
        request_id: Id of the HTTP request (stored with each row).
        owner: API key id of the caller, None in open mode.
        explain: Add features and CSM to the results.
        saliency: Add the predicted and runner-up sign maps as PNG base64.
    """

    request_id: str
    owner: str | None = None
    explain: bool = False
    saliency: bool = False


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 32
    max_latency_s: float = 0.005
    queue_size: int = 256


class ServedModel:
    """One model as the service hosts it.

    Args:
        name: Model folder name in the repository.
        repository: Where to load it from.
        db: The result store.
        metrics: The service's metrics.
        batching: Batcher limits.
        device: Engine device (None: CPU).
        warmup_batch_sizes: Batch sizes the engine measures and compiles at load; empty (the
            default) means one per power-of-two bucket up to ``max_batch_size``, so no batch
            size the batcher can form is auto-tuned on the request path.
    """

    def __init__(
        self,
        name: str,
        repository: ModelRepository,
        db: Database,
        metrics: ServiceMetrics,
        *,
        batching: BatchingConfig | None = None,
        device: str | None = None,
        warmup_batch_sizes: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.repository = repository
        self.db = db
        self.metrics = metrics
        self.batching = batching or BatchingConfig()
        self.device = device
        self.warmup_batch_sizes = tuple(warmup_batch_sizes)
        self.ready = False
        self.card: ModelCard = repository.card(name)
        self.pipeline: GGAPipeline | None = None
        self.batcher: Batcher | None = None

    def _warmup_sizes(self) -> tuple[int, ...]:
        largest = self.batching.max_batch_size
        if not self.warmup_batch_sizes:
            # Tuning is per power-of-two bucket; a bucket first met under load would be tuned
            # there, stalling every request queued behind that batch for the whole measurement.
            powers = [1 << i for i in range(largest.bit_length()) if 1 << i < largest]
            return (*powers, largest)
        return tuple(b for b in self.warmup_batch_sizes if b <= largest) or (1,)

    def load(self) -> None:
        """Load weights and detector, warm the engine up, start the batcher; sets ``ready``.

        Raises:
            ModelNotFoundError, ModelLoadError: The model folder is missing or inconsistent.
            DetectorNotFoundError, DetectorFileError: No usable ``detector.json``.
        """
        start = time.perf_counter()
        loaded = self.repository.load(self.name)
        self.card = loaded.card
        self.pipeline = load_pipeline(
            loaded.path, loaded.module, loaded.card.weights_sha256, device=self.device
        )
        chosen = self.pipeline.warmup(self.card.input_shape, self._warmup_sizes())
        self.batcher = Batcher(
            self.name,
            self._run_batch,
            max_batch_size=self.batching.max_batch_size,
            max_latency_s=self.batching.max_latency_s,
            queue_size=self.batching.queue_size,
            on_depth=lambda depth: self.metrics.set_queue_depth(self.name, depth),
            on_reject=lambda reason: self.metrics.observe_rejection(self.name, reason),
        )
        self.batcher.start()
        summary = self.detector_summary()
        self.metrics.set_queue_capacity(self.name, self.batching.queue_size)
        self.metrics.set_queue_depth(self.name, 0)
        self.metrics.set_model_info(
            self.name, self.card.version, str(summary.get("kind", "")), self.pipeline.alpha
        )
        self.ready = True
        logger.info(
            "model %s v%s ready in %.1f s (engine strategies %s)",
            self.name,
            self.card.version,
            time.perf_counter() - start,
            chosen,
        )

    def stop(self) -> None:
        """Refuse new requests and finish the queued ones."""
        self.ready = False
        if self.batcher is not None:
            self.batcher.stop()

    def detector_summary(self) -> dict[str, Any]:
        if self.pipeline is None:
            return {}
        return dict(self.pipeline.scorer.summary())

    async def predict(
        self, inputs: Tensor, context: RequestContext, timeout_s: float
    ) -> list[dict[str, Any]]:
        """Queue a request's images and wait for their stored predictions.

        Raises:
            ModelNotReady: Not loaded yet (or stopping).
            QueueFull, DeadlineExceeded, ShuttingDown: From the batcher.
        """
        if not self.ready or self.batcher is None:
            raise ModelNotReady(self.name)
        return await self.batcher.submit(inputs, context, timeout_s)

    # -- worker thread ---------------------------------------------------------------------

    def _run_batch(self, items: Sequence[WorkItem]) -> list[list[dict[str, Any]]]:
        assert self.pipeline is not None
        x = torch.cat([item.inputs for item in items])
        want_saliency = any(item.context.saliency for item in items)
        with torch.inference_mode(False):
            out = self.pipeline(x, saliency=want_saliency)
        now = dt.datetime.now(dt.UTC)
        rows = [self._row(out, i, now) for i in range(len(x))]
        offsets = np.cumsum([0] + [item.size for item in items])
        for item, lo, hi in zip(items, offsets[:-1], offsets[1:], strict=True):
            for row in rows[lo:hi]:
                row["api_key_id"] = item.context.owner
                row["request_id"] = item.context.request_id
        # The whole micro-batch in one transaction, committed before any waiter is woken.
        store.save_predictions(self.db, rows)
        self.metrics.observe_batch(
            self.name,
            len(x),
            [item.started_at - item.enqueued_at for item in items for _ in range(item.size)],
            out.engine_seconds,
            out.trust.tolist(),
            out.flagged.tolist(),
        )
        results = []
        for item, lo, hi in zip(items, offsets[:-1], offsets[1:], strict=True):
            results.append(
                [self._result(out, rows[i], i, item.context, x[i]) for i in range(int(lo), int(hi))]
            )
        return results

    def _row(self, out: PipelineOutput, i: int, now: dt.datetime) -> dict[str, Any]:
        label = int(out.labels[i])
        return {
            "id": new_id(),
            "created_at": now,
            "model": self.name,
            "model_version": str(self.card.version),
            "label": label,
            "class_name": self.card.class_names[label],
            "probabilities": [float(p) for p in out.probabilities[i]],
            "trust_score": float(out.trust[i]),
            "flagged": bool(out.flagged[i]),
            "features": [float(f) for f in out.features[i]],
        }

    def _result(
        self,
        out: PipelineOutput,
        row: dict[str, Any],
        i: int,
        context: RequestContext,
        x: torch.Tensor,
    ) -> dict[str, Any]:
        result = {k: row[k] for k in row if k not in ("features", "api_key_id", "request_id")}
        if context.explain:
            result["explanation"] = {
                "features": dict(zip(FEATURE_NAMES, row["features"], strict=True)),
                "classes": [int(c) for c in out.classes[i]],
                "csm": out.csm[i].astype(float).round(6).tolist(),
            }
        if context.saliency and out.saliency is not None:
            result["saliency"] = self._saliency(out, i, x)
        return result

    def _saliency(self, out: PipelineOutput, i: int, x: torch.Tensor) -> dict[str, Any]:
        """The sign maps of the predicted and runner-up classes, and the input they explain.

        The maps are the engine's: one value per pixel, the max over colour channels (the
        reference's), so they are grey even for a colour model; ``input`` is the image as the
        model saw it (after conversion and resizing), in colour for a colour model, to lay the
        maps over.
        """
        assert out.saliency is not None
        order = np.argsort(-out.probabilities[i])
        rows = {int(c): r for r, c in enumerate(out.classes[i])}
        runner_up = int(order[1]) if len(order) > 1 else None
        maps = {"predicted": self._png(out.saliency[i, rows[int(order[0])]])}
        if runner_up is not None and runner_up in rows:
            maps["runner_up"] = self._png(out.saliency[i, rows[runner_up]])
            maps["runner_up_label"] = runner_up
        maps["input"] = base64.b64encode(encode_png(x)).decode()
        return maps

    def _png(self, flat: np.ndarray) -> str:
        c, h, w = self.card.input_shape
        image = torch.from_numpy(np.asarray(flat, dtype=np.float32))
        image = image.reshape(1, h, w) if image.numel() == h * w else image.reshape(c, h, w)
        # Sign maps hold -1, 0 and 1: shown as black, mid grey and white.
        return base64.b64encode(encode_png((image.clamp(-1, 1) + 1) / 2)).decode()
