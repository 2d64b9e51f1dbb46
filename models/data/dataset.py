"""The in-memory data set every reader returns: uint8 pixels, int64 labels, class names."""

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor


def first_in_file_order(n: int) -> str:
    """``Dataset.drawn`` of a reader that kept the first ``n`` images of a file."""
    return f"the first {n} in file order"


@dataclass(frozen=True)
class Dataset:
    """Images and labels of one split of one data set, held in memory.

    Pixels stay uint8 so that a full split is small (Fashion-MNIST train: 47 MB); ``float()``
    gives the [0, 1] pixels every model takes.

    Attributes:
        x: uint8 images, (N, C, H, W).
        y: int64 labels, (N,), each in ``range(len(class_names))``.
        class_names: name of each label.
        name: where the data came from (a registered name like ``"mnist"``, or a file name).
        drawn: which of the split's images these are, in words, for reports: ``"all"``, ``"the
            first 1000 in file order"`` or ``"a class-balanced subset, seed 0"``.
    """

    x: Tensor
    y: Tensor
    class_names: tuple[str, ...]
    name: str
    drawn: str = "all"

    def __post_init__(self) -> None:
        # Readers build these from checked files, so a failure here is a bug, not a user error.
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(
                f"x must be uint8 (N, C, H, W), got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.shape != (self.x.shape[0],):
            raise ValueError(
                f"y must be int64 ({self.x.shape[0]},), got {self.y.dtype} {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """The (C, H, W) of one image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def float(self) -> Tensor:
        """All images as float32 (N, C, H, W) in [0, 1]."""
        return self.x.to(torch.float32) / 255.0

    def head(self, n: int) -> "Dataset":
        """The first ``n`` images (all of them if there are fewer)."""
        if n >= len(self):
            return self
        drawn = first_in_file_order(n) if self.drawn == "all" else f"the first {n} of {self.drawn}"
        return replace(self.subset(torch.arange(n)), drawn=drawn)

    def subset(self, idx: Tensor | Sequence[int]) -> "Dataset":
        """The images at positions ``idx``, in that order.

        Args:
            idx: integer indices (a tensor, list or range).

        Returns:
            A new ``Dataset`` with the same class names and name, drawn "chosen by index".
        """
        index = torch.as_tensor(idx, dtype=torch.long)
        return Dataset(self.x[index], self.y[index], self.class_names, self.name, "chosen by index")

    def class_counts(self) -> list[int]:
        """Number of images of each class, indexed by label."""
        return torch.bincount(self.y, minlength=len(self.class_names)).tolist()


def stratified_indices(y: Tensor, n: int, seed: int = 0) -> Tensor:
    """Indices of ``n`` items spread as evenly over the classes as the data allow.

    Classes take turns (label order) drawing items in a seeded random order, so every class gets
    ``n // K`` or one more, unless it runs out and the others fill in.

    Args:
        y: int64 labels, (N,).
        n: how many to keep (all of them if ``n >= N``).
        seed: seeds the order within each class.

    Returns:
        Sorted int64 indices into ``y``, so the subset keeps the original order.
    """
    if n >= len(y):
        return torch.arange(len(y))
    generator = torch.Generator().manual_seed(seed)
    rank = torch.empty(len(y), dtype=torch.long)
    for label in torch.unique(y):
        members = torch.nonzero(y == label).flatten()
        rank[members[torch.randperm(len(members), generator=generator)]] = torch.arange(
            len(members)
        )
    # Sort by (rank, label): round r hands each class its r-th item in turn.
    key = rank * (int(y.max()) + 1) + y
    return torch.sort(torch.argsort(key)[:n]).values
