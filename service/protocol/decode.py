"""Request bodies to model inputs: images (multipart, base64 JSON), tensors (JSON, v2).

Every check a client can fail lives here and raises a ``service.errors`` error naming the
problem; nothing here knows about HTTP status codes. Decoding (PIL, JSON parsing, base64) is
CPU work and runs on the app's decode thread pool through :func:`off_loop`, never on the event
loop, so a large body cannot stall health checks and other clients.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pydantic
import torch
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from torch import Tensor

from models.errors import ImageError
from models.imaging import ImageTooLargeError, decode_image
from service.errors import (
    InvalidImage,
    InvalidInput,
    InvalidJSON,
    InvalidTensor,
    TooManyImages,
    TooManyPixels,
    UnsupportedMediaType,
    validation_message,
)
from service.input_spec import InputSpec
from service.protocol.schemas import PredictJSON

ACCEPTED = "multipart/form-data (field 'file'), or application/json with 'images' or 'tensor'"
# The store's request_id column; longer ids are refused at the edge, never truncated silently.
MAX_REQUEST_ID = 64

T = TypeVar("T")


async def off_loop(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` on the app's decode pool (the loop's default pool if it has none)."""
    pool = getattr(request.app.state, "decode_pool", None)
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def check_request_id(value: str, where: str) -> str:
    """A client-chosen request id, as stored with each prediction.

    Args:
        value: The id the client sent.
        where: Where it came from, for the message (``"X-Request-ID header"``, ``"id"``).

    Raises:
        InvalidInput: Longer than :data:`MAX_REQUEST_ID` characters, or not printable ASCII.
    """
    if len(value) > MAX_REQUEST_ID:
        raise InvalidInput(
            f"{where} is {len(value)} characters long, at most {MAX_REQUEST_ID} allowed"
        )
    if not value.isascii() or not value.isprintable():
        raise InvalidInput(f"{where} must be printable ASCII")
    return value


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_predict_body(request: Request, spec: InputSpec) -> Tensor:
    """The (N, C, H, W) float batch of a v1 predict request.

    Raises:
        UnsupportedMediaType: Neither multipart nor JSON.
        TooManyImages, TooManyPixels, InvalidImage, InvalidTensor, InvalidJSON: See messages.
    """
    kind = media_type(request)
    if kind == "multipart/form-data":
        return await _read_multipart(request, spec)
    if kind == "application/json":
        return await off_loop(request, _read_json, await request.body(), spec)
    raise UnsupportedMediaType(kind, ACCEPTED)


async def _read_multipart(request: Request, spec: InputSpec) -> Tensor:
    try:
        # One file over the limit is still read, so the error can say how many were sent.
        form = await request.form(max_files=spec.max_images + 1, max_fields=16)
    except StarletteHTTPException as err:
        if "Too many files" in str(err.detail):
            raise TooManyImages(None, spec.max_images) from err
        raise InvalidInput(f"malformed multipart body: {err.detail}") from err
    try:
        files = [v for k, v in form.multi_items() if k == "file" and isinstance(v, UploadFile)]
        others = sorted({k for k, v in form.multi_items() if isinstance(v, UploadFile)} - {"file"})
        if others:
            raise InvalidInput(f"unexpected file field(s) {others}; send each image as 'file'")
        if not files:
            raise InvalidInput("no image: send one or more files in the multipart field 'file'")
        if len(files) > spec.max_images:
            raise TooManyImages(len(files), spec.max_images)
        blobs = [await f.read() for f in files]
    finally:
        await form.close()
    return await off_loop(request, decode_images, blobs, spec)


def _read_json(body: bytes, spec: InputSpec) -> Tensor:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidJSON(f"body is not valid JSON: {err}") from err
    try:
        payload = PredictJSON.model_validate(data)
    except pydantic.ValidationError as err:
        message = validation_message(err.errors(), "body")
        raise InvalidJSON(f"{message}; expected {ACCEPTED}") from err
    if (payload.images is None) == (payload.tensor is None):
        raise InvalidJSON("send exactly one of 'images' (base64 list) or 'tensor'")
    if payload.images is not None:
        if len(payload.images) > spec.max_images:
            raise TooManyImages(len(payload.images), spec.max_images)
        blobs = []
        for i, text in enumerate(payload.images):
            try:
                blobs.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError) as err:
                raise InvalidImage(i, f"not valid base64 ({err})") from err
        return decode_images(blobs, spec)
    return decode_tensor(payload.tensor, spec)


def decode_images(blobs: list[bytes], spec: InputSpec) -> Tensor:
    """Decode encoded images into one (N, C, H, W) batch.

    Raises:
        InvalidInput: No image.
        TooManyImages: More than ``spec.max_images``.
        TooManyPixels: An image would decode to more than ``spec.max_pixels`` pixels.
        InvalidImage: An image cannot be decoded or converted.
    """
    if not blobs:
        raise InvalidInput("no image in the request")
    if len(blobs) > spec.max_images:
        raise TooManyImages(len(blobs), spec.max_images)
    images = []
    for i, blob in enumerate(blobs):
        try:
            images.append(
                decode_image(
                    blob,
                    input_shape=spec.input_shape,
                    resize=spec.resize,
                    max_pixels=spec.max_pixels,
                    min_side=spec.min_side,
                    resize_mode=spec.resize_mode,
                )
            )
        except ImageTooLargeError as err:
            raise TooManyPixels(i, err.pixels, spec.max_pixels) from err
        except ImageError as err:
            raise InvalidImage(i, str(err)) from err
    return torch.stack(images)


def decode_tensor(values: Any, spec: InputSpec) -> Tensor:
    """Nested lists of pixels in [0, 1] to a (N, C, H, W) batch of the model's shape.

    Raises:
        InvalidTensor: Ragged or non-numeric, wrong shape, NaN/inf, or values outside [0, 1].
        TooManyImages: More than ``spec.max_images`` images.
    """
    try:
        array = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as err:
        raise InvalidTensor(f"tensor must be nested lists of numbers of one shape ({err})") from err
    return check_tensor(array, spec)


def check_tensor(array: np.ndarray, spec: InputSpec) -> Tensor:
    """Validate a decoded numeric array and shape it to (N, C, H, W).

    Raises:
        InvalidTensor: Wrong shape, NaN/inf, or values outside [0, 1].
        TooManyImages: More than ``spec.max_images`` images.
    """
    c, h, w = spec.input_shape
    expected = f"(N, {c}, {h}, {w}), ({c}, {h}, {w})" + (f" or ({h}, {w})" if c == 1 else "")
    if array.ndim == 2 and c == 1:
        array = array[None, None]
    elif (
        array.ndim == 3 and c == 1 and array.shape == (array.shape[0], h, w) and array.shape[0] != 1
    ):
        array = array[:, None]  # (N, H, W): grey images without a channel axis
    elif array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or tuple(array.shape[1:]) != (c, h, w) or array.shape[0] < 1:
        raise InvalidTensor(f"tensor shape {list(np.shape(array))} does not fit; send {expected}")
    if array.shape[0] > spec.max_images:
        raise TooManyImages(array.shape[0], spec.max_images)
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InvalidTensor("tensor holds NaN or infinite values; send pixels in [0, 1]")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise InvalidTensor(
            f"tensor values span [{low:g}, {high:g}]; send pixels in [0, 1] (divide 8-bit by 255)"
        )
    return torch.from_numpy(np.ascontiguousarray(array))
