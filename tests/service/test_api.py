"""The HTTP API in process (TestClient): every endpoint and every bad input with its status."""

import base64
import io
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.store import Database
from tests.service.conftest import service_settings

MODEL = "fashion-mnist-cnn"
PREDICT = f"/v1/models/{MODEL}/predict"


@pytest.fixture(scope="module")
def client(model_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("api") / "gga.db"
    app = create_app(service_settings(model_repo, db, max_body_bytes=200_000, max_pixels=100_000))
    with TestClient(app) as c:
        yield c


def _files(pngs: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]


def test_predict_multipart_in_order(client: TestClient, fmnist_pngs: list[bytes]) -> None:
    r = client.post(PREDICT, files=_files(fmnist_pngs[:3]))
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3
    for p in preds:
        assert p["model"] == MODEL and p["model_version"] == "0.0.1-test"
        assert 0 < p["trust_score"] <= 1 and isinstance(p["flagged"], bool)
        assert (
            p["class_name"] == client.get(f"/v1/models/{MODEL}").json()["class_names"][p["label"]]
        )
        assert abs(sum(p["probabilities"]) - 1) < 1e-4 and len(p["probabilities"]) == 10
    # Order is the upload order: each image alone gives the same answer as in the batch.
    for png, p in zip(fmnist_pngs[:3], preds, strict=True):
        alone = client.post(PREDICT, files=_files([png])).json()["predictions"][0]
        assert alone["label"] == p["label"]
        np.testing.assert_allclose(alone["probabilities"], p["probabilities"], atol=1e-5)


def test_all_input_forms_agree(client: TestClient, fmnist_pngs, fmnist_test) -> None:
    png = fmnist_pngs[5]
    x = fmnist_test.float()[5]  # (1, 28, 28)
    bodies = [
        {"files": _files([png])},
        {"json": {"images": [base64.b64encode(png).decode()]}},
        {"json": {"tensor": x.tolist()}},  # (C, H, W)
        {"json": {"tensor": x[0].tolist()}},  # (H, W)
        {"json": {"tensor": x[None].tolist()}},  # (N, C, H, W)
    ]
    probs = []
    for body in bodies:
        r = client.post(PREDICT, **body)
        assert r.status_code == 200, r.text
        probs.append(r.json()["predictions"][0]["probabilities"])
    for p in probs[1:]:
        np.testing.assert_allclose(p, probs[0], atol=1e-5)


def test_explain_and_saliency(client: TestClient, fmnist_pngs) -> None:
    r = client.post(PREDICT + "?explain=true&saliency=true", files=_files(fmnist_pngs[:1]))
    p = r.json()["predictions"][0]
    ex = p["explanation"]
    assert len(ex["features"]) == 10 and "s1_mean" in ex["features"]
    csm = np.asarray(ex["csm"])
    assert csm.shape == (10, 10) and np.allclose(np.diag(csm), 1, atol=1e-4)
    assert np.allclose(csm, csm.T, atol=1e-5)
    # Each fused view's own p-value, named as the model endpoint lists them.
    detector = client.get("/v1/models/fashion-mnist-cnn").json()["detector"]
    assert set(ex["views"]) == set(detector["views"]) and ex["fusion"] == detector["fusion"]
    for name, view in ex["views"].items():
        assert 0 < view["p_value"] <= 1 and view["title"] == detector["view_titles"][name]
    assert detector["calibration"]["n"] == detector["n_calibration"] > 0
    image = Image.open(io.BytesIO(base64.b64decode(p["saliency"]["predicted"])))
    assert image.size == (28, 28)
    assert set(np.unique(np.asarray(image))) <= {0, 127, 128, 255}
    assert p["saliency"]["runner_up_label"] != p["label"]
    plain = client.post(PREDICT, files=_files(fmnist_pngs[:1])).json()["predictions"][0]
    assert plain["explanation"] is None and plain["saliency"] is None


def test_explanations_and_pngs_are_rendered_on_the_decode_pool(
    client: TestClient, fmnist_pngs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rendered on the persist thread, they held up the next micro-batch's commit.
    from service import saliency
    from service.protocol import v1_outputs

    threads: dict[str, set[str]] = {"png": set(), "explanation": set()}

    def recorded(kind: str, real):
        def call(*args, **kwargs):
            threads[kind].add(threading.current_thread().name)
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(saliency, "encode_png", recorded("png", saliency.encode_png))
    monkeypatch.setattr(
        v1_outputs, "_explanation", recorded("explanation", v1_outputs._explanation)
    )
    r = client.post(PREDICT + "?explain=true&saliency=true", files=_files(fmnist_pngs[:2]))
    assert r.status_code == 200, r.text
    assert threads["png"] and threads["explanation"]
    names = threads["png"] | threads["explanation"]
    assert all(name.startswith("decode") for name in names), names


def test_resize_and_rgb_are_converted(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (56, 40), (200, 10, 10)).save(buf, format="JPEG")
    r = client.post(PREDICT, files=[("file", ("x.jpg", buf.getvalue(), "image/jpeg"))])
    assert r.status_code == 200, r.text


def test_stored_predictions_query_and_pagination(client: TestClient, fmnist_pngs) -> None:
    made = client.post(PREDICT, files=_files(fmnist_pngs[10:15])).json()["predictions"]
    one = client.get(f"/v1/predictions/{made[0]['id']}").json()
    assert one["id"] == made[0]["id"] and one["label"] == made[0]["label"]
    assert one["trust_score"] == pytest.approx(made[0]["trust_score"])
    assert len(one["features"]) == 10
    ids, cursor = [], None
    while True:
        params = {"model": MODEL, "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/predictions", params=params).json()
        ids += [p["id"] for p in page["predictions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids))
    assert {p["id"] for p in made} <= set(ids)
    flagged = client.get("/v1/predictions", params={"flagged": True, "limit": 500}).json()
    assert all(p["flagged"] for p in flagged["predictions"])
    since = made[0]["created_at"]
    recent = client.get("/v1/predictions", params={"since": since, "limit": 500}).json()
    assert {p["id"] for p in made} <= {p["id"] for p in recent["predictions"]}


def test_models_and_stats(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    assert models["default_model"] == MODEL
    info = models["models"][0]
    detector = info["detector"]
    assert info["ready"] and detector["kind"] == "multi-view" and detector["alpha"] == 0.05
    # The fixture's scorer is fitted by `gga fit`'s own code; it names the views it fuses.
    assert detector["views"] and set(detector["views"]) <= set(detector["view_titles"])
    assert detector["fusion"] in {"fisher", "cauchy", "tippett", "logistic", "single"}
    client.post(PREDICT, json={"tensor": np.zeros((2, 1, 28, 28)).tolist()})
    stats = client.get("/v1/stats", params={"model": MODEL, "window": "1h"}).json()
    assert stats["count"] >= 2 and 0 <= stats["flag_rate"] <= 1
    q = stats["trust_quantiles"]
    assert 0 < q["p05"] <= q["p50"] <= q["p95"] <= 1


def test_v2_metadata_health_and_json_infer(client: TestClient, fmnist_test) -> None:
    assert client.get("/v2").json()["extensions"] == [
        "binary_tensor_data",
        "model_configuration",
        "statistics",
        "model_repository",
    ]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True, "tuning": {}}
    assert client.get(f"/v2/models/{MODEL}/ready").status_code == 200
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    x = fmnist_test.float()[:2]
    body = {
        "inputs": [{"name": "image", "shape": [2, 28, 28], "datatype": "FP32",
                    "data": x.flatten().tolist()}],
        "outputs": [{"name": "label"}, {"name": "prediction_id"}],
    }  # fmt: skip
    r = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outs) == {"label", "prediction_id"} and outs["label"]["shape"] == [2]
    stored = client.get(f"/v1/predictions/{outs['prediction_id']['data'][1]}").json()
    assert stored["label"] == outs["label"]["data"][1]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


BAD_INPUTS = [
    ("unsupported content type", {"content": b"abc", "headers": {"content-type": "text/plain"}},
     415, "unsupported_media_type"),
    ("no content type", {"content": b"abc"}, 415, "unsupported_media_type"),
    ("not an image", {"files": [("file", ("x.png", b"hello world", "image/png"))]},
     422, "invalid_image"),
    ("truncated png", "truncated", 422, "invalid_image"),
    ("gif", {"files": [("file", ("x.gif", b"GIF89a" + b"\0" * 20, "image/gif"))]},
     422, "invalid_image"),
    ("invalid json", {"content": b"{not json", "headers": {"content-type": "application/json"}},
     422, "invalid_json"),
    ("json of wrong shape", {"json": {"pictures": []}}, 422, "invalid_json"),
    ("both images and tensor", {"json": {"images": [], "tensor": []}}, 422, "invalid_json"),
    ("bad base64", {"json": {"images": ["%%%"]}}, 422, "invalid_image"),
    ("nan tensor", {"json": {"tensor": "nan"}}, 422, "invalid_tensor"),
    ("out of range", {"json": {"tensor": np.full((28, 28), 2.0).tolist()}}, 422, "invalid_tensor"),
    ("wrong shape", {"json": {"tensor": np.zeros((2, 28, 27)).tolist()}}, 422, "invalid_tensor"),
    ("ragged", {"json": {"tensor": [[0.1, 0.2], [0.3]]}}, 422, "invalid_tensor"),
    ("too many images", {"json": {"tensor": np.zeros((17, 1, 28, 28)).tolist()}},
     413, "payload_too_large"),
    ("too many files", "many_files", 413, "payload_too_large"),
    ("pixel bomb", {"files": [("file", ("b.png", _png_header_only(1000, 1000), "image/png"))]},
     413, "payload_too_large"),
    ("body too large", {"content": b"x" * 300_000, "headers": {"content-type": "application/json"}},
     413, "payload_too_large"),
    ("no file field", {"files": [("upload", ("x.png", b"abc", "image/png"))]},
     422, "invalid_input"),
    ("1x1 image", "tiny", 422, "invalid_image"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "request_kw", "status", "code"), BAD_INPUTS)
def test_bad_inputs(client: TestClient, fmnist_pngs, case, request_kw, status, code) -> None:
    if request_kw == "truncated":
        request_kw = {"files": [("file", ("t.png", fmnist_pngs[0][:120], "image/png"))]}
    elif request_kw == "tiny":
        buf = io.BytesIO()
        Image.new("L", (1, 1), 128).save(buf, format="PNG")  # used to be classified confidently
        request_kw = {"files": [("file", ("t.png", buf.getvalue(), "image/png"))]}
    elif request_kw == "many_files":
        request_kw = {"files": _files([fmnist_pngs[0]] * 20)}
    elif case == "nan tensor":
        # Python's json accepts the NaN literal, as many clients emit it.
        row = "[" + ",".join(["0.5"] * 28) + "]"
        first = "[" + ",".join(["NaN"] + ["0.5"] * 27) + "]"
        text = '{"tensor": [' + ",".join([first] + [row] * 27) + "]}"
        request_kw = {"content": text.encode(), "headers": {"content-type": "application/json"}}
    r = client.post(PREDICT, **request_kw)
    assert r.status_code == status, (case, r.text)
    body = r.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]


def test_not_found_errors(client: TestClient) -> None:
    r = client.post("/v1/models/nope/predict", json={"tensor": [[0.0]]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert MODEL in r.json()["error"]["message"]
    r = client.get("/v1/predictions/01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert r.status_code == 404 and r.json()["error"]["code"] == "prediction_not_found"
    assert client.get("/v1/predictions", params={"cursor": "garbage"}).status_code == 422
    assert client.get("/v1/stats", params={"window": "forever"}).status_code == 422
    # A window reaching before the year 1 used to overflow into a 500.
    r = client.get("/v1/stats", params={"window": "999999d"})
    assert r.status_code == 422 and "36500d" in r.json()["error"]["message"], r.text
    assert client.get("/v1/stats", params={"window": "36500d"}).status_code == 200
    assert client.get("/v1/predictions", params={"model": "nope"}).status_code == 404
    r = client.post("/v2/models/nope/infer", json={"inputs": []})
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    assert client.get("/nowhere").status_code == 404


def test_v2_bad_requests_use_v2_body(client: TestClient) -> None:
    url = f"/v2/models/{MODEL}/infer"
    cases = [
        {"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32", "data": [0.0]}]},
        {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.0]}]},
        {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "INT8", "data": [0]}]},
        {"inputs": []},
    ]
    for body in cases:
        r = client.post(url, json=body)
        assert r.status_code == 422 and isinstance(r.json()["error"], str), r.text
    r = client.post(url, content=b"{}", headers={"Inference-Header-Content-Length": "99"})
    assert r.status_code == 422 and "Inference-Header-Content-Length" in r.json()["error"]


def test_metrics_move(client: TestClient, fmnist_pngs) -> None:
    def value(text: str, prefix: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))

    before = client.get("/metrics").text
    client.post(PREDICT, files=_files(fmnist_pngs[:2]))
    client.post(PREDICT, json={"tensor": "x"})
    after = client.get("/metrics").text
    ok = f'gga_requests_total{{code="200",endpoint="/v1/models/{{name}}/predict",model="{MODEL}"}}'
    bad = f'gga_requests_total{{code="422",endpoint="/v1/models/{{name}}/predict",model="{MODEL}"}}'
    assert value(after, ok) == value(before, ok) + 1
    assert value(after, bad) == value(before, bad) + 1
    n = f'gga_predictions_total{{model="{MODEL}"}}'
    assert value(after, n) == value(before, n) + 2
    assert f'gga_model_info{{alpha="0.05",detector="multi-view",model="{MODEL}"' in after
    assert "gga_queue_capacity" in after and "gga_batch_size_bucket" in after


def test_chunked_body_over_limit_is_cut_off(client: TestClient) -> None:
    sent = 0

    def chunks():
        nonlocal sent
        for _ in range(100):  # 100 x 10 kB, no Content-Length: counted while read
            sent += 10_000
            yield b"x" * 10_000

    r = client.post(PREDICT, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_not_ready_until_started(model_repo: Path, tmp_path: Path) -> None:
    url = tmp_path / "cold.db"
    app = create_app(service_settings(model_repo, url))
    Database(f"sqlite:///{url}").upgrade()
    client = TestClient(app)  # not entered: the lifespan has not loaded any model
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    r = client.post(PREDICT, json={"tensor": [[0.0] * 28] * 28})
    assert r.status_code == 503 and r.json()["error"]["code"] == "starting"
    assert r.headers["Retry-After"] == "1"
    app.state.store_ready = True  # migrated, models still loading
    r = client.post(PREDICT, json={"tensor": [[0.0] * 28] * 28})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
    assert client.get(f"/v2/models/{MODEL}/ready").status_code == 503


def test_a_request_larger_than_a_batch_runs_in_tuned_chunks(client: TestClient, fmnist_pngs):
    # max_batch_size 8, max_images_per_request 16: 12 images used to form one batch of 12, whose
    # bucket (16) warm-up never tuned, so it was measured on the request path.
    engine = client.app.state.registry.get(MODEL).pipeline.engine
    r = client.post(PREDICT, files=_files(fmnist_pngs[:12]))
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 12 and len({p["id"] for p in preds}) == 12
    assert not engine.tuning_timings(12), "a bucket was tuned on the request path"
    for png, p in zip(fmnist_pngs[8:12], preds[8:], strict=True):
        alone = client.post(PREDICT, files=_files([png])).json()["predictions"][0]
        assert alone["label"] == p["label"]


def test_refusals_are_logged_in_aggregate(model_repo: Path, tmp_path: Path, caplog) -> None:
    app = create_app(service_settings(model_repo, tmp_path / "cold.db"))
    client = TestClient(app)  # not started: every predict is a 503 "starting"
    with caplog.at_level("WARNING", logger="service.app"):
        codes = {client.post(PREDICT, json={"tensor": [[0.0]]}).status_code for _ in range(50)}
    assert codes == {503}
    lines = [r for r in caplog.records if "-> 503" in r.getMessage()]
    assert 1 <= len(lines) <= 2, len(lines)  # one line per 503 before


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_openapi_reference_resolves(client: TestClient) -> None:
    # The v2 infer body used to carry #/$defs/... references that point at nothing.
    document = client.get("/openapi.json").json()
    refs = _refs(document)
    assert "#/components/schemas/InferRequest" in refs
    schemas = document["components"]["schemas"]
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert "$defs" not in str(document)
