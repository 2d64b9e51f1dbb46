"""One request, one model: a reload while a request is decoded never hands its inputs, decoded
for one input shape, to a model of another shape."""

import base64
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.imaging import encode_png
from service.app import create_app
from tests.service.conftest import service_settings

NAME = "swap"


class SwapWhileDecoding(ThreadPoolExecutor):
    """The app's decode pool, but the next task it runs reloads the served model right after
    decoding: the request's inputs then reach the data plane after the swap, deterministically."""

    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="decode")
        self.swap = None

    def submit(self, fn, /, *args, **kwargs):
        swap, self.swap = self.swap, None
        if swap is None:
            return super().submit(fn, *args, **kwargs)

        def decode_then_swap(*a, **kw):
            decoded = fn(*a, **kw)
            swap()
            return decoded

        return super().submit(decode_then_swap, *args, **kwargs)


@pytest.fixture
def served(model_repo: Path, colour_repo: Path, tmp_path: Path):
    """An app serving ``swap``, first a copy of the grey 28x28 model, and a way to replace its
    folder by another model's and reload it."""
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "fashion-mnist-cnn", repo / NAME)
    app = create_app(service_settings(repo, tmp_path / "gga.db", models=[NAME]))
    pool = SwapWhileDecoding()

    def swap_to(folder: Path):
        def swap() -> None:
            shutil.rmtree(repo / NAME)
            shutil.copytree(folder, repo / NAME)
            app.state.registry.load(NAME)

        return swap

    with TestClient(app) as client:
        app.state.decode_pool = pool  # replaced after start-up; shut down by the app's stop
        yield (
            client,
            app,
            pool,
            {
                "colour": swap_to(colour_repo / "cifar10-tiny"),
                "grey": swap_to(model_repo / "fashion-mnist-cnn"),
            },
        )


def test_a_reload_between_decoding_and_compute_cannot_mix_shapes(served, cifar_test) -> None:
    client, app, pool, swaps = served
    grey = {"tensor": [[0.5] * 28] * 28}  # decoded for (1, 28, 28)
    pool.swap = swaps["colour"]
    r = client.post(f"/v1/models/{NAME}/predict", json=grey)
    # Decoded for the model it resolved, which stopped meanwhile: retry, never a 500.
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready", r.text
    assert r.headers["Retry-After"] == "1"
    colour = base64.b64encode(encode_png(cifar_test.float()[0])).decode()
    ok = client.post(f"/v1/models/{NAME}/predict", json={"images": [colour]})
    assert ok.status_code == 200, ok.text  # the retry meets the new model, (3, 32, 32)

    x = cifar_test.float()[:1].numpy()  # v2, decoded for (3, 32, 32), then swapped back
    body = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.reshape(-1).tolist()}]}  # fmt: skip
    pool.swap = swaps["grey"]
    r = client.post(f"/v2/models/{NAME}/infer", json=body)
    assert r.status_code == 503 and "not ready" in r.json()["error"], r.text
    assert client.post(f"/v1/models/{NAME}/predict", json=grey).status_code == 200
    failures = app.state.metrics.registry.get_sample_value(
        "gga_batch_failures_total", {"model": NAME, "stage": "compute"}
    )
    assert not failures, "inputs reached a model of another shape"
