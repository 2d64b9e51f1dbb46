"""What the console needs from the app, in process: the page and its files, /docs without a CDN,
the saliency pictures and the stats latency the API added for it."""

import base64
import io
import math
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.console import STATIC_DIR
from service.latency import bucket_quantile
from tests.service.conftest import service_settings

MODEL = "fashion-mnist-cnn"
PREDICT = f"/v1/models/{MODEL}/predict"
REPO_ROOT = Path(__file__).parents[3]
SHOE = REPO_ROOT / "examples" / "shoe.png"


@pytest.fixture(scope="module")
def client(model_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("console-api") / "gga.db"
    with TestClient(create_app(service_settings(model_repo, db))) as c:
        yield c


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_root_serves_the_console_with_a_same_origin_policy(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert '<script type="module" src="console/js/main.js">' in r.text
    js = client.get("/console/js/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert client.get("/console/contract.json").json()["responses"]
    assert client.get("/console/nothing.js").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]  # not an API route


def test_no_static_file_names_another_host() -> None:
    for path in STATIC_DIR.rglob("*"):
        if path.suffix in {".html", ".js", ".css"}:
            text = path.read_text()
            urls = re.findall(r"https?://[^\s\"')]+", text)
            # The SVG namespace is an identifier, never fetched.
            assert [u for u in urls if u != "http://www.w3.org/2000/svg"] == [], path


def test_docs_load_swagger_from_local_assets(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, page
        for url in assets:
            assert url.startswith("/docs-assets/"), f"{page} loads {url}"
            assert client.get(url).status_code == 200, url
        assert "cdn" not in html.lower()


def test_saliency_adds_input_and_top_other_classes(client: TestClient) -> None:
    png = SHOE.read_bytes()
    files = {"file": ("shoe.png", png, "image/png")}
    r = client.post(PREDICT, params={"saliency": "true", "saliency_others": 4}, files=files)
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    sal = p["saliency"]
    order = list(np.argsort(-np.asarray(p["probabilities"]), kind="stable"))
    assert sal["predicted_label"] == p["label"] == order[0]
    assert [o["label"] for o in sal["others"]] == order[1:5]
    names = client.get(f"/v1/models/{MODEL}").json()["class_names"]
    for other in sal["others"]:
        assert other["class_name"] == names[other["label"]]
        assert other["probability"] == pytest.approx(p["probabilities"][other["label"]])
        assert _png(other["map"]).size == (28, 28)
    # The fields that existed before are unchanged: the runner-up is the first other class.
    assert sal["runner_up_label"] == order[1] and sal["runner_up"] == sal["others"][0]["map"]
    seen = _png(sal["input"])
    assert seen.size == (28, 28) and seen.mode == "L"
    # The input is what the model saw: the uploaded 28x28 grey PNG itself, pixel for pixel.
    np.testing.assert_array_equal(np.asarray(seen), np.asarray(Image.open(SHOE).convert("L")))


def test_saliency_others_bounds(client: TestClient) -> None:
    files = {"file": ("shoe.png", SHOE.read_bytes(), "image/png")}
    none = client.post(PREDICT, params={"saliency": "true", "saliency_others": 0}, files=files)
    sal = none.json()["predictions"][0]["saliency"]
    assert sal["others"] == [] and sal["runner_up"]  # runner-up still there, as before
    many = client.post(PREDICT, params={"saliency": "true", "saliency_others": 50}, files=files)
    assert len(many.json()["predictions"][0]["saliency"]["others"]) == 9  # all other classes
    bad = client.post(PREDICT, params={"saliency": "true", "saliency_others": -1}, files=files)
    assert bad.status_code == 422 and "saliency_others" in bad.json()["error"]["message"]


def test_stats_report_predict_latency_quantiles(
    model_repo: Path, tmp_path: Path, fmnist_pngs: list[bytes]
) -> None:
    app = create_app(service_settings(model_repo, tmp_path / "gga.db"))
    with TestClient(app) as c:
        assert c.get("/v1/stats").json()["latency_quantiles"] is None
        for png in fmnist_pngs[:3]:
            assert c.post(PREDICT, files={"file": ("x.png", png, "image/png")}).status_code == 200
        q = c.get("/v1/stats", params={"model": MODEL}).json()["latency_quantiles"]
        assert 0 < q["p50"] <= q["p90"] <= q["p99"] <= 30
        # Other endpoints' requests (listings, stats) never count as predict latency.
        for _ in range(10):
            c.get("/v1/models")
        assert c.get("/v1/stats", params={"model": MODEL}).json()["latency_quantiles"] == q


def test_bucket_quantile_matches_prometheus() -> None:
    # histogram_quantile on buckets le=0.1: 2, le=0.5: 6, le=1: 8, +Inf: 8
    buckets = [(0.1, 2.0), (0.5, 6.0), (1.0, 8.0), (math.inf, 8.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (4 - 2) / 4)
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.1)
    assert bucket_quantile(1.0, buckets) == pytest.approx(1.0)
    assert bucket_quantile(0.99, [(0.1, 1.0), (math.inf, 2.0)]) == 0.1  # in the +Inf bucket
    assert math.isnan(bucket_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))
    with pytest.raises(ValueError, match="quantile"):
        bucket_quantile(1.5, buckets)


def test_wheel_ships_the_console(tmp_path: Path) -> None:
    """``pip install . && gga serve`` shows the page: every static file is in the wheel."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    for package in ("gga_cli", "service", "models", "detectors", "attacks"):
        shutil.copytree(
            REPO_ROOT / package,
            src / package,
            ignore=shutil.ignore_patterns("__pycache__", "zoo", "*.egg-info"),
        )
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)],
        check=True,
        timeout=600,
    )  # fmt: skip
    (wheel,) = out.glob("gga_serve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "service/console/" + p.relative_to(STATIC_DIR.parent).as_posix()
        for p in STATIC_DIR.rglob("*")
        if p.is_file()
    }
    assert expected and expected <= names, sorted(expected - names)
