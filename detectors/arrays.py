"""Large fitted arrays inside ``detector.json``: little-endian bytes in base64, not long lists.

A k-NN bank of 5,000 features or a 500 x 500 precision matrix as JSON number lists would take
tens of megabytes; as base64 of their raw bytes they take a third of that, still in plain JSON
(no pickle). Small parameters stay readable lists. An array goes through the codec when it is
fitted, so the detector in memory computes with exactly the values the file will hold.
"""

import base64
from typing import Any

import numpy as np

DTYPES: tuple[str, ...] = ("float16", "float32", "float64", "int64")


def encode_array(array: np.ndarray, dtype: str = "float64") -> dict[str, Any]:
    """``{"dtype", "shape", "base64"}`` of ``array`` cast to ``dtype`` (little-endian).

    Raises:
        ValueError: ``dtype`` is not one of ``DTYPES``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    data = np.ascontiguousarray(np.asarray(array).astype(np.dtype(dtype).newbyteorder("<")))
    return {
        "dtype": dtype,
        "shape": list(data.shape),
        "base64": base64.b64encode(data.tobytes()).decode("ascii"),
    }


def decode_array(encoded: dict[str, Any]) -> np.ndarray:
    """The array ``encode_array`` wrote, in its stored dtype (native byte order).

    Raises:
        ValueError: unknown dtype, or a byte count that does not match the shape.
    """
    dtype = encoded["dtype"]
    if dtype not in DTYPES:
        raise ValueError(f"array dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    shape = tuple(int(s) for s in encoded["shape"])
    raw = base64.b64decode(encoded["base64"], validate=True)
    little = np.dtype(dtype).newbyteorder("<")
    if len(raw) != little.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"array of shape {shape} and dtype {dtype} cannot hold {len(raw)} bytes")
    return np.frombuffer(raw, dtype=little).reshape(shape).astype(np.dtype(dtype))


def quantize(array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` as it will read back after ``encode_array(array, dtype)``, as float64."""
    return np.asarray(array).astype(dtype).astype(np.float64)
