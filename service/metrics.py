"""Every Prometheus metric of the service, on the service's own registry.

The names below are a contract with ``deploy/`` (alert rules, Grafana dashboard) and
``docs/operations.md``: change them only together. Conventions follow the Prometheus naming
guide: the ``gga_`` prefix, base units (seconds), ``_total`` counters and bounded labels (the
model name, a route template rather than a raw path, an HTTP status code, a fixed reason).

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> metrics = ServiceMetrics(CollectorRegistry())
    >>> metrics.observe_request("fashion-mnist-cnn", "/v1/models/{name}/predict", 200, 0.05)
    >>> body, content_type = render(metrics.registry)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Request latency includes queueing and the gradient engine; the client default stops at 10 s,
# too short for a large CIFAR batch on CPU, so the buckets reach 30 s.
REQUEST_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
)  # fmt: skip
# The batcher's wait is bounded by max_latency_ms (milliseconds) unless the worker is saturated.
QUEUE_WAIT_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# One micro-batch: one forward pass plus C vector-Jacobian products plus the detector.
ENGINE_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(9))  # 1, 2, ..., 256
# Trust scores lie in (0, 1]; the fine low buckets resolve the flagged tail.
TRUST_SCORE_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
)  # fmt: skip


# The gga_flag_quality_* gauges, by FlagQuality field: what the operator's alert compares.
FLAG_QUALITY_GAUGES: dict[str, str] = {
    "labelled": "Predictions with feedback in the window.",
    "precision": "Of the flagged labelled predictions, the share that were wrong.",
    "recall": "Of the wrong labelled predictions, the share that were flagged.",
    "false_alarm_rate": "Of the correct labelled predictions, the share that were flagged.",
    "false_alarm_low": "Low end of the 95% Wilson interval of the false-alarm rate.",
    "false_alarm_high": "High end of the 95% Wilson interval of the false-alarm rate.",
    "alpha": "The model's calibrated false-alarm rate on clean traffic.",
}


class RejectReason(StrEnum):
    """Why a request was refused with nothing stored (the ``reason`` label's values)."""

    QUEUE_FULL = "queue_full"
    OVERLOADED = "overloaded"
    RATE_LIMITED = "rate_limited"
    DEADLINE = "deadline"


class ServiceMetrics:
    """The service's Prometheus collectors, registered on one registry.

    Build one per application (``create_app``) and one per test, each on a fresh
    ``CollectorRegistry``; nothing is registered on prometheus_client's global registry, so two
    apps in one process never collide.

    Args:
        registry: Registry to register on; a new empty one when None.

    Attributes:
        registry: The registry holding every collector below; pass it to :func:`render`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gga_requests",
            "HTTP requests answered, by model, route template and status code.",
            ("model", "endpoint", "code"),
            registry=r,
        )
        self.request_duration = Histogram(
            "gga_request_duration_seconds",
            "Time from receiving a request to sending its response.",
            ("model", "endpoint"),
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "gga_queue_wait_seconds",
            "Time an image waited in the batcher's queue before its micro-batch started.",
            ("model",),
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "gga_batch_size",
            "Images per micro-batch computed by the gradient engine.",
            ("model",),
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.engine_duration = Histogram(
            "gga_engine_duration_seconds",
            "Gradient engine plus detector time per micro-batch.",
            ("model",),
            buckets=ENGINE_BUCKETS,
            registry=r,
        )
        self.trust_score = Histogram(
            "gga_trust_score",
            "Calibrated trust score of each prediction, in (0, 1].",
            ("model",),
            buckets=TRUST_SCORE_BUCKETS,
            registry=r,
        )
        self.view_trust = Histogram(
            "gga_view_trust",
            "Each trust view's own p-value per prediction, in [0, 1]: which view raises flags.",
            ("model", "view"),
            buckets=TRUST_SCORE_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "gga_predictions", "Predictions made (one per image).", ("model",), registry=r
        )
        self.flagged_predictions = Counter(
            "gga_flagged_predictions",
            "Predictions whose trust score fell below the model's threshold.",
            ("model",),
            registry=r,
        )
        self.queue_depth = Gauge(
            "gga_queue_depth",
            "Images waiting in the model's batcher queue.",
            ("model",),
            registry=r,
        )
        self.queue_capacity = Gauge(
            "gga_queue_capacity",
            "Images the model's batcher queue holds before refusing with 503.",
            ("model",),
            registry=r,
        )
        self.model_info = Gauge(
            "gga_model_info",
            "Always 1; labels name the served model version, its detector and calibration alpha.",
            ("model", "version", "detector", "alpha"),
            registry=r,
        )
        self.rejected_requests = Counter(
            "gga_rejected_requests",
            "Requests refused, nothing stored: queue_full, overloaded, rate_limited or deadline.",
            ("model", "reason"),
            registry=r,
        )
        self.batch_failures = Counter(
            "gga_batch_failures",
            "Micro-batches whose compute or persist stage failed for every request in them.",
            ("model", "stage"),
            registry=r,
        )
        self._declare_store_gauges(r)

    def _declare_store_gauges(self, r: CollectorRegistry) -> None:
        """The gauges read from the result store rather than counted on the request path."""
        self.store_up = Gauge(
            "gga_store_up",
            "1 when the last use of the result store succeeded, 0 when it could not be reached.",
            registry=r,
        )
        # The flag's quality on labelled traffic (service/flag_quality.py refreshes them in the
        # background; a ratio without a denominator is NaN).
        self.flag_quality = {
            field: Gauge(f"gga_flag_quality_{field}", help_text, ("model", "window"), registry=r)
            for field, help_text in FLAG_QUALITY_GAUGES.items()
        }

    def observe_request(self, model: str, endpoint: str, code: int | str, seconds: float) -> None:
        """Count one answered HTTP request and record its latency.

        Args:
            model: Model name, or ``""`` for routes that name no model (health, listings).
            endpoint: The route template, e.g. ``"/v1/models/{name}/predict"``; never the raw
                path, whose model names and ids would make the label unbounded.
            code: HTTP status code.
            seconds: Time from receipt to response.
        """
        self.requests.labels(model=model, endpoint=endpoint, code=str(int(code))).inc()
        self.request_duration.labels(model=model, endpoint=endpoint).observe(seconds)

    def observe_batch(
        self,
        model: str,
        size: int,
        queue_waits: Iterable[float],
        engine_seconds: float,
        trust_scores: Iterable[float],
        flagged: Iterable[bool],
        view_p_values: Mapping[str, Iterable[float]] | None = None,
    ) -> None:
        """Record one computed micro-batch.

        Args:
            model: Model name.
            size: Images in the micro-batch.
            queue_waits: Seconds each image waited in the queue.
            engine_seconds: Gradient engine plus detector time for the whole micro-batch.
            trust_scores: The trust score of each image.
            flagged: Whether each image was flagged.
            view_p_values: Each trust view's p-value of each image, by view name.

        Raises:
            ValueError: If ``size`` is below 1 or ``engine_seconds`` is negative.
        """
        if size < 1:
            raise ValueError(f"a micro-batch holds at least one image, got size={size}")
        if engine_seconds < 0:
            raise ValueError(f"engine_seconds must be >= 0, got {engine_seconds}")
        self.batch_size.labels(model=model).observe(size)
        self.engine_duration.labels(model=model).observe(engine_seconds)
        wait_hist = self.queue_wait.labels(model=model)
        for wait in queue_waits:
            wait_hist.observe(wait)
        score_hist = self.trust_score.labels(model=model)
        for score in trust_scores:
            score_hist.observe(score)
        for view, p_values in (view_p_values or {}).items():
            view_hist = self.view_trust.labels(model=model, view=view)
            for p in p_values:
                view_hist.observe(p)
        self.predictions.labels(model=model).inc(size)
        n_flagged = sum(1 for f in flagged if f)
        # inc(0) still creates the child, so the flag-rate ratio has a series for every model.
        self.flagged_predictions.labels(model=model).inc(n_flagged)

    def declare_batch_failures(self, model: str) -> None:
        """Create the failure counters of ``model`` at 0: ``increase()`` has a series at once."""
        for stage in ("compute", "persist"):
            self.batch_failures.labels(model=model, stage=stage).inc(0)

    def observe_batch_failure(self, model: str, stage: str) -> None:
        """Count a micro-batch whose ``stage`` (``compute`` or ``persist``) failed entirely."""
        if stage not in ("compute", "persist"):
            raise ValueError(f"stage must be 'compute' or 'persist', got {stage!r}")
        self.batch_failures.labels(model=model, stage=stage).inc()

    def set_store_up(self, up: bool) -> None:
        """Record whether the result store answered its last use."""
        self.store_up.set(1 if up else 0)

    def set_queue_depth(self, model: str, depth: int) -> None:
        """Set the number of images waiting in ``model``'s queue."""
        self.queue_depth.labels(model=model).set(depth)

    def set_queue_capacity(self, model: str, capacity: int) -> None:
        """Set how many images ``model``'s queue holds (the saturation alert divides by it)."""
        self.queue_capacity.labels(model=model).set(capacity)

    def set_model_info(self, model: str, version: str, detector: str, alpha: float | None) -> None:
        """Publish the served model's identity; the previous version's series is removed.

        Args:
            model: Model name.
            version: Model version from its card.
            detector: Trust scorer name, e.g. ``"loda"``.
            alpha: The calibration's false-flag rate on clean data (None: no detector, the
                label is empty).
        """
        self.clear_model(model, info_only=True)
        self.model_info.labels(
            model=model,
            version=str(version),
            detector=detector,
            alpha="" if alpha is None else f"{alpha:g}",
        ).set(1)

    def set_flag_quality(
        self, values: Mapping[tuple[str, str], Mapping[str, float | None]]
    ) -> None:
        """Replace every ``gga_flag_quality_*`` series with ``values``.

        Args:
            values: By ``(model, window)``, each gauge's value by :data:`FLAG_QUALITY_GAUGES`
                field; None (no alpha without a detector) leaves that series out.
        """
        for field, gauge in self.flag_quality.items():
            gauge.clear()  # models and windows that have no labelled rows any more
            for (model, window), measured in values.items():
                value = measured.get(field)
                if value is not None:
                    gauge.labels(model=model, window=window).set(value)

    def observe_rejection(self, model: str, reason: RejectReason | str) -> None:
        """Count one request refused with nothing stored (``deadline``: possibly after computing).

        Args:
            model: Model name.
            reason: One of :class:`RejectReason`'s values.

        Raises:
            ValueError: If ``reason`` is not a :class:`RejectReason` value (it would make the
                label unbounded).
        """
        try:
            value = RejectReason(reason).value
        except ValueError as err:
            allowed = ", ".join(r.value for r in RejectReason)
            raise ValueError(f"unknown rejection reason {reason!r}; use one of: {allowed}") from err
        self.rejected_requests.labels(model=model, reason=value).inc()

    def clear_model(self, model: str, *, info_only: bool = False) -> None:
        """Drop ``model``'s info series (and, unless ``info_only``, its queue gauges).

        Call it when a model is unloaded, so dashboards stop showing a stale queue or version.

        Args:
            model: Model name.
            info_only: Only remove the ``gga_model_info`` series.
        """
        # Gauge.remove needs the full label tuple and prometheus_client has no public listing of
        # a metric's children, so read its private map to find those carrying this model.
        for labels in list(self.model_info._metrics):
            if labels[0] == model:
                self.model_info.remove(*labels)
        if not info_only:
            for gauge in (self.queue_depth, self.queue_capacity):
                if (model,) in gauge._metrics:
                    gauge.remove(model)


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """Serialise a registry for a ``/metrics`` response.

    Args:
        registry: Usually ``ServiceMetrics.registry``.

    Returns:
        The body in the Prometheus text exposition format and its ``Content-Type``.
    """
    return generate_latest(registry), CONTENT_TYPE_LATEST
