"""Feature squeezing (Xu et al., NDSS 2018): copies of an input with detail taken away.

A clean input is classified the same with or without the detail that bit-depth reduction, a
median filter or a slight blur remove; an adversarial perturbation mostly lives in that detail, so
the prediction on the squeezed copy moves. The engine runs the model on each squeezer's copy
(``EngineOptions.squeeze``: one extra forward per squeezer, no backward) and the ``squeeze``
view (``detectors.views.squeeze``) scores how far the softmax moved.

Every squeezer takes and returns float pixels (B, C, H, W) in [0, 1]. ``SQUEEZERS`` is fixed: its
order is the order of the engine's squeezed logits, and a fitted view refers to squeezers by name.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def bit_depth(x: Tensor, bits: int) -> Tensor:
    """Each pixel rounded to one of ``2**bits`` levels (Xu et al.: 1 bit on MNIST, 5 on CIFAR)."""
    levels = 2**bits - 1
    return torch.round(x * levels) / levels


def median_2x2(x: Tensor) -> Tensor:
    """The median of each 2 x 2 window (Xu et al.'s MNIST and CIFAR choice), same size out.

    With an even window the median of four values is their mean of the middle two; the window
    reaches one pixel right and down, the last row and column repeated (replicate padding).
    """
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")
    windows = padded.unfold(2, 2, 1).unfold(3, 2, 1)  # (B, C, H, W, 2, 2)
    ordered = windows.reshape(*windows.shape[:4], 4).sort(dim=-1).values
    return (ordered[..., 1] + ordered[..., 2]) / 2


def gaussian_blur(x: Tensor, sigma: float = 0.5) -> Tensor:
    """A 3 x 3 Gaussian blur of each channel (reflect padding): the smallest smoothing."""
    t = torch.arange(-1, 2, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=x.shape[1])


SQUEEZERS: dict[str, Callable[[Tensor], Tensor]] = {
    "bits1": lambda x: bit_depth(x, 1),
    "bits4": lambda x: bit_depth(x, 4),
    "median2": median_2x2,
    "blur": gaussian_blur,
}


def squeezed_logits(model: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The model's logits on each squeezer's copy of ``x``: (B, S, classes), ``SQUEEZERS`` order.

    One forward per squeezer, without gradients.
    """
    with torch.no_grad():
        return torch.stack([model(squeeze(x)) for squeeze in SQUEEZERS.values()], dim=1)
