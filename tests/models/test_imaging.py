"""Image decoding for model input: round trips, conversions, and every way to refuse a file."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.errors import GGAUserError, ImageError
from models.imaging import ImageTooLargeError, decode_image, encode_png, load_image_file


def encoded(array: np.ndarray, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (28, 28), dtype=np.uint8)


def test_png_round_trip_is_exact():
    x = decode_image(encoded(RGB, "PNG"), input_shape=(3, 32, 32))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(RGB).permute(2, 0, 1))
    back = decode_image(encode_png(x), input_shape=(3, 32, 32))
    assert torch.equal(back, x)
    grey = torch.from_numpy(GREY).float() / 255
    assert torch.equal(decode_image(encode_png(grey), input_shape=(1, 28, 28))[0], grey)


def test_jpeg_round_trip_is_close():
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))  # JPEG-friendly
    x = decode_image(encoded(smooth, "JPEG", quality=95), input_shape=(1, 32, 32))
    assert (x[0] * 255 - torch.from_numpy(smooth).float()).abs().mean() < 3


def test_rgb_to_grey_is_pil_luma_and_grey_to_rgb_repeats():
    x = decode_image(encoded(RGB, "PNG"), input_shape=(1, 32, 32))
    luma = np.array(Image.fromarray(RGB).convert("L"))
    assert torch.equal((x[0] * 255).round().to(torch.uint8), torch.from_numpy(luma))
    manual = RGB.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(x[0].numpy() * 255 - manual).max() <= 1.0
    rgb = decode_image(encoded(GREY, "PNG"), input_shape=(3, 28, 28))
    assert torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "L", "1", "I;16"])
def test_modes_convert_to_the_model_channels(mode):
    if mode == "I;16":
        im = Image.new("I;16", (32, 32), 40000)
    else:
        im = Image.fromarray(RGB).convert(mode)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    for channels in (1, 3):
        x = decode_image(buffer.getvalue(), input_shape=(channels, 32, 32))
        assert x.shape == (channels, 32, 32) and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    if mode == "I;16":  # 16-bit: the top 8 bits, not PIL's clip at 255
        assert float(x.max()) == pytest.approx((40000 >> 8) / 255)


def test_resize_or_refuse_a_wrong_size():
    big = encoded(np.full((56, 40), 200, dtype=np.uint8), "PNG")
    x = decode_image(big, input_shape=(1, 28, 28), resize=True)
    assert x.shape == (1, 28, 28) and torch.allclose(x, torch.full_like(x, 200 / 255))
    with pytest.raises(ImageError, match=r"image is 40x56 but the model takes 28x28"):
        decode_image(big, input_shape=(1, 28, 28), resize=False)


@pytest.mark.parametrize("landscape", [True, False])
def test_centre_crop_keeps_the_middle_and_stretch_keeps_everything(landscape):
    # A red square between two blue bands, wide or tall: 96x32 or 32x96.
    band = np.zeros((32, 32, 3), dtype=np.uint8)
    band[..., 2] = 255
    red = np.zeros((32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    image = np.concatenate([band, red, band], axis=1 if landscape else 0)
    png = encoded(image, "PNG")
    crop = decode_image(png, input_shape=(3, 16, 16), resize_mode="center-crop")
    assert crop.shape == (3, 16, 16)
    assert torch.allclose(crop[0], torch.ones(16, 16)) and float(crop[2].max()) == 0.0
    stretch = decode_image(png, input_shape=(3, 16, 16), resize_mode="stretch")
    bands = stretch[2].mean(dim=0 if landscape else 1)  # blue along the long axis
    assert float(bands[0]) == 1.0 and float(bands[-1]) == 1.0 and float(bands[8]) == 0.0


def test_a_grey_image_becomes_three_equal_channels_and_colour_becomes_luma():
    grey = decode_image(encoded(GREY, "PNG"), input_shape=(3, 28, 28))
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert torch.equal(grey[0], torch.from_numpy(GREY).float() / 255)


def test_truncated_random_and_empty_bytes_are_refused():
    png = encoded(RGB, "PNG")
    with pytest.raises(ImageError, match=r"truncated or corrupt PNG"):
        decode_image(png[: len(png) // 2], input_shape=(3, 32, 32))
    jpeg = encoded(RGB, "JPEG")
    with pytest.raises(ImageError, match=r"truncated or corrupt JPEG"):
        decode_image(jpeg[: len(jpeg) // 2], input_shape=(3, 32, 32))
    with pytest.raises(ImageError, match=r"not a PNG or JPEG image"):
        decode_image(RNG.bytes(500), input_shape=(3, 32, 32))
    with pytest.raises(ImageError, match=r"empty file"):
        decode_image(b"", input_shape=(3, 32, 32))


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF")])
def test_other_formats_are_refused_by_name(fmt, name):
    with pytest.raises(ImageError, match=rf"unsupported image format {name}: send PNG or JPEG"):
        decode_image(encoded(RGB, fmt), input_shape=(3, 32, 32))


def test_decompression_bombs_are_refused_from_the_header():
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")  # 400 M pixels, about 50 kB
    bomb = buffer.getvalue()
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLargeError, match=r"image too large|20000x20000"):
        decode_image(bomb, input_shape=(1, 28, 28))
    # Under PIL's own limit, ours applies: a 3000x3000 PNG against a 1 M pixel budget.
    medium = encoded(np.zeros((3000, 3000), dtype=np.uint8), "PNG")
    with pytest.raises(
        ImageTooLargeError, match=r"3000x3000 = 9000000 pixels to decode, more than the 1000000"
    ):
        decode_image(medium, input_shape=(1, 28, 28), max_pixels=1_000_000)
    assert issubclass(ImageTooLargeError, ImageError) and issubclass(ImageError, GGAUserError)


def test_load_image_file_names_the_path(tmp_path):
    good = tmp_path / "digit.png"
    good.write_bytes(encoded(GREY, "PNG"))
    assert load_image_file(good, input_shape=(1, 28, 28)).shape == (1, 28, 28)
    with pytest.raises(ImageError, match=r"missing\.png: not found; give the path of a PNG"):
        load_image_file(tmp_path / "missing.png", input_shape=(1, 28, 28))
    with pytest.raises(ImageError, match=r"is a directory"):
        load_image_file(tmp_path, input_shape=(1, 28, 28))
    notes = tmp_path / "notes.png"
    notes.write_text("hello")
    with pytest.raises(ImageError, match=r"notes\.png: not a PNG or JPEG image"):
        load_image_file(notes, input_shape=(1, 28, 28))
    small = tmp_path / "small.png"
    small.write_bytes(encoded(GREY, "PNG"))
    with pytest.raises(ImageTooLargeError, match=r"small\.png: image is 28x28"):
        load_image_file(small, input_shape=(1, 28, 28), max_pixels=100)


def test_encode_png_shapes_and_values():
    assert Image.open(io.BytesIO(encode_png(torch.rand(3, 5, 7)))).size == (7, 5)
    clipped = decode_image(encode_png(torch.full((1, 4, 4), 2.0)), input_shape=(1, 4, 4))
    assert torch.equal(clipped, torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match=r"\(H, W\), \(1, H, W\) or \(3, H, W\)"):
        encode_png(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        encode_png(torch.full((4, 4), float("nan")))
