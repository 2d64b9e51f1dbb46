"""IDX files, the format of MNIST and Fashion-MNIST (gzipped or not).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the data. We read only unsigned bytes (type 0x08):
images have magic 2051 (three dimensions N, H, W) and labels 2049 (one dimension N).
"""

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from models.data.dataset import Dataset, first_in_file_order
from models.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_GZIP_MAGIC = b"\x1f\x8b"
# File-name prefix of each split in the standard distribution.
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def idx_file_names(split: str) -> tuple[str, str]:
    """The standard (images, labels) file names of a split, without ``.gz``.

    Raises:
        DataError: ``split`` is neither ``"train"`` nor ``"test"``.
    """
    if split not in SPLIT_PREFIX:
        raise DataError(f"unknown split {split!r}: IDX data sets have 'train' and 'test'")
    prefix = SPLIT_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.gz`` if it exists, else ``folder/stem``, else None."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _open(path: Path) -> BinaryIO:
    if path.suffix != ".gz":
        return path.open("rb")
    with path.open("rb") as raw:
        if raw.read(2) != _GZIP_MAGIC:
            raise DataError(
                f"{path}: not a gzip file although its name ends in .gz "
                "(re-download it, or drop the .gz suffix if it is a plain IDX file)"
            )
    return gzip.open(path, "rb")  # type: ignore[return-value]


def _read_exact(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(
            f"{path}: truncated: expected {n} bytes of {what}, found {len(data)} (re-download it)"
        )
    return data


def read_idx(path: Path, magic: int, limit: int | None = None) -> tuple[np.ndarray, int]:
    """Read an unsigned-byte IDX file.

    Args:
        path: the file, gzipped when its name ends in ``.gz``.
        magic: the expected magic number (``IMAGES_MAGIC`` or ``LABELS_MAGIC``).
        limit: read only the first ``limit`` items (the rest of the file is not decompressed,
            so it is not checked either).

    Returns:
        The data, shaped as the header says (first axis cut to ``limit``), and the item count
        the header declares.

    Raises:
        DataError: the file is not gzip, has the wrong magic number or dimensions, is truncated,
            or has bytes after the data.
    """
    try:
        with _open(path) as f:
            header = _read_exact(f, 4, path, "header")
            found = int.from_bytes(header, "big")
            if found != magic:
                kind = "images" if magic == IMAGES_MAGIC else "labels"
                raise DataError(
                    f"{path}: wrong magic number {found} (expected {magic} for IDX {kind}); "
                    "is it the right file?"
                )
            ndim = header[3]  # the magic number fixes it: 3 for images, 1 for labels
            dims = [int.from_bytes(_read_exact(f, 4, path, "header"), "big") for _ in range(ndim)]
            count = dims[0]
            rows = count if limit is None else min(limit, count)
            item = math.prod(dims[1:])
            data = _read_exact(f, rows * item, path, f"data ({count} items of {item} bytes)")
            if limit is None and f.read(1):
                raise DataError(
                    f"{path}: has bytes after the {count} items its header declares (corrupt file)"
                )
    except (EOFError, OSError, zlib.error) as err:
        # gzip signals a cut-off or damaged stream this way; FileNotFoundError is checked earlier.
        raise DataError(
            f"{path}: truncated or corrupt gzip stream ({err}); re-download it"
        ) from err
    array = np.frombuffer(data, dtype=np.uint8).reshape(rows, *dims[1:])
    return array, count


def read_idx_split(
    folder: Path,
    split: str,
    *,
    class_names: tuple[str, ...],
    name: str,
    limit: int | None = None,
) -> Dataset:
    """Read one split of an MNIST-style data set from its two IDX files.

    Args:
        folder: directory holding ``train-images-idx3-ubyte[.gz]`` etc.
        split: ``"train"`` or ``"test"`` (``t10k-*`` files).
        class_names: names of labels ``0..K-1``.
        name: recorded in the returned data set.
        limit: keep only the first ``limit`` images, in file order.

    Returns:
        A ``Dataset`` with x of shape (N, 1, H, W).

    Raises:
        DataError: a file is missing or bad, the two files disagree on the count, or a label is
            outside ``range(len(class_names))``.
    """
    image_stem, label_stem = idx_file_names(split)
    image_path, label_path = find_idx_file(folder, image_stem), find_idx_file(folder, label_stem)
    for stem, path in ((image_stem, image_path), (label_stem, label_path)):
        if path is None:
            raise DataError(f"{folder}: missing {stem}.gz (or {stem})")
    assert image_path is not None and label_path is not None  # narrowed by the loop above
    images, n_images = read_idx(image_path, IMAGES_MAGIC, limit)
    labels, n_labels = read_idx(label_path, LABELS_MAGIC, limit)
    if n_images != n_labels:
        raise DataError(
            f"{image_path} holds {n_images} images but {label_path} holds {n_labels} labels; "
            "the two files must come from the same split"
        )
    if labels.size and int(labels.max()) >= len(class_names):
        raise DataError(
            f"{label_path}: label {int(labels.max())} outside 0..{len(class_names) - 1}"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, H, W); copy: frombuffer is read-only
    y = torch.from_numpy(labels.astype(np.int64))
    drawn = "all" if len(y) == n_labels else first_in_file_order(len(y))
    return Dataset(x, y, class_names, name, drawn)
