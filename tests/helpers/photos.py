"""Photos as phones send them, made in code: large, JPEG-compressed, sometimes turned by EXIF."""

import io
import struct

import numpy as np
from PIL import Image

PHONE_SIZE = (4000, 3000)  # width x height of a 12-megapixel phone photo


def phone_jpeg(size: tuple[int, int] = PHONE_SIZE, *, seed: int = 0, orientation: int = 1) -> bytes:
    """A photo-like JPEG: smooth colour shapes with sensor-like noise, about 5 MB at 4000x3000.

    The noise keeps the file as large as a real photo of that size (a flat image would
    compress to a few kB and hide what decoding a real one costs).
    """
    width, height = size
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, height / 250.0, height, dtype=np.float32)[:, None]
    cols = np.linspace(0.0, width / 300.0, width, dtype=np.float32)[None, :]
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    for channel in range(3):
        shape = 128.0 + 100.0 * np.sin(cols + channel) * np.cos(rows - channel)
        noise = rng.normal(0.0, 15.0, (height, width)).astype(np.float32)
        pixels[..., channel] = np.clip(shape + noise, 0, 255).astype(np.uint8)
    return jpeg_bytes(pixels, orientation=orientation)


def jpeg_bytes(pixels: np.ndarray, *, orientation: int = 1, quality: int = 90) -> bytes:
    """Encode (H, W) or (H, W, 3) uint8 pixels as JPEG, with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, exif=exif)
    return buffer.getvalue()


def with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header claiming another size: a bomb in a few hundred bytes.

    Rewrites the height and width of the first start-of-frame marker (SOF0-SOF2), which is
    all a decoder reads before it allocates.
    """
    data = bytearray(jpeg)
    at = 2
    while at + 4 <= len(data):
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        at += 2 + length
    raise ValueError("no start-of-frame marker in this JPEG")
