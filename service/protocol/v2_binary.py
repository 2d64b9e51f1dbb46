"""The binary tensor data extension of the Open Inference Protocol (what tritonclient sends).

A request or response body is a JSON header of ``Inference-Header-Content-Length`` bytes followed
by raw tensor bytes; each binary tensor carries ``parameters.binary_data_size`` and the tensors'
bytes follow in the order they appear in the JSON. Little-endian, row-major; ``BOOL`` is one byte
per element and each ``BYTES`` element is a 4-byte little-endian length then its bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from service.errors import InvalidInput, InvalidTensor

HEADER_LENGTH = "Inference-Header-Content-Length"

NUMPY_TYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail of a request body.

    Args:
        body: The whole body.
        header_length: The ``Inference-Header-Content-Length`` header, or None (pure JSON).

    Raises:
        InvalidInput: The header is not an integer within the body's length.
    """
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 <= n <= len(body):
        raise InvalidInput(f"{HEADER_LENGTH} is {n} but the body holds {len(body)} bytes")
    return body[:n], body[n:]


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        if dim < 0:
            raise InvalidTensor(f"shape {list(shape)} has a negative dimension")
        count *= dim
    return count


def from_bytes(datatype: str, shape: Sequence[int], raw: bytes, name: str) -> np.ndarray:
    """A numeric tensor from its binary form.

    Raises:
        InvalidTensor: Unsupported datatype, or the byte count does not fit the shape.
    """
    if datatype not in NUMPY_TYPES:
        raise InvalidTensor(f"input {name!r}: binary {datatype} is not supported here")
    dtype = NUMPY_TYPES[datatype]
    count = element_count(shape)
    if len(raw) != count * dtype.itemsize:
        raise InvalidTensor(
            f"input {name!r}: {len(raw)} bytes of {datatype} do not fill shape {list(shape)} "
            f"({count * dtype.itemsize} bytes expected)"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def to_bytes(datatype: str, values: np.ndarray | Sequence[bytes]) -> bytes:
    """A tensor's binary form (``BYTES``: length-prefixed elements)."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in values)  # type: ignore[arg-type]
    return np.ascontiguousarray(np.asarray(values), dtype=NUMPY_TYPES[datatype]).tobytes()


def binary_slices(sizes: Sequence[int | None], tail: bytes) -> list[bytes | None]:
    """Cut the binary tail into one slice per tensor that declared ``binary_data_size``.

    Args:
        sizes: Per tensor in JSON order, its ``binary_data_size`` or None (JSON data).
        tail: The bytes after the JSON header.

    Raises:
        InvalidInput: Sizes are negative or do not add up to the tail's length.
    """
    out: list[bytes | None] = []
    offset = 0
    for size in sizes:
        if size is None:
            out.append(None)
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(tail):
            raise InvalidInput(
                f"binary_data_size {size!r} does not fit the {len(tail) - offset} binary bytes left"
            )
        out.append(tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise InvalidInput(f"{len(tail) - offset} binary bytes follow the last declared tensor")
    return out
