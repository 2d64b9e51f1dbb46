"""PNG/JPEG bytes to model input and back: the one place that decodes untrusted images.

``decode_image`` reads the format, size and EXIF orientation from the header, asks the JPEG
decoder for the smallest DCT scale (1/2, 1/4 or 1/8) that still covers what the model's
resize needs, and checks the pixel count that will actually be decoded before any pixel is
(a 20000x20000 PNG is a few kB on the wire and 400 MB in memory). A 4000x3000 phone photo for
a 224x224 model is therefore decoded at 500x375, never at full size. It then turns the image
upright, converts mode and size to what the model takes. ``encode_png`` writes example images
and saliency maps.
"""

import io
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from models.errors import ImageError

SUPPORTED_FORMATS = ("PNG", "JPEG")
# 4096 x 4096: far above any input we resize from, far below memory trouble (64 MB as RGB).
DEFAULT_MAX_PIXELS = 4096 * 4096
# Leading bytes of formats we refuse, so that the error can name what was sent.
_OTHER_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WEBP"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"%PDF", "PDF"),
)
ResizeMode = Literal["stretch", "center-crop"]
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L"})
_EXIF_ORIENTATION = 0x0112
# EXIF orientations 5-8 turn the picture a quarter: the stored width is the shown height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


class ImageTooLargeError(ImageError):
    """The pixels an image would decode to, known from its header, exceed the allowed maximum.

    Attributes:
        pixels: that count (0 where the decoder refused before it could say).
    """

    def __init__(self, message: str, pixels: int = 0) -> None:
        super().__init__(message)
        self.pixels = pixels


def _sniff(data: bytes) -> str | None:
    for signature, name in _OTHER_SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def _to_mode(im: Image.Image, channels: int) -> Image.Image:
    if im.mode in _SIXTEEN_BIT_MODES:
        # 16-bit grey PNGs: keep the top 8 bits (PIL's own I -> L conversion clips at 255).
        high = (np.asarray(im, dtype=np.int32) >> 8).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(high, mode="L")
    if channels == 1:
        return im if im.mode == "L" else im.convert("L")  # ITU-R 601 luma; alpha is dropped
    return im if im.mode == "RGB" else im.convert("RGB")  # grey repeated; alpha is dropped


def fit_to_size(im: Image.Image, width: int, height: int, mode: ResizeMode) -> Image.Image:
    """Resize a decoded image to ``width`` x ``height`` as a model card's ``resize_mode`` says.

    Args:
        im: the image (any size).
        width: target width.
        height: target height.
        mode: ``"stretch"``: scale the whole image (aspect ratio not kept); ``"center-crop"``:
            cut the largest centred window of the target's aspect ratio, then scale it (a
            640x480 photo for a 32x32 model loses 80 columns on each side).

    Returns:
        The resized image (bilinear, antialiased when shrinking, as PIL does).
    """
    if mode == "stretch":
        return im.resize((width, height), Image.Resampling.BILINEAR)
    if mode != "center-crop":
        raise ValueError(f"unknown resize mode {mode!r}; expected 'stretch' or 'center-crop'")
    # Crop first, then scale: scaling with a box would let the filter read past the window.
    crop_w, crop_h = _crop_window(im.width, im.height, width, height)
    left, top = (im.width - crop_w) // 2, (im.height - crop_h) // 2
    window = im.crop((left, top, left + crop_w, top + crop_h))
    return window.resize((width, height), Image.Resampling.BILINEAR)


def _crop_window(image_w: int, image_h: int, width: int, height: int) -> tuple[int, int]:
    """The largest centred window of an image_w x image_h image with width:height's aspect."""
    crop_w = min(image_w, max(1, round(image_h * width / height)))
    crop_h = min(image_h, max(1, round(image_w * height / width)))
    return crop_w, crop_h


def _upright_size(im: Image.Image) -> tuple[tuple[int, int], bool]:
    """The image's size as shown (EXIF orientation applied) and whether it turns a quarter."""
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION)
    except (OSError, SyntaxError, ValueError, TypeError):
        orientation = None  # a damaged EXIF block: show the pixels as stored
    turned = orientation in _QUARTER_TURNS
    width, height = im.size
    return ((height, width) if turned else (width, height)), turned


def _request_reduced_scale(
    im: Image.Image, target: tuple[int, int], mode: ResizeMode, resize: bool
) -> None:
    """Ask a JPEG decoder for the smallest DCT scale that still covers the model's input.

    The size requested is what the resize reads, so the scaled image's crop window (or whole
    image, when stretching) is at least the model's size and the bilinear resize still only
    shrinks. PNG has no reduced decode; ``draft`` is a no-op there.
    """
    if im.format != "JPEG" or not resize:
        return
    (shown_w, shown_h), turned = _upright_size(im)
    width, height = target
    if mode == "center-crop":
        crop_w, crop_h = _crop_window(shown_w, shown_h, width, height)
    else:
        crop_w, crop_h = shown_w, shown_h
    need_w = -(-width * shown_w // crop_w)  # ceil: the window of the scaled image >= target
    need_h = -(-height * shown_h // crop_h)
    if turned:
        need_w, need_h = need_h, need_w
    # Keep the decoder's mode: asking for "L" would take JPEG's own luma, which rounds
    # differently from the convert() that every other image goes through.
    im.draft(None, (need_w, need_h))


def decode_image(
    data: bytes,
    *,
    input_shape: tuple[int, int, int],
    resize: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    resize_mode: ResizeMode = "stretch",
) -> Tensor:
    """Decode a PNG or JPEG into a model input.

    Args:
        data: the encoded file.
        input_shape: the model's (C, H, W), C = 1 (grey, ITU-R 601 luma) or 3 (RGB; a grey
            image has its channel repeated).
        resize: resize an image of another size to (H, W) (``fit_to_size``); if False such an
            image is refused.
        max_pixels: largest width x height decoded, checked before any pixel is: the header's
            size for PNG, the reduced size a JPEG is decoded at (``_request_reduced_scale``).
        min_side: shortest width or height accepted (an image far smaller than the model's input
            holds too little to classify), also checked from the header.
        resize_mode: ``"stretch"`` or ``"center-crop"`` (the card's ``resize_mode``).

    Returns:
        Float tensor (C, H, W) in [0, 1], upright as the EXIF orientation says.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels would be decoded.
        ImageError: not an image, a format other than PNG/JPEG, truncated or corrupt data, a
            side shorter than ``min_side``, or the wrong size with ``resize=False``.
    """
    c, h, w = input_shape
    if c not in (1, 3):
        raise ValueError(f"input_shape must have 1 or 3 channels, got {input_shape}")
    if not data:
        raise ImageError("empty file: send a PNG or JPEG image")
    try:
        # formats= keeps every other decoder (and its header parser) out of reach.
        im = Image.open(io.BytesIO(data), formats=list(SUPPORTED_FORMATS))
    except Image.DecompressionBombError as err:
        claimed = re.search(r"\((\d+) pixels\)", str(err))  # PIL names the header's count
        raise ImageTooLargeError(
            f"image too large to decode ({err}); send at most {max_pixels} pixels",
            pixels=int(claimed.group(1)) if claimed else 0,
        ) from err
    except UnidentifiedImageError as err:
        other = _sniff(data)
        if other is not None:
            raise ImageError(f"unsupported image format {other}: send PNG or JPEG") from err
        raise ImageError("not a PNG or JPEG image (unrecognised or damaged header)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"corrupt PNG or JPEG header ({err})") from err
    with im:
        stored_w, stored_h = im.size  # from the header: nothing decoded yet
        try:
            _request_reduced_scale(im, (w, h), resize_mode, resize)
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"corrupt JPEG header ({err})") from err
        decoded_w, decoded_h = im.size  # what the decoder will hold
        if decoded_w * decoded_h > max_pixels:
            reduced = (
                "" if im.size == (stored_w, stored_h) else f", {decoded_w}x{decoded_h} reduced"
            )
            raise ImageTooLargeError(
                f"image is {stored_w}x{stored_h}{reduced} = {decoded_w * decoded_h} pixels to "
                f"decode, more than the {max_pixels} allowed; send a smaller image",
                pixels=decoded_w * decoded_h,
            )
        (width, height), _ = _upright_size(im)
        if min(width, height) < min_side:
            raise ImageError(
                f"image is {width}x{height} pixels; each side must be at least {min_side} "
                f"(the model reads {w}x{h})"
            )
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
            im = _to_mode(im, c)
            width, height = im.size
            if (width, height) != (w, h):
                if not resize:
                    raise ImageError(
                        f"image is {width}x{height} but the model takes {w}x{h} (width x height);"
                        " resize it first"
                    )
                im = fit_to_size(im, w, h, resize_mode)
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"truncated or corrupt {im.format} image ({err})") from err
        pixels = np.asarray(im, dtype=np.uint8)
    x = torch.from_numpy(pixels.copy()).to(torch.float32) / 255.0
    return x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()  # (C, H, W)


def load_image_file(
    path: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int],
    resize: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    resize_mode: ResizeMode = "stretch",
) -> Tensor:
    """Read and decode an image file (``decode_image`` with the path in every error).

    Args:
        path: a PNG or JPEG file.
        input_shape: the model's (C, H, W).
        resize: resize an image of another size instead of refusing it.
        max_pixels: largest width x height accepted.
        resize_mode: how it is resized (``decode_image``).

    Returns:
        Float tensor (C, H, W) in [0, 1].

    Raises:
        ImageTooLargeError: too many pixels.
        ImageError: the file is missing, unreadable, or not a usable image.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise ImageError(f"{path}: {what}; give the path of a PNG or JPEG file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot read ({err.strerror})") from err
    try:
        return decode_image(
            data,
            input_shape=input_shape,
            resize=resize,
            max_pixels=max_pixels,
            resize_mode=resize_mode,
        )
    except ImageError as err:
        raise type(err)(f"{path}: {err}") from err


def encode_png(x: Tensor) -> bytes:
    """Encode an image in [0, 1] as PNG (8 bits per channel, values clamped and rounded).

    Args:
        x: float tensor (H, W), (1, H, W) grey, or (3, H, W) RGB.

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: other shapes, or NaN values.
    """
    return _encode(x, "PNG")


def encode_jpeg(x: Tensor, quality: int = 90) -> bytes:
    """Encode an image in [0, 1] as JPEG (as a phone or browser would send a photo).

    Args:
        x: float tensor (H, W), (1, H, W) grey, or (3, H, W) RGB.
        quality: JPEG quality, 1 to 95.

    Returns:
        The JPEG file's bytes.

    Raises:
        ValueError: other shapes, or NaN values.
    """
    return _encode(x, "JPEG", quality=quality)


def _encode(x: Tensor, fmt: str, **options: int) -> bytes:
    x = x.detach().cpu()
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"encode takes (H, W), (1, H, W) or (3, H, W), got {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError("encode: the image contains NaN")
    pixels = (x.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    array = pixels[0].numpy() if x.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format=fmt, **options)
    return buffer.getvalue()
