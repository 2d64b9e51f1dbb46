"""Named data sets (``mnist``, ``fashion-mnist``, ``cifar10``, ``two-digit-mnist``) and where to
find their files.

A data directory comes from the caller (``--data-dir``) or ``$GGA_DATA_DIR``; a data set's files
may sit in ``<dir>/<name>/`` or in ``<dir>`` itself. Nothing is downloaded and no default
location is assumed: a user keeps their own copy wherever they like. A derived data set
(``two-digit-mnist``) has no files of its own: it is built in memory from the files of the data
set it derives from (``models.data.two_digit``).
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.data import two_digit
from models.data.dataset import Dataset
from models.data.idx import find_idx_file, idx_file_names, read_idx_split
from models.data.image_folder import read_image_folder
from models.data.npz import read_npz
from models.errors import DataError

DATA_DIR_ENV = "GGA_DATA_DIR"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """What a named data set looks like on disk and in memory.

    Attributes:
        name: registry name, also the sub-folder looked in.
        class_names: label names in label order.
        input_shape: (C, H, W) of one image.
        layout: ``"idx"`` (four IDX files), ``"image-folder"`` (``<split>/<class>/*``, as a
            directory or one of ``archives``) or ``"derived"`` (built from ``source``).
        archives: tarball names of an image-folder data set, in order of preference.
        source: the registered data set a derived one is built from.
    """

    name: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    layout: Literal["idx", "image-folder", "derived"]
    archives: tuple[str, ...] = ()
    source: str = ""


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", tuple(str(i) for i in range(10)), (1, 28, 28), "idx"),
        DatasetSpec(
            "fashion-mnist",
            (
                "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
            ),
            (1, 28, 28),
            "idx",
        ),
        DatasetSpec(
            "cifar10",
            (
                "airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck",
            ),
            (3, 32, 32),
            "image-folder",
            archives=("cifar10-jpeg.tar.gz", "cifar10.tar.gz", "cifar10.tgz"),
        ),
        DatasetSpec(
            two_digit.NAME, two_digit.CLASS_NAMES, two_digit.INPUT_SHAPE, "derived",
            source=two_digit.SOURCE,
        ),
    )
}  # fmt: skip


def dataset_names() -> tuple[str, ...]:
    """Names ``load_dataset`` knows."""
    return tuple(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``.

    Raises:
        DataError: unknown name; the message lists the known ones.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}"
        ) from None


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """``data_dir`` if given, else ``$GGA_DATA_DIR``.

    Raises:
        DataError: neither is set.
    """
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV)
    if not chosen:
        raise DataError(
            f"no data directory: pass --data-dir DIR or set {DATA_DIR_ENV}=DIR "
            "(a folder holding mnist/, fashion-mnist/, cifar10/ or their files)"
        )
    return Path(chosen).expanduser()


def expected_files(spec: DatasetSpec, split: str) -> str:
    """The files a split needs, in words, for error messages."""
    if spec.layout == "idx":
        images, labels = idx_file_names(split)
        files = f"{images}.gz and {labels}.gz (or un-gzipped)"
    else:
        files = f"{' or '.join(spec.archives)} or a {split}/<class>/*.jpg|png folder"
    return f"{files}, or {split}.npz"


def _load_from(
    place: Path, spec: DatasetSpec, split: str, limit: int | None, seed: int
) -> Dataset | None:
    """The split read from ``place``, or None when none of its files are there."""
    npz = place / f"{split}.npz"
    if spec.layout == "idx":
        if any(find_idx_file(place, stem) for stem in idx_file_names(split)):
            return read_idx_split(
                place, split, class_names=spec.class_names, name=spec.name, limit=limit
            )
    else:
        for archive in spec.archives:
            if (place / archive).is_file():
                return read_image_folder(
                    place / archive, split, class_names=spec.class_names, name=spec.name,
                    limit=limit, seed=seed,
                )  # fmt: skip
        if (place / split).is_dir():
            return read_image_folder(
                place, split, class_names=spec.class_names, name=spec.name, limit=limit, seed=seed
            )
    if npz.is_file():
        return read_npz(npz, class_names=spec.class_names, name=spec.name, limit=limit)
    return None


def _load_derived(
    spec: DatasetSpec, split: str, data_dir: str | os.PathLike[str] | None, limit: int | None
) -> Dataset:
    """``split`` of a derived data set, built from the whole of its source's ``split`` (the
    pairs draw from all of it; ``limit`` keeps a prefix of the pairs)."""
    try:
        source = load_dataset(spec.source, split, data_dir=data_dir)
    except DataError as err:
        raise DataError(f"{spec.name} is built from {spec.source}, which failed: {err}") from err
    return two_digit.make_two_digit(source, split, limit)


def load_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load one split of a named data set.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or ``"two-digit-mnist"``.
        split: ``"train"`` or ``"test"``.
        data_dir: the data directory; default ``$GGA_DATA_DIR``. The files may be in
            ``<data_dir>/<name>/`` or in ``<data_dir>`` itself.
        limit: keep at most this many images. IDX and npz files: the first ``limit`` in file
            order (already shuffled in MNIST and Fashion-MNIST). Image folders, stored class by
            class: a seeded subset balanced over the classes. Two-digit MNIST: the first
            ``limit`` pairs, balanced over the classes by construction.
        seed: seeds the image-folder subset. Two-digit MNIST's pairs are always drawn with
            its own fixed seed (``models.data.two_digit.PAIRING_SEED``), so that every load,
            in training, fitting and evaluation, sees the same pairs.

    Returns:
        The ``Dataset``, x uint8 (N, C, H, W) with (C, H, W) the registered input shape.

    Raises:
        DataError: unknown name or split, no data directory, the files are in none of the places
            looked (the message lists them and the files expected), or a file is bad.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} of {name}; choose one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of images, got {limit}")
    if spec.layout == "derived":
        return _load_derived(spec, split, data_dir, limit)
    root = resolve_data_dir(data_dir)
    places = [root / name, root]
    for place in places:
        dataset = _load_from(place, spec, split, limit, seed) if place.is_dir() else None
        if dataset is not None:
            if dataset.shape != spec.input_shape:
                raise DataError(
                    f"{place}: {name} {split} images are {dataset.shape} (C, H, W), expected "
                    f"{spec.input_shape}; is this folder another data set?"
                )
            return dataset
    raise DataError(
        f"{name} {split} split not found; looked in {', '.join(str(p) for p in places)} for "
        f"{expected_files(spec, split)}; point at the folder with --data-dir DIR or "
        f"{DATA_DIR_ENV}=DIR"
    )
