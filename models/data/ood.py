"""Out-of-distribution inputs for evaluating a detector against a model's data set.

Every source returns float images (N, C, H, W) in [0, 1] shaped for the model (``shape`` =
(C, H, W)), and is deterministic given its ``seed``:

- ``other_dataset``: images of another data set (Fashion-MNIST for MNIST and the reverse),
  converted to the model's channels and size;
- ``side_by_side``: two images of another data set next to each other, for a model of pairs
  (two-digit MNIST: two Fashion-MNIST items in place of the two digits); ``other_images`` picks
  this or ``other_dataset`` for a model's data set;
- ``single_digits``: one MNIST test digit in one half of a two-digit MNIST input, the other half
  blank;
- ``uniform_noise`` and ``gaussian_noise`` (clipped to [0, 1]);
- ``rotations``: given in-distribution inputs rotated by random angles up to 45 degrees;
- ``photo_crops``: random crops of the two photos ``sklearn.datasets.load_sample_images()``
  ships (offline), grey for one-channel models.

``make_ood(source, ...)`` picks one by name, for command lines and evaluation loops.
"""

import functools
import os

import numpy as np
import torch
from torch import Tensor

from models.data.registry import load_dataset
from models.data.transforms import resize, rotate, to_shape
from models.data.two_digit import permutation_stream, place_side_by_side

OOD_SOURCES = ("dataset", "uniform", "gaussian", "rotation", "photos")
# The conventional "other data set" of each registered one: same geometry, other content.
PAIRED_DATASET = {
    "mnist": "fashion-mnist",
    "fashion-mnist": "mnist",
    "cifar10": "fashion-mnist",
    "two-digit-mnist": "fashion-mnist",
}
# Data sets of two images side by side: their other data set comes in pairs too.
SIDE_BY_SIDE = frozenset({"two-digit-mnist"})


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) with C = 1 or 3, got {shape}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def other_dataset(
    name: str,
    n: int,
    shape: tuple[int, int, int],
    *,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> Tensor:
    """``n`` images of data set ``name`` converted to ``shape``.

    Args:
        name: a registered data set (``models.data.registry.DATASETS``).
        n: number of images (at most the split's size).
        shape: target (C, H, W); colour becomes ITU-R 601 grey, grey is repeated to three
            channels, and the size changes by bilinear resizing.
        split: which split to draw from.
        data_dir: data directory (default ``$GGA_DATA_DIR``).
        seed: seeds the subset where the reader draws one (image folders).

    Returns:
        Float images (n, C, H, W) in [0, 1].

    Raises:
        DataError: the data set cannot be found or read.
    """
    c, h, w = _check_shape(shape)
    data = load_dataset(name, split, data_dir=data_dir, limit=n, seed=seed)
    return to_shape(data.float(), (c, h, w)).clamp(0.0, 1.0)


def side_by_side(
    name: str,
    n: int,
    shape: tuple[int, int, int],
    *,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> Tensor:
    """``n`` pairs of data set ``name``'s images, each pair side by side in one input.

    Every image of the split is used once on the left before any repeats (likewise on the
    right), in a seeded order.

    Args:
        name: a registered data set (Fashion-MNIST for a two-digit MNIST model).
        n: number of inputs.
        shape: target (C, H, W); the left image is converted to (C, H, W // 2), the right one to
            the rest of the width (two-digit MNIST: 28x28 each, unchanged).
        split: which split to draw from.
        data_dir: data directory (default ``$GGA_DATA_DIR``).
        seed: seeds the pairs.

    Returns:
        Float images (n, C, H, W) in [0, 1].

    Raises:
        DataError: the data set cannot be found or read.
    """
    c, h, w = _check_shape(shape)
    images = load_dataset(name, split, data_dir=data_dir).float()
    generator = _generator(seed)
    left, right = (permutation_stream(torch.arange(len(images)), n, generator) for _ in "lr")
    pairs = place_side_by_side(
        to_shape(images[left], (c, h, w // 2)), to_shape(images[right], (c, h, w - w // 2))
    )
    return pairs.clamp(0.0, 1.0)


def other_images(
    dataset: str,
    n: int,
    shape: tuple[int, int, int],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> Tensor:
    """``n`` inputs of ``dataset``'s other data set (``PAIRED_DATASET``) for its models: pairs
    side by side for a data set of pairs (``SIDE_BY_SIDE``), else ``other_dataset``'s images.

    Raises:
        KeyError: ``dataset`` has no other data set.
        DataError: the other data set cannot be found or read.
    """
    other = PAIRED_DATASET[dataset]
    if dataset in SIDE_BY_SIDE:
        return side_by_side(other, n, shape, data_dir=data_dir, seed=seed)
    return other_dataset(other, n, shape, data_dir=data_dir, seed=seed)


def single_digits(
    n: int,
    shape: tuple[int, int, int],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> Tensor:
    """``n`` two-digit MNIST inputs with one digit only: an MNIST test digit in the left or the
    right half (at random), the other half blank.

    Every test digit is used once before any repeats, in a seeded order.

    Args:
        n: number of inputs.
        shape: target (C, H, W); the digit is converted to (C, H, W // 2), two-digit MNIST's
            halves (28x28, unchanged).
        data_dir: data directory (default ``$GGA_DATA_DIR``).
        seed: seeds the digits and their sides.

    Returns:
        Float images (n, C, H, W) in [0, 1].

    Raises:
        DataError: MNIST cannot be found or read.
    """
    c, h, w = _check_shape(shape)
    digits = load_dataset("mnist", "test", data_dir=data_dir).float()
    generator = _generator(seed)
    chosen = to_shape(
        digits[permutation_stream(torch.arange(len(digits)), n, generator)], (c, h, w // 2)
    )
    on_right = torch.rand(n, generator=generator) < 0.5
    out = torch.zeros(n, c, h, w)
    out[~on_right, :, :, : w // 2] = chosen[~on_right]
    out[on_right, :, :, w - w // 2 :] = chosen[on_right]
    return out.clamp(0.0, 1.0)


def uniform_noise(n: int, shape: tuple[int, int, int], *, seed: int = 0) -> Tensor:
    """Pixels drawn independently and uniformly from [0, 1]."""
    return torch.rand(n, *_check_shape(shape), generator=_generator(seed))


def gaussian_noise(
    n: int, shape: tuple[int, int, int], *, mean: float = 0.5, std: float = 0.25, seed: int = 0
) -> Tensor:
    """Pixels drawn from N(mean, std^2), clipped to [0, 1]."""
    noise = torch.randn(n, *_check_shape(shape), generator=_generator(seed))
    return (mean + std * noise).clamp(0.0, 1.0)


def rotations(x: Tensor, *, max_degrees: float = 45.0, seed: int = 0) -> Tensor:
    """Rotate each input by an angle drawn uniformly from [-max_degrees, max_degrees].

    Args:
        x: float inputs (N, C, H, W) in [0, 1], typically in-distribution test images.
        max_degrees: the largest absolute angle.
        seed: seeds the angles.

    Returns:
        Rotated inputs, zero outside the original image, clipped to [0, 1].
    """
    angles = (2 * torch.rand(x.shape[0], generator=_generator(seed)) - 1) * max_degrees
    return rotate(x, angles.to(dtype=x.dtype, device=x.device)).clamp(0.0, 1.0)


@functools.cache
def _sample_photos() -> tuple[Tensor, ...]:
    # Imported here: scikit-learn is only needed for this source, and reading the JPEGs takes
    # a moment, so it happens once per process. np.array copies: sklearn's arrays are read-only.
    from sklearn.datasets import load_sample_images

    return tuple(
        torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255.0
        for photo in load_sample_images().images
    )  # each (3, 427, 640)


def photo_crops(
    n: int, shape: tuple[int, int, int], *, max_scale: float = 1.0, seed: int = 0
) -> Tensor:
    """Random crops of scikit-learn's two sample photos (a temple in China, a flower).

    Args:
        n: number of crops.
        shape: target (C, H, W); one channel means ITU-R 601 grey.
        max_scale: crops are squares-by-shape of up to ``max_scale`` times (H, W) resized down to
            (H, W); 1.0 gives raw pixel crops, larger values show more of the scene.
        seed: seeds the photo, scale and position of each crop.

    Returns:
        Float images (n, C, H, W) in [0, 1].
    """
    c, h, w = _check_shape(shape)
    photos = _sample_photos()
    generator = _generator(seed)
    crops = []
    for _ in range(n):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        scale = 1.0 + (max_scale - 1.0) * float(torch.rand(1, generator=generator))
        ch = min(round(h * scale), photo.shape[1])
        cw = min(round(w * scale), photo.shape[2])
        top = int(torch.randint(photo.shape[1] - ch + 1, (1,), generator=generator))
        left = int(torch.randint(photo.shape[2] - cw + 1, (1,), generator=generator))
        crop = photo[:, top : top + ch, left : left + cw].unsqueeze(0)  # (1, 3, ch, cw)
        crops.append(resize(crop, (h, w)))
    batch = torch.cat(crops) if crops else torch.empty(0, 3, h, w)
    return to_shape(batch, (c, h, w)).clamp(0.0, 1.0)


def make_ood(
    source: str,
    n: int,
    shape: tuple[int, int, int],
    *,
    inputs: Tensor | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> Tensor:
    """One out-of-distribution batch by source name.

    Args:
        source: one of ``OOD_SOURCES``.
        n: number of images.
        shape: the model's (C, H, W).
        inputs: in-distribution images to rotate (``"rotation"``; the first ``n`` are used).
        dataset: the other data set (``"dataset"``).
        data_dir: data directory for ``"dataset"``.
        seed: seeds the source.

    Returns:
        Float images (n, C, H, W) in [0, 1] (fewer for ``"rotation"`` if fewer inputs given).

    Raises:
        ValueError: unknown source, or a source's argument is missing.
    """
    if source == "dataset":
        if dataset is None:
            raise ValueError("the 'dataset' OOD source needs dataset=NAME (e.g. 'fashion-mnist')")
        return other_dataset(dataset, n, shape, data_dir=data_dir, seed=seed)
    if source == "uniform":
        return uniform_noise(n, shape, seed=seed)
    if source == "gaussian":
        return gaussian_noise(n, shape, seed=seed)
    if source == "rotation":
        if inputs is None:
            raise ValueError("the 'rotation' OOD source needs inputs=in-distribution images")
        return rotations(inputs[:n], seed=seed)
    if source == "photos":
        return photo_crops(n, shape, seed=seed)
    raise ValueError(f"unknown OOD source {source!r}; choose one of {', '.join(OOD_SOURCES)}")
