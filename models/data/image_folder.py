"""Image-folder trees ``<split>/<class>/*.jpg|png``, from a directory or straight from a tarball.

Class folders sorted by name give the labels 0..K-1 (or the registry's class names do). The
tarball is streamed member by member (``tarfile`` mode ``r|*``): nothing is unpacked to disk.
We keep the compressed bytes of the wanted split, choose the subset if there is a ``limit``, and
decode only those: decoding dominates the cost, reading 60,000 small members does not.
"""

import io
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from models.data.dataset import Dataset, stratified_indices
from models.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L"})

# (class folder, file name, encoded bytes or the path to read them from)
_Entry = tuple[str, str, bytes | Path]


def is_tarball(path: Path) -> bool:
    """Whether ``path`` names a tarball we can stream (by its suffix)."""
    return path.name.endswith(TAR_SUFFIXES)


def _entries_from_dir(root: Path, split: str) -> list[_Entry]:
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataError(
            f"{root}: no {split}/ folder of class folders (found folders: {found or 'none'})"
        )
    return [
        (class_dir.name, f.name, f)
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir())
        for f in sorted(class_dir.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
    ]


def _entries_from_tar(path: Path, split: str) -> list[_Entry]:
    entries: list[_Entry] = []
    splits_seen: set[str] = set()
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                # Accept a leading top folder: only <split>/<class>/<file> at the end matters.
                if not member.isfile() or len(parts) < 3:
                    continue
                if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                splits_seen.add(parts[-3])
                if parts[-3] == split:
                    f = tar.extractfile(member)
                    assert f is not None  # a regular file always has a payload
                    entries.append((parts[-2], parts[-1], f.read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"{path}: truncated or not a tar archive ({err}); re-download it") from err
    if not entries:
        raise DataError(
            f"{path}: no images under {split}/<class>/ "
            f"(splits found: {sorted(splits_seen) or 'none'})"
        )
    entries.sort(key=lambda e: (e[0], e[1]))
    return entries


def _decode(entry: _Entry, source: Path) -> np.ndarray:
    class_name, file_name, payload = entry
    where = payload if isinstance(payload, Path) else f"{source}:{class_name}/{file_name}"
    try:
        data = payload.read_bytes() if isinstance(payload, Path) else payload
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as im:
            im = im.convert("L" if im.mode in _GREY_MODES else "RGB")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{where}: not a readable PNG or JPEG image ({err})") from err


def read_image_folder(
    source: Path,
    split: str,
    *,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Read one split of an image-folder tree.

    Args:
        source: a directory holding ``<split>/<class>/`` folders, or a ``.tar.gz``/``.tgz``/
            ``.tar`` of one (a single top folder inside the archive is allowed).
        split: the split folder to read, e.g. ``"train"`` or ``"test"``.
        class_names: the expected class folders in label order; default: the folders found,
            sorted by name.
        name: recorded in the returned data set (default: the source's file name).
        limit: keep only ``limit`` images, a seeded subset stratified over the classes
            (``stratified_indices``), in file order.
        seed: seeds that subset.

    Returns:
        A ``Dataset`` in (class, file name) order; grey images get one channel, unless the split
        mixes grey and colour, in which case grey images are repeated to three.

    Raises:
        DataError: the split is missing, the archive is corrupt, a file is not an image, a class
            folder is not among ``class_names``, or the images differ in size.
    """
    if is_tarball(source):
        entries = _entries_from_tar(source, split)
    else:
        entries = _entries_from_dir(source, split)
    if not entries:
        raise DataError(f"{source}: no .jpg/.jpeg/.png files under {split}/<class>/")
    found = sorted({e[0] for e in entries})
    names = tuple(class_names) if class_names is not None else tuple(found)
    unknown = [c for c in found if c not in names]
    if unknown:
        raise DataError(
            f"{source}: class folders {unknown} under {split}/ are not among the expected "
            f"classes {list(names)}"
        )
    labels = torch.tensor([names.index(e[0]) for e in entries], dtype=torch.long)
    drawn = "all"
    if limit is not None and limit < len(entries):
        drawn = f"a class-balanced subset, seed {seed}"
        keep = stratified_indices(labels, limit, seed)
        entries = [entries[i] for i in keep.tolist()]
        labels = labels[keep]

    arrays = [_decode(e, source) for e in entries]
    size = arrays[0].shape[:2]
    for entry, array in zip(entries, arrays, strict=True):
        if array.shape[:2] != size:
            raise DataError(
                f"{source}: {entry[0]}/{entry[1]} is {array.shape[1]}x{array.shape[0]} but "
                f"{entries[0][0]}/{entries[0][1]} is {size[1]}x{size[0]}; resize the images "
                "to one size first"
            )
    colour = any(a.ndim == 3 for a in arrays)
    if colour:
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    else:
        x = torch.from_numpy(np.stack(arrays)).unsqueeze(1)  # (N, 1, H, W)
    return Dataset(x, labels, names, name or source.name, drawn)
