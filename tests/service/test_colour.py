"""A colour model served end to end: RGB photos of any size, grey images, wrong tensors,
explanations and saliency maps of colour inputs."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from models.imaging import encode_png
from service.app import create_app
from tests.helpers.photos import jpeg_bytes, phone_jpeg
from tests.service.conftest import service_settings

MODEL = "cifar10-tiny"
PREDICT = f"/v1/models/{MODEL}/predict"


@pytest.fixture(scope="module")
def client(colour_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("colour") / "gga.db"
    with TestClient(create_app(service_settings(colour_repo, db, models=[MODEL]))) as c:
        yield c


def _upload(data: bytes, name: str = "photo.jpg", kind: str = "image/jpeg"):
    return {"files": [("file", (name, data, kind))]}


def _jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _photo(image: torch.Tensor) -> np.ndarray:
    """A 160x96 'photo': the 32x32 image scaled to 96x96 between two noisy side bands, so
    that only a centre crop recovers the image (a stretch would squeeze the bands in)."""
    rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    centre = np.asarray(Image.fromarray(rgb).resize((96, 96), Image.Resampling.NEAREST))
    noise = np.random.default_rng(0).integers(0, 256, (96, 32, 3), dtype=np.uint8)
    return np.concatenate([noise, centre, noise], axis=1)


def test_the_card_and_listing_describe_the_colour_input(client: TestClient) -> None:
    info = client.get(f"/v1/models/{MODEL}").json()
    assert info["input_shape"] == [3, 32, 32]
    assert info["preprocessing"] == {
        "color_mode": "RGB",
        "resize": True,
        "resize_mode": "center-crop",
    }
    assert MODEL in [m["name"] for m in client.get("/v1/models").json()["models"]]


def test_a_large_photo_is_centre_cropped_as_the_card_says(client, cifar_test) -> None:
    # What the model saw is checked pixel by pixel. Its labels are not compared with the
    # original's: the tiny model (60 steps, about 70% accurate) agreed with them on 6 of 8 on one
    # CPU and 5 on another, and on 5 of 8 for a stretch of the same photos as well, so agreement
    # tells the crop from a stretch no better than chance. The pixels do: a stretch squeezes the
    # noisy bands in.
    x = cifar_test.float()
    for i in range(8):
        r = client.post(PREDICT + "?saliency=true", **_upload(_jpeg(_photo(x[i]))))
        assert r.status_code == 200, r.text
        p = r.json()["predictions"][0]
        seen = Image.open(io.BytesIO(base64.b64decode(p["saliency"]["input"])))
        assert seen.mode == "RGB" and seen.size == (32, 32)
        seen_x = torch.from_numpy(np.asarray(seen, dtype=np.float32) / 255).permute(2, 0, 1)
        # The noisy bands are cut away: what the model saw is the original image, up to JPEG
        # and a 3x down-scaling.
        assert float((seen_x - x[i]).abs().mean()) < 0.06


def test_a_phone_photo_is_classified_with_default_limits(client: TestClient, cifar_test) -> None:
    # A 12-megapixel JPEG of about 5 MB, far over GGA_MAX_PIXELS' default of one megapixel:
    # it is decoded at 1/8 scale, so what counts against the limit is 500x375.
    r = client.post(PREDICT, **_upload(phone_jpeg()))
    assert r.status_code == 200, r.text
    stored = client.get(f"/v1/predictions/{r.json()['predictions'][0]['id']}")
    assert stored.status_code == 200
    # EXIF orientation: a CIFAR image stored turned a quarter, tagged to be shown upright, is
    # seen by the model as the upright image.
    upright = (cifar_test.float()[3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    big = np.asarray(Image.fromarray(upright).resize((320, 320), Image.Resampling.BICUBIC))
    stored_turned = np.ascontiguousarray(np.rot90(big, k=1))  # shown after a quarter clockwise
    answers = [
        client.post(PREDICT + "?saliency=true", **_upload(data)).json()["predictions"][0]
        for data in (jpeg_bytes(big), jpeg_bytes(stored_turned, orientation=6))
    ]
    assert answers[0]["label"] == answers[1]["label"]
    np.testing.assert_allclose(answers[0]["probabilities"], answers[1]["probabilities"], atol=0.05)


def test_a_grey_image_is_repeated_to_three_channels(client: TestClient, cifar_test) -> None:
    rgb = cifar_test.float()[3]
    grey = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None]  # (1, 32, 32)
    by_png = client.post(PREDICT, **_upload(encode_png(grey), "grey.png", "image/png"))
    assert by_png.status_code == 200, by_png.text
    repeated = (grey.expand(3, -1, -1) * 255).round() / 255
    by_tensor = client.post(PREDICT, json={"tensor": repeated.tolist()})
    assert by_tensor.status_code == 200, by_tensor.text
    np.testing.assert_allclose(
        by_png.json()["predictions"][0]["probabilities"],
        by_tensor.json()["predictions"][0]["probabilities"],
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "shape", [(32, 32), (1, 32, 32), (2, 1, 32, 32), (3, 28, 28), (2, 32, 32, 3)]
)
def test_a_tensor_of_the_wrong_shape_gets_a_422_naming_the_expected_shape(client, shape):
    r = client.post(PREDICT, json={"tensor": np.zeros(shape).tolist()})
    assert r.status_code == 422
    body = r.json()
    assert body["error"]["code"] == "invalid_tensor"
    assert "(N, 3, 32, 32)" in body["error"]["message"]


def test_explanation_and_saliency_of_a_colour_input(client: TestClient, cifar_test) -> None:
    png = encode_png(cifar_test.float()[0])
    r = client.post(PREDICT + "?explain=true&saliency=true", **_upload(png, "a.png", "image/png"))
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    csm = np.asarray(p["explanation"]["csm"])
    assert csm.shape == (10, 10) and np.allclose(np.diag(csm), 1, atol=1e-4)
    for key in ("predicted", "runner_up"):
        sign_map = Image.open(io.BytesIO(base64.b64decode(p["saliency"][key])))
        # One value per pixel: the max over the colour channels of the gradient's sign.
        assert sign_map.mode == "L" and sign_map.size == (32, 32)
        assert set(np.unique(np.asarray(sign_map))) <= {0, 128, 255}
    seen = Image.open(io.BytesIO(base64.b64decode(p["saliency"]["input"])))
    assert seen.mode == "RGB"
    np.testing.assert_array_equal(
        np.asarray(seen), (cifar_test.x[0].permute(1, 2, 0)).numpy()
    )  # a 32x32 PNG goes through untouched


def test_offline_predict_resizes_a_photo_as_the_service_does(
    client, colour_repo, cifar_test, tmp_path, capsys
) -> None:
    import json

    from gga_cli import main

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_jpeg(_photo(cifar_test.float()[2])))
    assert main(["predict", MODEL, str(photo), "--repo", str(colour_repo), "--json"]) == 0
    offline = json.loads(capsys.readouterr().out)["predictions"][0]
    served = client.post(PREDICT, **_upload(photo.read_bytes())).json()["predictions"][0]
    assert offline["label"] == served["label"]
    np.testing.assert_allclose(offline["probabilities"], served["probabilities"], atol=1e-5)
