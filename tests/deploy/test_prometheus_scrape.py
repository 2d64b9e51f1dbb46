"""A real Prometheus scrapes a real ``gga serve`` with the repo's scrape config and alert rules.

The target is ``gga serve`` in a subprocess on a free loopback port (``LiveServer`` of the
service tests), serving a small but real ``fashion-mnist-cnn`` with a fitted detector from a
temporary model repository. Before Prometheus starts, the test makes a few real predictions
on Fashion-MNIST test images, and one more that the per-key rate limit refuses, so every metric
family has a series and its values are known from the responses.

Prometheus (Debian's package) runs on a configuration generated from
``deploy/prometheus/prometheus.yml``: the ``gga`` job keeps its name and metrics path, its
service discovery is replaced by the server's loopback address, intervals shrink to 1 s and the
rule file points at the repo's ``alerts.yml``. The assertions go through Prometheus' own HTTP
API, beside a few on the server's ``/metrics`` body itself.
"""

import contextlib
import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import ServiceMetrics
from tests.deploy.conftest import PROMETHEUS_DIR, require_tool
from tests.deploy.test_dashboard import DASHBOARD, METRIC_NAME, expressions, family_of

MODEL = "fashion-mnist-cnn"
PREDICT = "/v1/models/{name}/predict"
# Images per predict request, sent one after another: each request is one micro-batch.
REQUEST_SIZES = (1, 4, 3)
MAX_BATCH_SIZE = 8
QUEUE_SIZE = 16
# A static key (GGA_API_KEYS) turns keys on, and with them the per-key rate limit: a bucket of
# exactly one token per predict request, refilled too slowly to matter, makes the next request
# a deterministic 429 and so a real gga_rejected_requests_total series.
API_KEY = "scrape-test-key"
# Loading torch and warming the engine up takes minutes on a shared 2-core box.
STARTUP_TIMEOUT_S = 180.0
SCRAPE_TIMEOUT_S = 20.0
RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase)\(")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except (OSError, ValueError, KeyError) as err:  # not up yet, or not answered yet
            last_error = err
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def families_in(exposition: str) -> dict[str, str]:
    """Family name as PromQL sees it -> type, for a ``/metrics`` body (like ``exported_names``).

    The parser reads the ``<name>_created`` samples prometheus_client adds beside each counter
    and histogram as gauges of their own; they are not families the service defines.
    """
    return {
        (f.name + "_total" if f.type == "counter" else f.name): f.type
        for f in text_string_to_metric_families(exposition)
        if f.name.startswith("gga_") and not f.name.endswith("_created")
    }


# ---- the scrape target ----


@dataclass
class Target:
    """The running ``gga serve`` Prometheus scrapes, and what its clients were answered."""

    port: int
    url: str
    predictions: list[dict]  # the 200 responses' predictions, in order
    rate_limited: int  # predict requests answered 429

    def metrics_text(self) -> str:
        response = httpx.get(f"{self.url}/metrics", timeout=5)
        response.raise_for_status()
        return response.text


def stop_server(server: Any) -> None:
    """SIGTERM (the service drains and exits), wait, and kill it if it does not."""
    if server.process is None:
        return
    try:
        server.stop(signal.SIGTERM, timeout_s=15)
    except subprocess.TimeoutExpired:
        server.stop(signal.SIGKILL, timeout_s=5)


@contextlib.contextmanager
def start_metrics_target(repo: Path, data_dir: Path, workdir: Path) -> Iterator[Target]:
    """Start ``gga serve`` on a free loopback port and make a few real predictions.

    Args:
        repo: Model repository holding ``MODEL`` with its detector.
        data_dir: The shared data sets (Fashion-MNIST test images are sent).
        workdir: Working directory of the server: its SQLite store and log.

    Yields:
        The ready server, after ``len(REQUEST_SIZES)`` successful predict requests and one
        refused by the rate limit.
    """
    from models.data import load_dataset
    from models.imaging import encode_png
    from tests.service.support import LiveServer

    images = load_dataset("fashion-mnist", "test", data_dir=data_dir, limit=sum(REQUEST_SIZES))
    pngs = [encode_png(x) for x in images.float()]
    server = LiveServer(
        repo,
        f"sqlite:///{workdir / 'store.db'}",
        workdir,
        GGA_API_KEYS=API_KEY,
        GGA_RATE_LIMIT="0.001",
        # One token more: the feedback that makes the gga_flag_quality_* series exist.
        GGA_RATE_LIMIT_BURST=str(len(REQUEST_SIZES) + 1),
        GGA_MAX_BATCH_SIZE=str(MAX_BATCH_SIZE),
        GGA_QUEUE_SIZE=str(QUEUE_SIZE),
    )
    try:
        server.start(timeout_s=STARTUP_TIMEOUT_S)
        url = server.url + PREDICT.format(name=MODEL)
        headers = {"X-API-Key": API_KEY}

        def predict(batch: list[bytes]) -> httpx.Response:
            files = [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(batch)]
            return httpx.post(url, files=files, headers=headers, timeout=30)

        predictions: list[dict] = []
        start = 0
        for size in REQUEST_SIZES:
            response = predict(pngs[start : start + size])
            assert response.status_code == 200, response.text
            predictions += response.json()["predictions"]
            start += size
        # One correct and one wrong at least, so every flag-quality series is there.
        feedback = [{"id": p["id"], "correct": i % 2 == 0} for i, p in enumerate(predictions)]
        response = httpx.post(
            f"{server.url}/v1/predictions/feedback",
            json={"feedback": feedback},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        refused = predict(pngs[:1])
        assert refused.status_code == 429, refused.text
        yield Target(server.port, server.url, predictions, rate_limited=1)
    finally:
        stop_server(server)


# ---- Prometheus ----


def scrape_config_for(target_port: int, tmp_path: Path) -> Path:
    """The repo's prometheus.yml with the gga job pointed at the loopback target."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gga"]
    for key in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
        del job[key]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{target_port}"]}]
    config["scrape_configs"] = [job]  # other jobs' targets do not exist here
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Prometheus:
    url: str

    def query(self, promql: str) -> dict:
        """Run an instant query; fail the test if Prometheus refuses it."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            answer = get_json(url)
        except urllib.error.HTTPError as err:
            pytest.fail(f"Prometheus refused {promql!r}: {err.read().decode()}")
        assert answer["status"] == "success", answer
        return answer["data"]

    def vector(self, promql: str) -> list[dict]:
        return self.query(promql)["result"]

    def value(self, promql: str) -> float:
        """The value of a query that must return exactly one sample."""
        result = self.vector(promql)
        assert len(result) == 1, (promql, result)
        return float(result[0]["value"][1])


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    """Resolved first, so a missing Prometheus skips before a model is built or a server runs."""
    try:
        return require_tool("prometheus")
    except pytest.skip.Exception as skip:
        print(f"SKIP: {skip}")
        raise


@pytest.fixture(scope="module")
def model_repo(
    prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path
) -> Path:
    """A repository with the service tests' small trained ``fashion-mnist-cnn`` and detector."""
    import torch

    from tests.service.support import make_model_folder

    root = tmp_path_factory.mktemp("repo")
    # Two shared cores: torch's default thread pool only oversubscribes them (as in the service
    # tests' session fixture, which does not reach this package).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make_model_folder(root, shared_data_dir, name=MODEL)
    finally:
        torch.set_num_threads(before)
    return root


@pytest.fixture(scope="module")
def target(
    model_repo: Path, shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    with start_metrics_target(
        model_repo, shared_data_dir, tmp_path_factory.mktemp("gga-serve")
    ) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, target: Target, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = scrape_config_for(target.port, tmp_path)
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(
                f"prometheus exited with {process.returncode}:\n"
                f"{(tmp_path / 'prometheus.log').read_text()[-4000:]}"
            )
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200

    try:
        wait_for("Prometheus to be ready", ready, STARTUP_TIMEOUT_S)
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus) -> Prometheus:
    """Prometheus once it has scraped the target and evaluated the rules at least once."""
    wait_for(
        "the first scrape of the gga job",
        lambda: prometheus.vector('gga_predictions_total{job="gga"}'),
        SCRAPE_TIMEOUT_S,
    )

    def rules_evaluated() -> bool:
        groups = get_json(f"{prometheus.url}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return bool(rules) and all(r.get("lastEvaluation", "").startswith("2") for r in rules)

    wait_for("the alert rules to be evaluated", rules_evaluated, SCRAPE_TIMEOUT_S)
    # Counted in the background after a scrape finds them stale: they arrive a scrape later.
    wait_for(
        "the flag-quality gauges",
        lambda: prometheus.vector('gga_flag_quality_labelled{job="gga"}'),
        SCRAPE_TIMEOUT_S,
    )
    return prometheus


def test_target_is_up(scraped: Prometheus, target: Target) -> None:
    (up,) = scraped.vector('up{job="gga"}')
    assert up["metric"]["instance"] == f"127.0.0.1:{target.port}"
    assert up["value"][1] == "1"


def test_every_gga_series_arrived(scraped: Prometheus) -> None:
    names = {s["metric"]["__name__"] for s in scraped.vector('{__name__=~"gga_.+", job="gga"}')}
    expected = set()
    for family in ServiceMetrics(CollectorRegistry()).registry.collect():
        if family.type == "counter":
            expected.add(family.name + "_total")
        elif family.type == "histogram":
            expected |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            expected.add(family.name)
    assert expected <= names, f"missing in Prometheus: {sorted(expected - names)}"


def test_the_service_exports_every_family_the_dashboard_uses(
    scraped: Prometheus, target: Target
) -> None:
    live = families_in(target.metrics_text())
    # The running service exports exactly the contract of service/metrics.py, nothing renamed.
    contract = {
        (f.name + "_total" if f.type == "counter" else f.name): f.type
        for f in ServiceMetrics(CollectorRegistry()).registry.collect()
    }
    assert live == contract
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for expr in expressions(dashboard) for name in METRIC_NAME.findall(expr)}
    assert used, "the dashboard names no gga_ metric"
    for name in sorted(used):
        family = family_of(name, live)
        assert family is not None, f"the dashboard asks for {name}, which gga serve does not export"
        series = family + "_count" if live[family] == "histogram" else family
        assert scraped.vector(f'{series}{{job="gga"}}'), f"{series} did not reach Prometheus"


def test_values_match_what_the_service_answered(scraped: Prometheus, target: Target) -> None:
    images = len(target.predictions)
    assert images == sum(REQUEST_SIZES)
    flagged = sum(p["flagged"] for p in target.predictions)
    scores = [p["trust_score"] for p in target.predictions]
    m = f'model="{MODEL}"'

    assert scraped.value(f"gga_predictions_total{{{m}}}") == images
    assert scraped.value(f"gga_flagged_predictions_total{{{m}}}") == flagged
    # One trust score per prediction, all in (0, 1], summing to what the clients received.
    assert scraped.value(f"gga_trust_score_count{{{m}}}") == images
    assert scraped.value(f'gga_trust_score_bucket{{{m}, le="1.0"}}') == images
    assert scraped.value(f"gga_trust_score_sum{{{m}}}") == pytest.approx(sum(scores), rel=1e-6)
    # Sequential requests no larger than max_batch_size: one micro-batch each.
    assert scraped.value(f"gga_batch_size_count{{{m}}}") == len(REQUEST_SIZES)
    assert scraped.value(f"gga_batch_size_sum{{{m}}}") == images
    assert scraped.value(f'gga_batch_size_bucket{{{m}, le="4.0"}}') == len(REQUEST_SIZES)
    assert scraped.value(f"gga_engine_duration_seconds_count{{{m}}}") == len(REQUEST_SIZES)
    assert scraped.value(f"gga_engine_duration_seconds_sum{{{m}}}") > 0
    assert scraped.value(f"gga_queue_wait_seconds_count{{{m}}}") == images
    predict = f'{m}, endpoint="{PREDICT}"'
    assert scraped.value(f'gga_requests_total{{{predict}, code="200"}}') == len(REQUEST_SIZES)
    assert scraped.value(f'gga_requests_total{{{predict}, code="429"}}') == target.rate_limited
    assert scraped.value(f"gga_request_duration_seconds_count{{{predict}}}") == (
        len(REQUEST_SIZES) + target.rate_limited
    )
    assert scraped.value(f'gga_rejected_requests_total{{{m}, reason="rate_limited"}}') == (
        target.rate_limited
    )
    assert scraped.value(f"gga_queue_depth{{{m}}}") == 0
    assert scraped.value(f"gga_queue_capacity{{{m}}}") == QUEUE_SIZE
    (info,) = scraped.vector("gga_model_info")
    assert info["value"][1] == "1"
    assert info["metric"]["model"] == MODEL
    assert info["metric"]["version"] == target.predictions[0]["model_version"]
    assert info["metric"]["detector"] == "multi-view"
    assert info["metric"]["alpha"] == "0.05"


def test_routes_that_name_no_model_are_labelled_model_empty(
    scraped: Prometheus, target: Target
) -> None:
    """Health and metrics count under model="", which the alerts and panels exclude by it."""
    # On the wire: the label is present and empty (not missing, not "unknown").
    health = [
        s
        for f in text_string_to_metric_families(target.metrics_text())
        if f.name == "gga_requests"
        for s in f.samples
        if s.labels.get("endpoint") in ("/v2/health/ready", "/metrics")
    ]
    assert {s.labels["endpoint"] for s in health} == {"/v2/health/ready", "/metrics"}
    assert all(s.labels["model"] == "" for s in health), health
    # In Prometheus: model="" selects exactly the model-less routes, model!="" only the model's.
    # A scrape is counted once answered, so the first scrape to show one is the second.
    wait_for(
        "a scrape that counts the one before it",
        lambda: scraped.vector('gga_requests_total{model="", endpoint="/metrics"}'),
        SCRAPE_TIMEOUT_S,
    )
    empty = scraped.vector('gga_requests_total{model=""}')
    assert {s["metric"]["endpoint"] for s in empty} >= {"/v2/health/ready", "/metrics"}
    assert not any("{name}" in s["metric"]["endpoint"] for s in empty), empty
    named = scraped.vector('gga_request_duration_seconds_count{model!=""}')
    assert {(s["metric"]["model"], s["metric"]["endpoint"]) for s in named} == {(MODEL, PREDICT)}
    # The dashboard's model variable offers served models only.
    assert {s["metric"]["model"] for s in scraped.vector("gga_model_info")} == {MODEL}


def test_alert_rules_loaded_and_healthy(scraped: Prometheus) -> None:
    groups = get_json(f"{scraped.url}/api/v1/rules")["data"]["groups"]
    loaded = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in loaded]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == {r["alert"] for g in loaded for r in g["rules"]}
    for rule in rules:
        assert rule["type"] == "alerting"
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    # A few normal predictions and one 429: nothing is firing or pending.
    assert get_json(f"{scraped.url}/api/v1/alerts")["data"]["alerts"] == []


def test_every_dashboard_expression_runs(scraped: Prometheus) -> None:
    """Grafana's panels are valid PromQL for this Prometheus, and the panels have data."""
    dashboard = json.loads(DASHBOARD.read_text())
    empty = []
    for expr in expressions(dashboard):
        if expr.startswith("label_values("):  # a Grafana function, not PromQL
            metric = expr.removeprefix("label_values(").split(",")[0]
            assert scraped.vector(metric), expr
            continue
        # Grafana's variables, as Grafana substitutes them for "All" and a 1 s scrape interval.
        promql = expr.replace("$__rate_interval", "1m").replace("$model", ".*")
        result = scraped.query(promql)["result"]
        # Gauges have data after one scrape; rates need two and are only checked to parse.
        if "gga_" in promql and not RANGE_FUNCTION.search(promql) and not result:
            empty.append(expr)
    assert not empty, f"dashboard expressions without data: {empty}"
