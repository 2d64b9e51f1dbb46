"""A served model: its classifier, GGA pipeline and batcher, with a ``load()``/``ready`` lifecycle.

KServe's ``Model`` is the pattern: ``load()`` does the slow work once (weights, detector, engine
warm-up) and sets ``ready``; the data plane refuses requests until then. A micro-batch is scored
on the batcher's compute thread and stored on its persist thread, in one transaction, before any
of its responses is released, so no response is ever sent for a prediction that is not stored.
A row the store refuses fails its own request only: the batch is then stored request by request.
Each request gets its :class:`~service.predictions.Predictions`, arrays the protocol layer
encodes; nothing is rendered here, so the persist thread only ever waits on the store.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detectors.pipeline import GGAPipeline, PipelineOutput, serving_pipeline
from models.card import ModelCard
from models.repository import ModelRepository
from service.batcher import Batcher, WorkItem
from service.errors import ModelNotReady, ServiceError, StoreRejected, StoreUnavailable
from service.inference_stats import InferenceStats
from service.metrics import ServiceMetrics
from service.predictions import Predictions, statistic_id
from service.store import Database, new_id
from service.store import repository as store
from service.store.errors import is_unavailable
from service.warmup import EngineTuning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestContext:
    """Per-request facts the batch function needs.

    Attributes:
        request_id: Id of the HTTP request (stored with each row).
        owner: API key id of the caller, None in open mode.
        saliency: Keep the engine's sign maps for this request's micro-batch (the v1 encoder
            draws them as PNGs).
    """

    request_id: str
    owner: str | None = None
    saliency: bool = False


@dataclass(frozen=True)
class BatchingConfig:
    """The batcher's limits (see ``service.batcher.Batcher``).

    Attributes:
        max_batch_size: Most images per engine call; larger requests are computed in chunks.
        max_latency_s: Longest a micro-batch waits to fill.
        queue_size: Images queued before refusing with 503.
        stop_timeout_s: Longest the queue may take to drain at shutdown.
        pad_batches: Pad every engine call to ``max_batch_size`` images (zeros), so each image
            is always computed in a batch of one size: results that do not depend on the batch.
    """

    max_batch_size: int = 32
    max_latency_s: float = 0.005
    queue_size: int = 256
    stop_timeout_s: float | None = None
    pad_batches: bool = False


@dataclass
class _Computed:
    """A scored micro-batch on its way from the compute thread to the persist thread."""

    engine_seconds: float
    predictions: dict[WorkItem, Predictions]  # each request's, not stored yet


class ServedModel:
    """One model as the service hosts it.

    Args:
        name: Model folder name in the repository.
        repository: Where to load it from.
        db: The result store.
        metrics: The service's metrics.
        batching: Batcher limits.
        device: Engine device (None: CPU).
        warmup_batch_sizes: Batch sizes whose buckets the engine measures; empty (the default)
            means one per power-of-two bucket up to ``max_batch_size``. The engine never sees
            more than ``max_batch_size`` images at once (a larger request is computed in
            chunks), so the default leaves no bucket unmeasured for long.
        tuning_cache_dir: Where measured choices are kept across restarts (None: nowhere).
        background_tuning: Measure after ``ready`` in a background thread (``service.warmup``),
            serving the default strategy meanwhile; False measures before ``ready``.
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
        tuning_cache_dir: Path | None = None,
        background_tuning: bool = True,
    ) -> None:
        self.name = name
        self.repository = repository
        self.db = db
        self.metrics = metrics
        self.batching = batching or BatchingConfig()
        self.device = device
        self.warmup_batch_sizes = tuple(warmup_batch_sizes)
        self.tuning_cache_dir = tuning_cache_dir
        self.background_tuning = background_tuning
        self.tuning: EngineTuning | None = None
        self.ready = False
        self.card: ModelCard = repository.card(name)
        self.pipeline: GGAPipeline | None = None
        self.batcher: Batcher | None = None
        # Said with the model's metadata: e.g. that it is served without a trust score.
        self.warnings: list[str] = []
        self.stats = InferenceStats()
        # Which fused statistic this model's stored scores are (None: no detector); set at load.
        self.statistic: str | None = None

    def _warmup_sizes(self) -> tuple[int, ...]:
        largest = self.batching.max_batch_size
        if not self.warmup_batch_sizes:
            # Tuning is per power-of-two bucket; a bucket left out is served with the engine's
            # default strategy for good (requests never wait for a measurement).
            powers = [1 << i for i in range(largest.bit_length()) if 1 << i < largest]
            return (*powers, largest)
        chosen = tuple(b for b in self.warmup_batch_sizes if b <= largest) or (1,)
        tuned = {1 << (b - 1).bit_length() for b in chosen}
        reachable = {1 << i for i in range(largest.bit_length())} | {
            1 << (largest - 1).bit_length()
        }
        if untuned := sorted(reachable - tuned):
            logger.warning(
                "model %s: GGA_WARMUP_BATCH_SIZES leaves batch-size buckets %s untuned; they are "
                "served with the engine's default strategy, never measured (leave the setting "
                "empty to tune them all)",
                self.name,
                untuned,
            )
        return chosen

    def load(self) -> None:
        """Load weights and detector, warm the engine up, start the batcher; sets ``ready``.

        A model without ``detector.json`` (an imported model not fitted yet) is served without
        a trust score: ``trust_score`` null, never flagged, and a warning in its metadata.

        Raises:
            ModelNotFoundError, ModelLoadError: The model folder is missing or inconsistent.
            DetectorFileError: A ``detector.json`` that cannot be used (malformed, fitted for
                other weights, or with views the model cannot serve).
        """
        start = time.perf_counter()
        loaded = self.repository.load(self.name)
        self.card = loaded.card
        self.pipeline = serving_pipeline(loaded.path, loaded.module, loaded.card, self.device)
        self.warnings = []
        if self.pipeline.scorer is None:
            self.warnings = [
                f"no trust detector: predictions carry trust_score null and are never flagged; "
                f"fit one with `gga fit {self.name} --data DIR`, then load the model again"
            ]
            logger.warning("model %s: %s", self.name, self.warnings[0])
        # Hashed here, once: it covers the detector's whole settings (a k-NN bank included),
        # which no request should pay for.
        scorer = self.pipeline.scorer
        self.statistic = statistic_id(scorer) if scorer is not None else None
        self.tuning = EngineTuning(
            self.name,
            self.pipeline,
            self.card.weights_sha256,
            self.card.input_shape,
            self._warmup_sizes(),
            self.tuning_cache_dir,
            background=self.background_tuning,
        )
        chosen = self.tuning.start()
        self.batcher = Batcher(
            self.name,
            self._compute,
            persist_fn=self._persist,
            max_batch_size=self.batching.max_batch_size,
            max_latency_s=self.batching.max_latency_s,
            queue_size=self.batching.queue_size,
            on_depth=lambda depth: self.metrics.set_queue_depth(self.name, depth),
            on_reject=lambda reason: self.metrics.observe_rejection(self.name, reason),
            on_failure=lambda stage: self.metrics.observe_batch_failure(self.name, stage),
        )
        self.batcher.start()
        summary = self.detector_summary()
        self.metrics.set_queue_capacity(self.name, self.batching.queue_size)
        self.metrics.declare_batch_failures(self.name)
        self.metrics.set_queue_depth(self.name, 0)
        self.metrics.set_model_info(
            self.name, self.card.version, str(summary.get("kind", "")), self.alpha
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
        if self.tuning is not None:
            self.tuning.stop()
        if self.batcher is not None:
            self.batcher.stop(self.batching.stop_timeout_s)

    @property
    def has_detector(self) -> bool:
        """Whether predictions carry a trust score (a fitted detector was loaded)."""
        return self.pipeline is not None and self.pipeline.scorer is not None

    @property
    def alpha(self) -> float | None:
        """The detector's flag threshold; None before loading or without a detector."""
        return self.pipeline.alpha if self.pipeline is not None else None

    def detector_summary(self) -> dict[str, Any]:
        if self.pipeline is None or self.pipeline.scorer is None:
            return {}
        return dict(self.pipeline.scorer.summary())

    async def predict(
        self, inputs: Tensor, context: RequestContext, timeout_s: float
    ) -> Predictions:
        """Queue a request's images and wait for their stored predictions.

        Raises:
            ModelNotReady: Not loaded yet (or stopping).
            QueueFull, DeadlineExceeded, ShuttingDown: From the batcher.
            StoreUnavailable, StoreRejected: The store did not take the rows (nothing stored).
        """
        if not self.ready or self.batcher is None:
            raise ModelNotReady(self.name)
        start = time.perf_counter()
        try:
            predictions = await self.batcher.submit(inputs, context, timeout_s)
        except Exception:
            self.stats.record_request(False, time.perf_counter() - start)
            raise
        self.stats.record_request(True, time.perf_counter() - start)
        return predictions

    # -- batcher threads ----------------------------------------------------------------------

    def _score(self, x: Tensor, saliency: bool) -> PipelineOutput:
        """The pipeline over ``x`` in chunks of at most ``max_batch_size`` images.

        A request larger than a micro-batch runs alone; cutting it here keeps every engine call
        within the batch sizes tuned at warm-up (no measurement ever runs on the request path)
        and bounds the engine's memory, while the request's rows still commit together.
        """
        assert self.pipeline is not None
        step = self.batching.max_batch_size
        with torch.inference_mode(False):
            if len(x) <= step and not self.batching.pad_batches:
                return self.pipeline(x, saliency=saliency)
            parts = [self._score_chunk(x[i : i + step], saliency) for i in range(0, len(x), step)]
        return parts[0] if len(parts) == 1 else PipelineOutput.concat(parts)

    def _score_chunk(self, x: Tensor, saliency: bool) -> PipelineOutput:
        """One engine call; padded with black images to ``max_batch_size`` when asked to.

        The engine's kernels and gradient strategy depend on the batch size, and max-pool
        near-ties then flip a few sign-map entries (docs/detectors.md: up to 0.015 of a CSM entry
        on ``fashion-mnist-cnn-pgd``). At one fixed size the same image gives the same numbers
        whatever its companions, measured bit for bit (``gga_lab/bench/batch_invariance.py``).
        """
        assert self.pipeline is not None
        n, size = len(x), self.batching.max_batch_size
        if not self.batching.pad_batches or n == size:
            return self.pipeline(x, saliency=saliency)
        padded = torch.cat([x, torch.zeros((size - n, *x.shape[1:]), dtype=x.dtype)])
        return self.pipeline(padded, saliency=saliency).rows(0, n)

    def _compute(self, items: Sequence[WorkItem]) -> _Computed:
        """Compute thread: score the micro-batch and cut it into requests (nothing stored yet)."""
        x = torch.cat([item.inputs for item in items])
        out = self._score(x, saliency=any(item.context.saliency for item in items))
        now = dt.datetime.now(dt.UTC)
        predictions = {}
        starts = itertools.accumulate((item.size for item in items), initial=0)
        for item, (lo, hi) in zip(items, itertools.pairwise(starts), strict=True):
            predictions[item] = Predictions(
                model=self.name,
                model_version=str(self.card.version),
                class_names=self.card.class_names,
                ids=tuple(new_id() for _ in range(item.size)),
                created_at=now,
                out=out.rows(lo, hi),
                inputs=item.inputs,
                statistic=self.statistic,
            )
        return _Computed(engine_seconds=out.engine_seconds, predictions=predictions)

    def _persist(
        self, items: Sequence[WorkItem], computed: _Computed
    ) -> list[Predictions | ServiceError]:
        """Persist thread: store the requests still in time, then hand each its predictions.

        ``items`` are the batch's requests the batcher still answers (those past their deadline
        were refused, and their rows are dropped here). They go in one transaction. If the store
        refuses it for a reason other than being unreachable, each request is stored on its own,
        so one bad row answers its own request with an error and the others are still served.
        """
        requests = [computed.predictions[item] for item in items]
        rows = [
            p.to_rows(item.context.owner, item.context.request_id)
            for item, p in zip(items, requests, strict=True)
        ]
        persist_start = time.perf_counter()
        failures = self._store(items, rows)
        stored = [n for n in range(len(items)) if n not in failures]
        if stored:
            self._observe(
                [items[n] for n in stored],
                [requests[n] for n in stored],
                computed.engine_seconds,
                time.perf_counter() - persist_start,
            )
        return [failures.get(n, requests[n]) for n in range(len(items))]

    def _store(
        self, items: Sequence[WorkItem], rows: list[list[dict[str, Any]]]
    ) -> dict[int, ServiceError]:
        """Commit every request's rows; returns the error of each request not stored, by index.

        Raises:
            StoreUnavailable: The store cannot be reached (nothing was stored).
        """
        failures: dict[int, ServiceError] = {}
        try:
            store.save_predictions(self.db, [row for request in rows for row in request])
        except Exception as err:
            if is_unavailable(err):
                self.metrics.set_store_up(False)
                raise StoreUnavailable(type(err).__name__) from err
            logger.warning(
                "model %s: batch insert refused (%s); storing request by request",
                self.name,
                type(err).__name__,
            )
            for n, request_rows in enumerate(rows):
                try:
                    store.save_predictions(self.db, request_rows)
                except Exception as item_err:
                    if is_unavailable(item_err):
                        failures[n] = StoreUnavailable(type(item_err).__name__)
                    else:
                        logger.error(
                            "model %s: request %r not stored: %s",
                            self.name,
                            items[n].context.request_id[:80],
                            item_err,
                        )
                        failures[n] = StoreRejected(type(item_err).__name__)
        self.metrics.set_store_up(True)
        return failures

    def _observe(
        self,
        items: Sequence[WorkItem],
        stored: Sequence[Predictions],
        engine_seconds: float,
        persist_s: float,
    ) -> None:
        """Metrics and statistics of the stored requests of a micro-batch."""
        waits = [item.started_at - item.enqueued_at for item in items for _ in range(item.size)]
        trust = np.concatenate([p.out.trust for p in stored])
        views = {
            view: np.concatenate([p.out.views[view] for p in stored])
            for view in stored[0].out.views
        }
        self.metrics.observe_batch(
            self.name,
            len(waits),
            waits,
            engine_seconds,
            trust[np.isfinite(trust)].tolist(),  # NaN: no detector
            np.concatenate([p.out.flagged for p in stored]).tolist(),
            {view: p.tolist() for view, p in views.items()},
        )
        self.stats.record_batch(len(waits), waits, engine_seconds, persist_s)
