"""Predict latency quantiles read back from the service's Prometheus request histogram.

``GET /v1/stats`` reports them beside the stored flag rate, so the web console's Models page can
show a model's p50 latency without a Prometheus server. The estimate is Prometheus's own
``histogram_quantile``: linear inside the bucket holding the quantile.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from prometheus_client import CollectorRegistry

HISTOGRAM = "gga_request_duration_seconds"
PREDICT_ENDPOINTS = frozenset({"/v1/models/{name}/predict", "/v2/models/{name}/infer"})
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def bucket_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The ``q`` quantile of a cumulative histogram, as Prometheus's ``histogram_quantile``.

    Args:
        q: The quantile, in [0, 1].
        buckets: ``(upper_bound, cumulative_count)`` pairs; the last bound may be ``inf``.

    Returns:
        The estimate; NaN for an empty histogram. A quantile in the ``+Inf`` bucket is the
        largest finite bound.

    Raises:
        ValueError: ``q`` outside [0, 1].
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def predict_latency_quantiles(
    registry: CollectorRegistry, model: str | None = None
) -> dict[str, float] | None:
    """p50, p90 and p99 of predict/infer request latency since the process started.

    Args:
        registry: The service's metrics registry (``ServiceMetrics.registry``).
        model: One model's requests; all models when None.

    Returns:
        Seconds by quantile name, or None when no predict request was answered yet.
    """
    cumulative: dict[float, float] = defaultdict(float)
    for family in registry.collect():
        if family.name != HISTOGRAM:
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == HISTOGRAM + "_bucket"
                and labels.get("endpoint") in PREDICT_ENDPOINTS
                and labels.get("model")
                and (model is None or labels["model"] == model)
            ):
                cumulative[float(labels["le"])] += sample.value
    if not cumulative or max(cumulative.values()) <= 0:
        return None
    pairs = list(cumulative.items())
    return {name: bucket_quantile(q, pairs) for name, q in QUANTILES.items()}
