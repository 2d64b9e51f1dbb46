"""Non-adversarial corruptions: the paper's uniform noise and rotations, and common corruptions.

The common corruptions (noise, blur, contrast, brightness, JPEG, pixelate at severities 1-5,
after Hendrycks and Dietterich's CIFAR-10-C) make untrusted inputs that no attacker chose: the
trust detector's fusion learns from them, and evaluation shows them to it.

All share the ``Attack`` interface so the CLI and evaluation treat them alike; they use no
gradients and are untargeted. Success is still "the prediction differs from the label".
"""

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from attacks.base import Attack, AttackParameterError, check_eps
from attacks.norms import Norm, random_in_ball
from models.data.transforms import rotate


class UniformNoise(Attack):
    """``x + u``, u uniform in the ``norm`` ball of radius ``eps``, clipped to [0, 1].

    Args:
        model: classifier (only used to measure success).
        eps: noise radius.
        norm: ``"linf"`` (each pixel uniform in [-eps, eps]) or ``"l2"`` (uniform in the ball).
        seed: seeds the noise.

    Raises:
        AttackParameterError: ``eps`` or ``norm`` is invalid.
    """

    name = "noise"
    supports_targeted = False

    def __init__(
        self, model: nn.Module, eps: float = 0.3, norm: Norm = "linf", seed: int | None = None
    ) -> None:
        super().__init__(model, target_mode=None, seed=seed)
        self.eps = check_eps(eps, norm)
        self.norm = norm

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        return (x + random_in_ball(x, self.eps, self.norm, self.generator)).clamp(0.0, 1.0)


class Rotation(Attack):
    """Rotate each input by an angle drawn uniformly from [-max_degrees, max_degrees].

    Zero fill outside the original image (``models.data.transforms.rotate``).

    Args:
        model: classifier (only used to measure success).
        max_degrees: largest absolute angle, at most 180 (the paper: 45).
        seed: seeds the angles.

    Raises:
        AttackParameterError: ``max_degrees`` is outside (0, 180].
    """

    name = "rotation"
    supports_targeted = False

    def __init__(
        self, model: nn.Module, max_degrees: float = 45.0, seed: int | None = None
    ) -> None:
        super().__init__(model, target_mode=None, seed=seed)
        if not 0 < max_degrees <= 180:
            raise AttackParameterError(f"max_degrees must be in (0, 180], got {max_degrees}")
        self.max_degrees = float(max_degrees)
        self.last_angles: Tensor | None = None  # (B,) degrees of the last batch

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        u = torch.rand(x.shape[0], generator=self.generator)
        angles = (2 * u - 1) * self.max_degrees
        self.last_angles = angles
        return rotate(x, angles.to(x.device)).clamp(0.0, 1.0)


# -- common corruptions (Hendrycks and Dietterich 2019) ------------------------------------------

# Parameters per severity 1..5, those of CIFAR-10-C (Hendrycks and Dietterich, ICLR 2019,
# `make_cifar_c.py`) where a corruption exists there; they are defined on [0, 1] pixels, so they
# apply to grey 28x28 images too. Only corruptions that need no external assets (no frost
# textures) and no libraries beyond torch and PIL are here.
SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise standard deviation
    "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),  # Poisson photon count at white
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # salt-and-pepper fraction
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),  # multiplicative noise std
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur sigma in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # contrast factor about the image mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to every pixel
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # downscale factor before upscaling back
}
CORRUPTIONS: tuple[str, ...] = tuple(SEVERITIES)


def _gaussian_kernel(sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflected borders, per channel."""
    k = _gaussian_kernel(sigma).to(x)
    c, r = x.shape[1], (len(k) - 1) // 2
    out = F.pad(x, (r, r, r, r), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _jpeg(x: Tensor, quality: int) -> Tensor:
    """Each image through a JPEG encode and decode at ``quality`` (PIL)."""
    out = torch.empty_like(x)
    for i, img in enumerate(x):
        array = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(quality))
        decoded = np.asarray(Image.open(buffer)).astype(np.float32) / 255.0
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        out[i] = torch.from_numpy(decoded).permute(2, 0, 1).to(x)
    return out


def corrupt(
    x: Tensor, corruption: str, severity: int, generator: torch.Generator | None = None
) -> Tensor:
    """Apply one common corruption at ``severity`` (1 mild .. 5 strongest) to a batch.

    Args:
        x: float images (B, C, H, W) in [0, 1], grey or colour.
        corruption: a name in ``CORRUPTIONS``.
        severity: 1 to 5.
        generator: seeds the noise corruptions.

    Returns:
        The corrupted images, same shape, clamped to [0, 1].

    Raises:
        AttackParameterError: unknown corruption or severity outside 1..5.
    """
    if corruption not in SEVERITIES:
        raise AttackParameterError(
            f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}"
        )
    if severity not in range(1, 6):
        raise AttackParameterError(f"severity must be 1 to 5, got {severity}")
    c = SEVERITIES[corruption][severity - 1]
    x = x.detach()

    def noise(shape: torch.Size) -> Tensor:
        return torch.randn(shape, generator=generator).to(x)

    if corruption == "gaussian_noise":
        out = x + c * noise(x.shape)
    elif corruption == "shot_noise":
        out = torch.poisson((x * c).cpu(), generator=generator).to(x) / c
    elif corruption == "impulse_noise":
        u = torch.rand(x.shape, generator=generator).to(x)
        out = torch.where(u < c / 2, 0.0, torch.where(u > 1 - c / 2, 1.0, x))
    elif corruption == "speckle_noise":
        out = x + x * c * noise(x.shape)
    elif corruption == "gaussian_blur":
        out = _blur(x, c)
    elif corruption == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        out = (x - mean) * c + mean
    elif corruption == "brightness":
        out = x + c
    elif corruption == "jpeg_compression":
        out = _jpeg(x, int(c))
    else:  # pixelate
        h, w = x.shape[-2:]
        small = (max(1, round(h * c)), max(1, round(w * c)))
        out = F.interpolate(F.interpolate(x, size=small, mode="area"), size=(h, w), mode="nearest")
    return out.clamp(0.0, 1.0)


class Corruption(Attack):
    """A common corruption at a fixed severity, or a random one per input.

    Args:
        model: classifier (only used to measure success).
        corruption: a name in ``CORRUPTIONS``, or ``"random"``: each input gets one drawn
            uniformly (the mix used to make untrusted inputs from training images).
        severity: 1 (mild) to 5 (strongest), or 0 for a random severity per input.
        seed: seeds the choices and the noise.

    Raises:
        AttackParameterError: unknown corruption or severity.
    """

    name = "corruption"
    supports_targeted = False

    def __init__(
        self,
        model: nn.Module,
        corruption: str = "random",
        severity: int = 5,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, target_mode=None, seed=seed)
        if corruption != "random" and corruption not in SEVERITIES:
            raise AttackParameterError(
                f"unknown corruption {corruption!r}; use 'random' or one of: "
                f"{', '.join(CORRUPTIONS)}"
            )
        if severity not in range(0, 6):
            raise AttackParameterError(f"severity must be 0 (random) or 1 to 5, got {severity}")
        self.corruption = corruption
        self.severity = severity
        self.last_choices: list[tuple[str, int]] = []

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        b = x.shape[0]
        if self.corruption == "random":
            picks = torch.randint(len(CORRUPTIONS), (b,), generator=self.generator).tolist()
            names = [CORRUPTIONS[i] for i in picks]
        else:
            names = [self.corruption] * b
        if self.severity == 0:
            severities = (torch.randint(1, 6, (b,), generator=self.generator)).tolist()
        else:
            severities = [self.severity] * b
        self.last_choices = list(zip(names, severities, strict=True))
        out = torch.empty_like(x)
        for key in sorted(set(self.last_choices)):
            idx = torch.tensor([i for i, c in enumerate(self.last_choices) if c == key])
            out[idx] = corrupt(x[idx], key[0], key[1], self.generator)
        return out
