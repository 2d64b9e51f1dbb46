"""Phone photos: decoded at a reduced scale, turned upright, and bombs still refused."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.imaging import ImageTooLargeError, decode_image, fit_to_size
from tests.helpers.peak import peak_growth_mb
from tests.helpers.photos import PHONE_SIZE, jpeg_bytes, phone_jpeg, with_declared_size

SERVICE_PIXEL_LIMIT = 1024 * 1024  # GGA_MAX_PIXELS' default


@pytest.fixture(scope="module")
def photo() -> bytes:
    return phone_jpeg()


def full_size_reference(data: bytes, shape: tuple[int, int, int], mode: str) -> torch.Tensor:
    """Decode every pixel, then resize: what decode_image did before reduced-scale decoding."""
    with Image.open(io.BytesIO(data)) as im:
        im = fit_to_size(im.convert("RGB"), shape[2], shape[1], mode)  # type: ignore[arg-type]
        pixels = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)


def test_a_phone_photo_is_classifiable_under_the_service_pixel_limit(photo):
    assert 4_000_000 < len(photo) < 7_000_000  # the size of a real 12-megapixel JPEG
    x = decode_image(photo, input_shape=(3, 32, 32), max_pixels=SERVICE_PIXEL_LIMIT)
    assert x.shape == (3, 32, 32)


@pytest.mark.parametrize("mode", ["stretch", "center-crop"])
@pytest.mark.parametrize("side", [32, 224])
def test_reduced_scale_matches_a_full_decode(photo, mode, side):
    shape = (3, side, side)
    reduced = decode_image(
        photo, input_shape=shape, resize_mode=mode, max_pixels=SERVICE_PIXEL_LIMIT
    )
    full = full_size_reference(photo, shape, mode)
    # The DCT scaling averages 8x8 blocks where the bilinear filter averages its own window:
    # the two agree to a few grey levels on average, far below what moves a prediction.
    assert (reduced - full).abs().mean() < 0.02


def test_the_scale_still_covers_the_model_input():
    # 1000x800 for a 224x224 crop: the crop window is 800x800, 1/2 would give 400 >= 224 but
    # 1/4 would give 200 < 224, so the decoder must stop at 1/2 and the resize still shrinks.
    ramp = np.tile(np.linspace(0, 255, 1000, dtype=np.float32), (800, 1)).astype(np.uint8)
    data = jpeg_bytes(np.stack([ramp] * 3, axis=-1))
    with pytest.raises(ImageTooLargeError, match=r"1000x800, 500x400 reduced = 200000 pixels"):
        decode_image(data, input_shape=(3, 224, 224), resize_mode="center-crop", max_pixels=199_999)


def test_exif_orientation_is_honoured():
    # Stored 64 wide and 32 high, bright in its top-left corner; orientation 6 means "turn a
    # quarter clockwise to show", so the shown image is 32 wide, 64 high, bright top-right.
    stored = np.zeros((32, 64), dtype=np.uint8)
    stored[:16, :16] = 255
    data = jpeg_bytes(stored, orientation=6, quality=95)
    x = decode_image(data, input_shape=(1, 64, 32), resize=False)[0]
    assert x.shape == (64, 32)
    assert x[:16, 16:].mean() > 0.9 and x[:16, :16].mean() < 0.1 and x[16:].mean() < 0.1
    # The reduced decode of a turned photo computes its scale in the shown frame.
    turned = phone_jpeg((1200, 800), orientation=6)
    assert decode_image(turned, input_shape=(3, 60, 40), resize_mode="center-crop").shape == (
        3,
        60,
        40,
    )


def test_a_jpeg_bomb_is_refused_before_decoding():
    small = jpeg_bytes(np.zeros((16, 16, 3), dtype=np.uint8))
    # Under PIL's own bomb limit (89 M pixels), ours refuses what would be decoded: 1/8 of
    # 9000x9000 is still 1125x1125, more than a megapixel.
    bomb = with_declared_size(small, 9000, 9000)
    with pytest.raises(ImageTooLargeError, match=r"9000x9000, 1125x1125 reduced") as err:
        decode_image(bomb, input_shape=(3, 224, 224), max_pixels=SERVICE_PIXEL_LIMIT)
    assert err.value.pixels == 1125 * 1125
    # Over it, PIL refuses at the header, and the count still reaches the client.
    huge = with_declared_size(small, 60000, 60000)
    with pytest.raises(ImageTooLargeError, match=r"image too large to decode") as err:
        decode_image(huge, input_shape=(3, 224, 224), max_pixels=SERVICE_PIXEL_LIMIT)
    assert err.value.pixels == 60000 * 60000


def test_the_limit_applies_to_what_is_decoded(photo):
    # Scaled to 1/8 for a small model; only 1/2 for a model that reads 1024x1024.
    decode_image(photo, input_shape=(3, 32, 32), max_pixels=500 * 375)
    with pytest.raises(ImageTooLargeError, match=r"2000x1500 reduced = 3000000 pixels"):
        decode_image(photo, input_shape=(3, 1024, 1024), max_pixels=SERVICE_PIXEL_LIMIT)


DECODER_SETUP = """
import sys
from models.imaging import decode_image
data = open(sys.argv[1], "rb").read()
"""


def test_decoding_a_phone_photo_peaks_under_100_mb(photo, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(photo)
    measured = "decode_image(data, input_shape=(3, 224, 224), max_pixels=1024 * 1024)"
    growth_mb = peak_growth_mb(DECODER_SETUP, measured, str(path))
    # A full decode of 4000x3000 RGB holds 36 MB of pixels, plus a float copy if resized.
    assert growth_mb < 100, f"decoding grew the process by {growth_mb:.0f} MB"
    assert PHONE_SIZE == (4000, 3000)
