"""Photos as phones send them, made in code: large, JPEG-compressed, sometimes turned by EXIF.

The photo benchmark (``gga bench photo-model``) and the decoding tests send these; nothing is
downloaded.
"""

import io

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
