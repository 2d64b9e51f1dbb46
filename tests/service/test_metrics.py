"""service.metrics: names, labels and values on a fresh registry, and a parseable /metrics body."""

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import (
    BATCH_SIZE_BUCKETS,
    TRUST_SCORE_BUCKETS,
    RejectReason,
    ServiceMetrics,
    render,
)

MODEL = "fashion-mnist-cnn"
PREDICT = "/v1/models/{name}/predict"

# The fixed contract: family name as exposed (counters without _total), type and label names.
EXPECTED = {
    "gga_requests": ("counter", {"model", "endpoint", "code"}),
    "gga_request_duration_seconds": ("histogram", {"model", "endpoint"}),
    "gga_queue_wait_seconds": ("histogram", {"model"}),
    "gga_batch_size": ("histogram", {"model"}),
    "gga_engine_duration_seconds": ("histogram", {"model"}),
    "gga_trust_score": ("histogram", {"model"}),
    "gga_view_trust": ("histogram", {"model", "view"}),
    "gga_predictions": ("counter", {"model"}),
    "gga_flagged_predictions": ("counter", {"model"}),
    "gga_queue_depth": ("gauge", {"model"}),
    "gga_queue_capacity": ("gauge", {"model"}),
    "gga_model_info": ("gauge", {"model", "version", "detector", "alpha"}),
    "gga_rejected_requests": ("counter", {"model", "reason"}),
    "gga_batch_failures": ("counter", {"model", "stage"}),
    "gga_store_up": ("gauge", set()),
    "gga_flag_quality_labelled": ("gauge", {"model", "window"}),
    "gga_flag_quality_precision": ("gauge", {"model", "window"}),
    "gga_flag_quality_recall": ("gauge", {"model", "window"}),
    "gga_flag_quality_false_alarm_rate": ("gauge", {"model", "window"}),
    "gga_flag_quality_false_alarm_low": ("gauge", {"model", "window"}),
    "gga_flag_quality_false_alarm_high": ("gauge", {"model", "window"}),
    "gga_flag_quality_alpha": ("gauge", {"model", "window"}),
}


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics(CollectorRegistry())


def value(m: ServiceMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def exercise(m: ServiceMetrics) -> None:
    """Touch every collector once, so every family has a sample."""
    m.observe_request(MODEL, PREDICT, 200, 0.12)
    m.observe_batch(
        MODEL, 3, [0.001, 0.002, 0.003], 0.05, [0.9, 0.5, 0.02], [False, False, True],
        {"gga-csm": [0.8, 0.4, 0.01]},
    )  # fmt: skip
    m.set_queue_depth(MODEL, 4)
    m.set_queue_capacity(MODEL, 64)
    m.set_model_info(MODEL, "1.0.0", "loda", 0.05)
    m.observe_rejection(MODEL, RejectReason.QUEUE_FULL)
    m.observe_batch_failure(MODEL, "persist")
    m.set_store_up(True)


def parse(m: ServiceMetrics) -> dict:
    body, content_type = render(m.registry)
    assert content_type.startswith("text/plain")
    families = text_string_to_metric_families(body.decode())
    # prometheus_client adds a "<name>_created" gauge beside each counter and histogram.
    return {f.name: f for f in families if not f.name.endswith("_created")}


def test_render_exposes_every_contract_name_type_and_label(metrics: ServiceMetrics) -> None:
    exercise(metrics)
    families = parse(metrics)
    assert set(families) == set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        family = families[name]
        assert family.type == kind, name
        for sample in family.samples:
            # Histogram buckets add "le"; everything else carries exactly the contract labels.
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)


def test_counters_are_exposed_with_total_suffix(metrics: ServiceMetrics) -> None:
    exercise(metrics)
    body = render(metrics.registry)[0].decode()
    for name in ("gga_requests_total", "gga_predictions_total", "gga_flagged_predictions_total",
                 "gga_rejected_requests_total"):  # fmt: skip
        assert f"\n{name}{{" in body


def test_fresh_registries_are_independent_and_global_registry_untouched() -> None:
    before = {m.name for m in REGISTRY.collect()}
    first, second = ServiceMetrics(), ServiceMetrics()
    first.observe_request(MODEL, PREDICT, 200, 0.1)
    assert value(second, "gga_requests_total", model=MODEL, endpoint=PREDICT, code="200") is None
    assert not any(m.name.startswith("gga_") for m in REGISTRY.collect())
    assert {m.name for m in REGISTRY.collect()} == before


def test_observe_request_counts_by_code_and_times(metrics: ServiceMetrics) -> None:
    metrics.observe_request(MODEL, PREDICT, 200, 0.02)
    metrics.observe_request(MODEL, PREDICT, 200, 0.3)
    metrics.observe_request(MODEL, PREDICT, "503", 0.001)
    assert value(metrics, "gga_requests_total", model=MODEL, endpoint=PREDICT, code="200") == 2
    assert value(metrics, "gga_requests_total", model=MODEL, endpoint=PREDICT, code="503") == 1
    labels = {"model": MODEL, "endpoint": PREDICT}
    assert value(metrics, "gga_request_duration_seconds_count", **labels) == 3
    assert value(metrics, "gga_request_duration_seconds_sum", **labels) == pytest.approx(0.321)
    # 0.02 and 0.001 fall at or under the 0.025 s bucket, 0.3 does not.
    assert value(metrics, "gga_request_duration_seconds_bucket", le="0.025", **labels) == 2
    # The buckets reach 30 s: a slow CPU batch is still resolved, not lumped into +Inf.
    metrics.observe_request(MODEL, PREDICT, 200, 25.0)
    assert value(metrics, "gga_request_duration_seconds_bucket", le="30.0", **labels) == 4


def test_observe_batch_moves_every_batch_metric(metrics: ServiceMetrics) -> None:
    metrics.observe_batch(MODEL, 4, [0.01] * 4, 0.2, [0.95, 0.7, 0.04, 0.008], [0, 0, 1, 1])
    metrics.observe_batch(MODEL, 1, [0.5], 0.05, [0.6], [False])
    m = {"model": MODEL}
    assert value(metrics, "gga_batch_size_count", **m) == 2
    assert value(metrics, "gga_batch_size_sum", **m) == 5
    assert value(metrics, "gga_batch_size_bucket", le="1.0", **m) == 1
    assert value(metrics, "gga_batch_size_bucket", le="4.0", **m) == 2
    assert value(metrics, "gga_queue_wait_seconds_count", **m) == 5
    assert value(metrics, "gga_queue_wait_seconds_sum", **m) == pytest.approx(0.54)
    assert value(metrics, "gga_engine_duration_seconds_sum", **m) == pytest.approx(0.25)
    assert value(metrics, "gga_trust_score_count", **m) == 5
    assert value(metrics, "gga_trust_score_bucket", le="0.01", **m) == 1
    assert value(metrics, "gga_trust_score_bucket", le="0.05", **m) == 2
    assert value(metrics, "gga_predictions_total", **m) == 5
    assert value(metrics, "gga_flagged_predictions_total", **m) == 2


def test_each_view_gets_its_own_trust_histogram(metrics: ServiceMetrics) -> None:
    views = {"gga-csm": [0.5, 0.002], "knn": [0.9, 0.3]}
    metrics.observe_batch(MODEL, 2, [0.0, 0.0], 0.01, [0.6, 0.01], [False, True], views)
    assert value(metrics, "gga_view_trust_count", model=MODEL, view="gga-csm") == 2
    assert value(metrics, "gga_view_trust_bucket", le="0.01", model=MODEL, view="gga-csm") == 1
    assert value(metrics, "gga_view_trust_bucket", le="0.01", model=MODEL, view="knn") == 0


def test_flagged_counter_exists_at_zero_after_a_clean_batch(metrics: ServiceMetrics) -> None:
    # The flag-rate alert divides flagged by predictions; a missing series would hide the model.
    metrics.observe_batch(MODEL, 2, [0.0, 0.0], 0.01, [0.9, 0.8], [False, False])
    assert value(metrics, "gga_flagged_predictions_total", model=MODEL) == 0


def test_bucket_layouts_are_the_documented_ones(metrics: ServiceMetrics) -> None:
    assert BATCH_SIZE_BUCKETS == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert TRUST_SCORE_BUCKETS[:3] == (0.01, 0.05, 0.1)
    assert TRUST_SCORE_BUCKETS[-1] == 1.0


@pytest.mark.parametrize(
    ("size", "engine_seconds", "match"),
    [(0, 0.1, "at least one image"), (2, -1.0, "engine_seconds must be >= 0")],
)
def test_observe_batch_rejects_impossible_batches(
    metrics: ServiceMetrics, size: int, engine_seconds: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        metrics.observe_batch(MODEL, size, [], engine_seconds, [], [])


def test_gauges_set_and_clear(metrics: ServiceMetrics) -> None:
    metrics.set_queue_depth(MODEL, 7)
    metrics.set_queue_capacity(MODEL, 64)
    assert value(metrics, "gga_queue_depth", model=MODEL) == 7
    metrics.set_queue_depth(MODEL, 0)
    assert value(metrics, "gga_queue_depth", model=MODEL) == 0
    assert value(metrics, "gga_queue_capacity", model=MODEL) == 64
    metrics.set_model_info(MODEL, "1.0.0", "loda", 0.05)
    metrics.clear_model(MODEL)
    assert value(metrics, "gga_queue_depth", model=MODEL) is None
    assert value(metrics, "gga_queue_capacity", model=MODEL) is None
    info = {"model": MODEL, "version": "1.0.0", "detector": "loda", "alpha": "0.05"}
    assert value(metrics, "gga_model_info", **info) is None


def test_model_info_keeps_only_the_current_version(metrics: ServiceMetrics) -> None:
    metrics.set_model_info(MODEL, "1.0.0", "loda", 0.05)
    metrics.set_model_info("mnist-lenet-low", "1.0.0", "loda", 0.01)
    metrics.set_model_info(MODEL, "1.1.0", "loda", 0.05)
    old = {"model": MODEL, "version": "1.0.0", "detector": "loda", "alpha": "0.05"}
    new = {**old, "version": "1.1.0"}
    other = {"model": "mnist-lenet-low", "version": "1.0.0", "detector": "loda", "alpha": "0.01"}
    assert value(metrics, "gga_model_info", **old) is None
    assert value(metrics, "gga_model_info", **new) == 1
    assert value(metrics, "gga_model_info", **other) == 1


def test_rejections_count_by_reason_and_refuse_unknown_reasons(metrics: ServiceMetrics) -> None:
    metrics.observe_rejection(MODEL, "queue_full")
    metrics.observe_rejection(MODEL, RejectReason.DEADLINE)
    metrics.observe_rejection(MODEL, RejectReason.DEADLINE)
    assert value(metrics, "gga_rejected_requests_total", model=MODEL, reason="queue_full") == 1
    assert value(metrics, "gga_rejected_requests_total", model=MODEL, reason="deadline") == 2
    with pytest.raises(ValueError, match="queue_full, overloaded, rate_limited, deadline"):
        metrics.observe_rejection(MODEL, "oops")
