"""A user's own labelled images for a model: a folder of class folders, or the readers' tarball.

Accepted forms, checked against the model card:

- ``DIR/<class>/*.png|jpg`` (one sub-folder per class, named as the card's classes);
- ``DIR/train/<class>/*`` or a ``.tar.gz``/``.tgz``/``.tar`` of ``train/<class>/*`` (the
  image-folder form ``models.data.image_folder`` reads, a top folder allowed).

Images are brought to the card's input: grey to colour by repetition, colour to grey by the
BT.601 luma (as the service decodes), and another size resized as the card says (or refused).
"""

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from models.data.dataset import Dataset
from models.data.image_folder import is_tarball, read_image_folder
from models.errors import DataError

MIN_PER_CLASS = 10
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def read_labelled_images(
    source: Path,
    class_names: Sequence[str],
    input_shape: tuple[int, int, int],
    resize: bool = True,
    min_per_class: int = MIN_PER_CLASS,
) -> Dataset:
    """The labelled images in ``source``, as the model's input, labels in the card's order.

    Args:
        source: a folder of class folders, or one holding ``train/``, or such a tarball.
        class_names: the card's class names (folder names must be among them).
        input_shape: the card's (C, H, W).
        resize: resize images of another size (bilinear, antialiased) instead of refusing them.
        min_per_class: fewest images each class must have.

    Returns:
        A ``Dataset`` of uint8 images of ``input_shape``.

    Raises:
        DataError: nothing readable, a folder not among the card's classes, a class with fewer
            than ``min_per_class`` images, or a size that differs while ``resize`` is off.
    """
    source = Path(source)
    names = tuple(class_names)
    if is_tarball(source):
        data = read_image_folder(source, "train", class_names=names)
    elif not source.is_dir():
        raise DataError(f"{source}: no such folder or tarball of labelled images")
    elif (source / "train").is_dir():
        data = read_image_folder(source, "train", class_names=names)
    else:
        data = read_image_folder(source.parent, source.name, class_names=names)
    counts = data.class_counts()
    few = {names[k]: n for k, n in enumerate(counts) if n < min_per_class}
    if few:
        raise DataError(
            f"{source}: too few images for class(es) {few}; each of the model's "
            f"{len(names)} classes needs at least {min_per_class} (one folder per class, named "
            f"as in the card: {list(names)})"
        )
    return Dataset(_to_input(data.x, input_shape, resize, source), data.y, names, source.name)


def _to_input(x: torch.Tensor, shape: tuple[int, int, int], resize: bool, source: Path):
    c, h, w = shape
    if x.shape[1] != c:
        x = x.float()
        x = x.repeat(1, 3, 1, 1) if c == 3 else (x * _LUMA).sum(1, keepdim=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    if tuple(x.shape[2:]) != (h, w):
        if not resize:
            raise DataError(
                f"{source}: images are {x.shape[3]}x{x.shape[2]}, the model takes {w}x{h} and "
                "its card does not resize: resize them first"
            )
        x = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()
