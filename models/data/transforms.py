"""Geometric and colour transforms of float image batches (B, C, H, W), in torch only.

They are differentiable in the pixels (attacks and the gradient engine may sit on top) and
need no torchvision.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R BT.601 luma weights, the same as PIL's convert("L").
LUMA_601 = (0.299, 0.587, 0.114)


def _check_batch(x: Tensor, fn: str) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"{fn} takes a float batch (B, C, H, W), got {x.dtype} {tuple(x.shape)}")


def rotate(x: Tensor, degrees: float | Tensor) -> Tensor:
    """Rotate each image about its centre, counter-clockwise for positive angles.

    Bilinear sampling with zero fill outside the original image. A multiple of 90 degrees on a
    square image moves pixel centres onto pixel centres, so it equals ``torch.rot90`` up to
    float rounding.

    Args:
        x: float images (B, C, H, W).
        degrees: one angle for the batch, or a tensor of B angles (one per image).

    Returns:
        Rotated images, same shape and dtype as ``x``.

    Raises:
        ValueError: ``x`` is not a float batch, or ``degrees`` does not have B entries.
    """
    _check_batch(x, "rotate")
    b, _, h, w = x.shape
    angles = torch.as_tensor(degrees, dtype=x.dtype, device=x.device).flatten()
    if angles.numel() == 1:
        angles = angles.expand(b)
    if angles.numel() != b:
        raise ValueError(f"rotate: got {angles.numel()} angles for a batch of {b}")
    theta = angles * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # affine_grid maps each output location to the input location it samples, in coordinates
    # normalised to [-1, 1] per axis; the h/w factors undo that scaling so non-square images
    # rotate rigidly. Image y points down, so this matrix turns the picture counter-clockwise.
    row0 = torch.stack([cos, -sin * h / w, torch.zeros_like(cos)], dim=1)
    row1 = torch.stack([sin * w / h, cos, torch.zeros_like(cos)], dim=1)
    matrix = torch.stack([row0, row1], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resize(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resize images bilinearly (antialiased when shrinking, like PIL).

    Args:
        x: float images (B, C, H, W).
        size: new side of a square, or (H, W).

    Returns:
        Images (B, C, *size); ``x`` itself when the size already matches.
    """
    _check_batch(x, "resize")
    out = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == out:
        return x
    shrinking = out[0] < x.shape[-2] or out[1] < x.shape[-1]
    return F.interpolate(x, size=out, mode="bilinear", align_corners=False, antialias=shrinking)


def to_grey(x: Tensor) -> Tensor:
    """Convert RGB images to one channel of ITU-R 601 luma; grey images pass through.

    Args:
        x: float images (B, 3, H, W) or (B, 1, H, W).

    Returns:
        Images (B, 1, H, W).
    """
    _check_batch(x, "to_grey")
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"to_grey takes 1 or 3 channels, got {x.shape[1]}")
    weights = torch.tensor(LUMA_601, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def to_channels(x: Tensor, channels: int) -> Tensor:
    """Convert images to 1 channel (luma) or 3 (grey repeated).

    Args:
        x: float images (B, 1 or 3, H, W).
        channels: 1 or 3.

    Returns:
        Images (B, channels, H, W).
    """
    _check_batch(x, "to_channels")
    if channels == 1:
        return to_grey(x)
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x
    raise ValueError(f"to_channels supports 1 or 3 channels, got {channels}")


def to_shape(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Convert channels, then resize, so that each image is (C, H, W) = ``shape``."""
    c, h, w = shape
    return resize(to_channels(x, c), (h, w))
