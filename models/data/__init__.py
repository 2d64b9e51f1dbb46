"""Data readers: IDX (MNIST, Fashion-MNIST), image folders (CIFAR-10 tarball), npz, and the
registry of named data sets. ``load_dataset(name, split)`` is the usual entry point.
"""

from models.data.dataset import Dataset, stratified_indices
from models.data.idx import read_idx, read_idx_split
from models.data.image_folder import read_image_folder
from models.data.npz import read_npz
from models.data.registry import (
    DATA_DIR_ENV,
    DATASETS,
    DatasetSpec,
    dataset_names,
    get_spec,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "Dataset",
    "DatasetSpec",
    "dataset_names",
    "get_spec",
    "load_dataset",
    "read_idx",
    "read_idx_split",
    "read_image_folder",
    "read_npz",
    "stratified_indices",
]
