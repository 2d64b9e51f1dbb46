"""Training-time augmentation of whole batches of uint8 images, without a per-image loop.

He et al.'s CIFAR augmentation: pad each side with zeros, crop a random window of the original
size, mirror half of the images. Done on the batch as one gather, so it costs a few
milliseconds per batch of 128 and the data set stays decoded in memory as uint8.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(
    x: Tensor, padding: int, hflip: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Randomly shifted (and mirrored) copies of a batch of images.

    Args:
        x: images (B, C, H, W), any dtype (uint8 in training).
        padding: zero padding on each side; each image is cropped back to (H, W) at a random
            offset in ``0..2 * padding`` on each axis. 0 leaves the positions alone.
        hflip: mirror each image left-right with probability 1/2.
        generator: random source of the offsets and flips (CPU).

    Returns:
        The augmented batch, same shape and dtype as ``x``.
    """
    b, c, h, w = x.shape
    out = x
    if padding > 0:
        padded = F.pad(out, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
        batch = torch.arange(b)[:, None, None, None]
        channel = torch.arange(c)[None, :, None, None]
        out = padded[batch, channel, rows, cols]
    if hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out
