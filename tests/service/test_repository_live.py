"""Serving a user's model without a restart: import, fit, load, predict, unload, over real HTTP.

One ``gga serve`` process serves the test model; the tests import a BatchNorm net exported with
torch.export into its repository with ``gga import``, fit its trust score with ``gga fit
--data``, and drive the Open Inference Protocol's repository extension with ``tritonclient``.
"""

import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from gga_cli import main
from models.data import load_dataset
from models.imaging import encode_png
from models.imported.exporting import export_three_ways
from tests.helpers.imported import (
    INPUT_SHAPE,
    MEAN,
    STD,
    PixelNet,
    safe_names,
    train_small_bn_net,
    write_image_folder,
)
from tests.service.support import LiveServer

SERVED = "fashion-mnist-cnn"
USER = "user-net"
FIT_ARGS = [
    "--n-fit", "400", "--n-view-cal", "100", "--n-tune", "100", "--n-cal", "200",
    "--pgd-steps", "3", "--bins", "10", "--rescale", "on",
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("repository-live")


@pytest.fixture(scope="module")
def repo(model_repo: Path, workdir: Path) -> Path:
    """A copy of the test repository (the import writes into it)."""
    root = workdir / "repo"
    shutil.copytree(model_repo, root)
    return root


@pytest.fixture(scope="module")
def user_model(shared_data_dir: Path, workdir: Path) -> dict:
    """The trained net, its torch.export file, labels and a folder of labelled images."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train = load_dataset("fashion-mnist", "train", data_dir=shared_data_dir, limit=4096)
    net = train_small_bn_net(train)
    files = export_three_ways(net, workdir / "exports", INPUT_SHAPE)
    labels = workdir / "labels.txt"
    labels.write_text("\n".join(safe_names(train.class_names)) + "\n")
    images = load_dataset("fashion-mnist", "train", data_dir=shared_data_dir, limit=1200, seed=2)
    torch.set_num_threads(before)
    return {
        "net": PixelNet(net).eval(),
        "file": files["torch-export"],
        "labels": labels,
        "images": write_image_folder(images, workdir / "images"),
    }


@pytest.fixture(scope="module")
def server(repo: Path, workdir: Path):
    # Repository control is off by default; open mode on loopback may turn it on.
    srv = LiveServer(
        repo,
        f"sqlite:///{workdir / 'gga.db'}",
        workdir,
        GGA_MODELS=SERVED,
        GGA_MODEL_CONTROL="explicit",
    )
    srv.start()
    yield srv
    assert srv.stop() == 0


def _triton(server: LiveServer):
    import tritonclient.http as triton

    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def _states(client) -> dict[str, str]:
    return {e["name"]: e["state"] for e in client.get_model_repository_index()}


def _predict(url: str, model: str, png: bytes) -> httpx.Response:
    files = {"file": ("x.png", png, "image/png")}
    return httpx.post(f"{url}/v1/models/{model}/predict", files=files, timeout=60)


def test_import_fit_load_and_predict_without_a_restart(server, repo, user_model, fmnist_test):
    client = _triton(server)
    assert _states(client) == {SERVED: "READY"}
    assert main(
        ["import", str(user_model["file"]), "--name", USER, "--repo", str(repo),
         "--labels", str(user_model["labels"]), "--mean", str(MEAN), "--std", str(STD)]
    ) == 0  # fmt: skip
    assert _states(client) == {SERVED: "READY", USER: "UNAVAILABLE"}
    x = fmnist_test.float()[:6]
    with torch.no_grad():
        expected = user_model["net"](x).argmax(1).tolist()

    client.load_model(USER)  # not fitted yet: served without a trust score, and says so
    assert _states(client)[USER] == "READY"
    plain = _predict(server.url, USER, encode_png(x[0]))
    assert plain.status_code == 200, plain.text
    first = plain.json()["predictions"][0]
    assert first["label"] == expected[0]
    assert first["trust_score"] is None and first["flagged"] is False
    stored = httpx.get(f"{server.url}/v1/predictions/{first['id']}", timeout=10).json()
    assert stored["trust_score"] is None
    stats = httpx.get(f"{server.url}/v1/stats", params={"model": USER}, timeout=10).json()
    assert stats["count"] == 1 and stats["trust_quantiles"] is None
    info = httpx.get(f"{server.url}/v1/models/{USER}", timeout=10).json()
    assert info["detector"] is None and "gga fit" in info["warnings"][0]
    meta = client.get_model_metadata(USER)
    assert "gga fit" in meta["parameters"]["warnings"][0]
    assert {o["name"] for o in meta["outputs"]} == {"probabilities", "label", "prediction_id"}
    import tritonclient.http as triton

    image = triton.InferInput("image", [2, 1, 28, 28], "FP32")
    image.set_data_from_numpy(x[:2].numpy())
    result = client.infer(USER, [image])
    assert result.as_numpy("label").tolist() == expected[:2]
    assert result.as_numpy("trust_score") is None
    asked = {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28],
                    "data": x[0].flatten().tolist()}],
        "outputs": [{"name": "trust_score"}],
    }  # fmt: skip
    refused = httpx.post(f"{server.url}/v2/models/{USER}/infer", json=asked, timeout=30)
    assert refused.status_code == 422 and "no trust detector" in refused.text
    fit = ["fit", USER, "--data", str(user_model["images"]), "--repo", str(repo)]
    assert main([*fit, *FIT_ARGS]) == 0

    client.load_model(USER)  # fitted now: the reload brings its detector, warmed up
    assert _states(client) == {SERVED: "READY", USER: "READY"}
    assert client.is_model_ready(USER)
    answers = [_predict(server.url, USER, encode_png(img)) for img in x]
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    predictions = [r.json()["predictions"][0] for r in answers]
    assert [p["label"] for p in predictions] == expected
    assert all(0 < p["trust_score"] <= 1 for p in predictions)
    meta = httpx.get(f"{server.url}/v1/models/{USER}", timeout=10).json()
    assert meta["architecture"] == "imported" and meta["detector"] is not None
    assert meta["warnings"] == []

    image = triton.InferInput("image", [4, 1, 28, 28], "FP32")
    image.set_data_from_numpy(x[:4].numpy())
    result = client.infer(USER, [image])
    assert result.as_numpy("label").tolist() == expected[:4]
    assert np.all(result.as_numpy("trust_score") > 0)


def _wait_until(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_unload_and_reload_while_requests_run(server, repo, fmnist_pngs):
    client = _triton(server)
    if _states(client).get(USER) != "READY":
        pytest.skip("needs the imported model of the previous test")
    stop = threading.Event()
    answers: dict[str, list[httpx.Response]] = {SERVED: [], USER: []}

    def hammer(model: str) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            i = 0
            while not stop.is_set():
                png = fmnist_pngs[i % len(fmnist_pngs)]
                files = {"file": ("x.png", png, "image/png")}
                answers[model].append(http.post(f"/v1/models/{model}/predict", files=files))
                i += 1

    threads = [threading.Thread(target=hammer, args=(m,)) for m in (SERVED, USER, USER)]
    for t in threads:
        t.start()
    try:
        _wait_until(lambda: len(answers[USER]) >= 6, "answers before the reload")
        client.load_model(USER)  # a reload: the new copy is swapped in, the old one drains
        n = len(answers[USER])
        _wait_until(lambda: len(answers[USER]) >= n + 6, "answers after the reload")
        client.unload_model(USER)
        assert _states(client)[USER] == "UNAVAILABLE"
        n = len(answers[SERVED])
        _wait_until(lambda: len(answers[SERVED]) >= n + 3, "the other model's answers")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert all(r.status_code == 200 for r in answers[SERVED]), {
        r.status_code for r in answers[SERVED]
    }
    codes = [r.status_code for r in answers[USER]]
    assert set(codes) <= {200, 404, 503}, codes  # refused while leaving, unknown once gone
    assert codes[-1] == 404 and codes.count(200) >= 6
    # No answered prediction is lost: each 200 was stored before it was sent.
    for r in answers[USER]:
        if r.status_code == 200:
            pid = r.json()["predictions"][0]["id"]
            stored = httpx.get(f"{server.url}/v1/predictions/{pid}", timeout=10)
            assert stored.status_code == 200 and stored.json()["model"] == USER

    client.load_model(USER)  # and back, still without a restart
    assert _predict(server.url, USER, fmnist_pngs[0]).status_code == 200


def test_repository_requests_that_cannot_be_served_are_refused(server, repo):
    from tritonclient.utils import InferenceServerException

    client = _triton(server)
    with pytest.raises(InferenceServerException, match="no-such-model"):
        client.load_model("no-such-model")
    with pytest.raises(InferenceServerException, match="no-such-model"):
        client.unload_model("no-such-model")
    with pytest.raises(InferenceServerException, match="not supported"):
        client.load_model(SERVED, config='{"max_batch_size": 4}')
    broken = repo / "broken"
    shutil.copytree(repo / SERVED, broken)
    weights = broken / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    r = httpx.post(f"{server.url}/v2/repository/models/broken/load", timeout=60)
    assert r.status_code == 422 and "does not match the card" in r.text
    assert _states(client)["broken"] == "UNAVAILABLE"
    index = f"{server.url}/v2/repository/index"
    assert httpx.post(index, content=b"{", timeout=10).status_code == 422
    ready = httpx.post(index, json={"ready": True}, timeout=10)
    assert {e["state"] for e in ready.json()} == {"READY"}
    assert _predict(server.url, SERVED, b"not a png").status_code == 422  # still serving
