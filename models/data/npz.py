"""``.npz`` archives with arrays ``x`` (images) and ``y`` (labels), and optionally
``class_names``.

Layouts of ``x``:

- (N, H, W): grey images;
- (N, C, H, W) with C in {1, 3}: channels first (preferred when both readings are possible);
- (N, H, W, C) with C in {1, 3}: channels last, as most image libraries write them.

``x`` is uint8 in 0..255, or float in [0, 1] (rounded to uint8: the data sets here are 8-bit).
``y`` holds integer labels 0..K-1; class names default to ``"0"``..``"K-1"``.
"""

import zipfile
from pathlib import Path

import numpy as np
import torch

from models.data.dataset import Dataset, first_in_file_order
from models.errors import DataError


def _to_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    raise DataError(
        f"{path}: x has shape {x.shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C) "
        "with C = 1 or 3"
    )


def _to_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise DataError(f"{path}: float x must lie in [0, 1] (scale 0..255 data by 1/255)")
        return np.rint(x * 255.0).astype(np.uint8)
    raise DataError(f"{path}: x has dtype {x.dtype}; save uint8 (0..255) or float in [0, 1]")


def read_npz(
    path: Path,
    *,
    class_names: tuple[str, ...] | None = None,
    name: str | None = None,
    limit: int | None = None,
) -> Dataset:
    """Read images and labels from an ``.npz`` file (layouts in the module docstring).

    Args:
        path: the file.
        class_names: names of labels ``0..K-1``; default: the file's ``class_names`` array, else
            ``"0"``..``"K-1"`` with K = max label + 1.
        name: recorded in the returned data set (default: the file name).
        limit: keep only the first ``limit`` images.

    Returns:
        A ``Dataset``.

    Raises:
        DataError: the file is missing or not an npz, ``x`` or ``y`` is missing or malformed,
            their lengths differ, or a label is out of range.
    """
    try:
        archive = np.load(path, allow_pickle=False)
        if not hasattr(archive, "files"):
            raise DataError(f"{path}: holds a single array, not an .npz archive of x and y")
        with archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: no array {' or '.join(missing)} (found {archive.files}); save with "
                    "np.savez(path, x=images, y=labels)"
                )
            x, y = archive["x"], archive["y"]
            stored_names = archive["class_names"] if "class_names" in archive.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from err
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{path}: x holds {len(x)} images but y holds {len(y)} labels")
    drawn = "all"
    if limit is not None and limit < len(y):
        x, y = x[:limit], y[:limit]
        drawn = first_in_file_order(limit)
    x = _to_uint8(_to_nchw(x, path), path)
    if class_names is None:
        if stored_names is not None:
            class_names = tuple(str(c) for c in stored_names)
        else:
            class_names = tuple(str(i) for i in range(int(y.max()) + 1 if y.size else 0))
    if y.size and (int(y.min()) < 0 or int(y.max()) >= len(class_names)):
        raise DataError(
            f"{path}: labels span {int(y.min())}..{int(y.max())}, outside 0..{len(class_names) - 1}"
        )
    return Dataset(
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(y.astype(np.int64)),
        class_names,
        name or path.name,
        drawn,
    )
