"""The Grafana dashboard and its provisioning: every PromQL expression names exported metrics."""

import json
import re
from collections.abc import Iterator

import pytest
import yaml
from prometheus_client import CollectorRegistry

from service.metrics import ServiceMetrics
from tests.deploy.conftest import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gga.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_NAME = re.compile(r"\bgga_[A-Za-z0-9_]*")


def exported_names() -> dict[str, str]:
    """Family name as PromQL sees it -> type, for everything ServiceMetrics registers."""
    names = {}
    for family in ServiceMetrics(CollectorRegistry()).registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        names[name] = family.type
    return names


def family_of(identifier: str, exported: dict[str, str]) -> str | None:
    """The exported family ``identifier`` refers to, or None if it refers to none."""
    if identifier in exported:
        return identifier
    for suffix in HISTOGRAM_SUFFIXES:
        base = identifier.removesuffix(suffix)
        if base != identifier and exported.get(base) == "histogram":
            return base
    return None


def expressions(dashboard: dict) -> Iterator[str]:
    """Every PromQL string of the dashboard: panel targets, template queries, annotations."""

    def panels(items: list[dict]) -> Iterator[dict]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))  # rows nest panels

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        yield query.get("query", "") if isinstance(query, dict) else str(query or "")
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            yield annotation["expr"]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_every_expression_names_only_exported_metrics(dashboard: dict) -> None:
    exported = exported_names()
    unknown = {
        (name, expr)
        for expr in expressions(dashboard)
        for name in METRIC_NAME.findall(expr)
        if family_of(name, exported) is None
    }
    assert not unknown, f"dashboard asks for metrics the service does not export: {unknown}"


def test_the_check_catches_a_misspelt_metric() -> None:
    exported = exported_names()
    bad = {"panels": [{"targets": [{"expr": "rate(gga_request_total[5m])"}]}]}
    names = [n for e in expressions(bad) for n in METRIC_NAME.findall(e)]
    assert names == ["gga_request_total"]
    assert family_of("gga_request_total", exported) is None
    # Suffixes only resolve for histograms: a gauge has no _bucket series.
    assert family_of("gga_queue_depth_bucket", exported) is None
    assert family_of("gga_trust_score_bucket", exported) == "gga_trust_score"


def test_dashboard_shows_every_required_view(dashboard: dict) -> None:
    exported = exported_names()
    used = {
        family_of(name, exported)
        for expr in expressions(dashboard)
        for name in METRIC_NAME.findall(expr)
    }
    # requests and errors by status, latency, batch size, queue depth, engine time, trust-score
    # distribution, flag rate per model (flagged over all predictions).
    required = {
        "gga_requests_total",
        "gga_request_duration_seconds",
        "gga_batch_size",
        "gga_queue_depth",
        "gga_engine_duration_seconds",
        "gga_trust_score",
        "gga_flagged_predictions_total",
        "gga_predictions_total",
    }
    assert required <= used
    exprs = list(expressions(dashboard))
    for q in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({q}, sum by (le) (rate(gga_request_duration" in e
                   for e in exprs), q  # fmt: skip
    assert any(p["type"] == "heatmap" and "gga_trust_score_bucket" in p["targets"][0]["expr"]
               for p in dashboard["panels"])  # fmt: skip


def test_panels_use_the_provisioned_datasource(dashboard: dict) -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "gga.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
