"""Untrusted inputs the project makes itself, from training images only, to choose and train
the fusion of the trust views.

No test image and no other data set is touched: the fusion and its choices must hold on inputs
the project never made (evaluation runs rotations, L-BFGS, other data sets, photo crops and
adaptive attacks that are not here). Kinds:

- ``fgsm``: FGSM at the data set's l_inf budget (successful only);
- ``pgd_min``: PGD stopped at each input's first successful step, just past the boundary;
- ``pgd``: PGD run for all its steps, deep into the wrong class (successful only);
- ``noise``: uniform noise in the l_inf ball (every input counts, as in the paper);
- ``noise_images``: uniform and Gaussian noise images, no training image in them;
- ``corruption``: a random common corruption at severity 4 or 5 (``attacks.corruptions``);
- ``patch_shuffle``: the image cut in a 4 x 4 grid and its tiles shuffled (local statistics of
  the data, no global shape);
- ``blend``: the average of two training images of different classes (ambiguous inputs);
- ``deepfool``: DeepFool (l_2) run until each input crosses its nearest boundary, and no further:
  the minimal-perturbation family, which a max softmax catches because such inputs are barely
  confident;
- ``warp``: random shears, scalings and shifts (no rotation) that change the prediction: the
  geometric family, whole images moved until the model errs, which the evaluation's rotations
  belong to (rotation itself stays out, so that kind is still unseen).
"""

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gga_lab.attack_registry import AttackKind

logger = logging.getLogger(__name__)

TRAINING_KINDS: tuple[str, ...] = (
    "fgsm",
    "pgd_min",
    "pgd",
    "noise",
    "noise_images",
    "corruption",
    "patch_shuffle",
    "blend",
    "deepfool",
    "warp",
)
CORRUPTION_SEVERITIES: tuple[int, ...] = (4, 5)  # the two strongest, each on half the images


def patch_shuffle(x: Tensor, grid: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Each image's ``grid`` x ``grid`` tiles in a random order (sizes must divide evenly)."""
    b, c, h, w = x.shape
    th, tw = h // grid, w // grid
    tiles = x[:, :, : th * grid, : tw * grid].reshape(b, c, grid, th, grid, tw)
    tiles = tiles.permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, th, tw)
    order = torch.argsort(torch.rand(b, grid * grid, generator=generator), dim=1)
    tiles = tiles[torch.arange(b).unsqueeze(1), order]
    out = tiles.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    shuffled = x.clone()
    shuffled[:, :, : th * grid, : tw * grid] = out.reshape(b, c, th * grid, tw * grid)
    return shuffled


def blend(x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The average of each image and a random image of another class from the same batch."""
    partner = torch.randperm(len(x), generator=generator)
    for _ in range(10):  # re-draw the partners that share the class
        same = y[partner] == y
        if not same.any():
            break
        partner[same] = torch.randint(len(x), (int(same.sum()),), generator=generator)
    keep = y[partner] != y
    return ((x + x[partner]) / 2)[keep]


def random_warp(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each image sheared, scaled and shifted at random, without rotation (zeros fill the edge).

    Per image: a scale in [0.6, 1.4] on each axis, a shear in [-0.6, 0.6] each way and a shift
    up to an eighth of the side, drawn with ``generator``.
    """
    b = len(x)

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(b, generator=generator)

    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = uniform(0.6, 1.4), uniform(0.6, 1.4)
    theta[:, 0, 1], theta[:, 1, 0] = uniform(-0.6, 0.6), uniform(-0.6, 0.6)
    theta[:, 0, 2], theta[:, 1, 2] = uniform(-0.25, 0.25), uniform(-0.25, 0.25)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.device), align_corners=False, padding_mode="zeros")


def misclassified_warps(
    model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator, tries: int = 4
) -> tuple[Tensor, Tensor]:
    """For each image, the first of ``tries`` random warps the model misclassifies, if any.

    The geometric family (the evaluation's rotations are another member): inputs still whole
    and plausible, moved until the prediction changes.

    Returns:
        ``(warped images (M, C, H, W), which of the N images they come from (N,) bool)``.
    """
    found = torch.zeros(len(x), dtype=torch.bool)
    out = x.clone()
    if len(x) == 0:
        return out, found
    for _ in range(tries):
        warped = random_warp(x, generator)
        with torch.no_grad():
            wrong = (
                torch.cat(
                    [model(warped[i : i + 256]).argmax(1) for i in range(0, len(x), 256)]
                ).cpu()
                != y.cpu()
            )
        new = wrong & ~found
        out[new] = warped[new]
        found |= new
    return out[found], found


def training_attack_kinds(eps: float, seed: int, pgd_steps: int) -> dict[str, AttackKind]:
    """The training kinds made by one registered attack (``LAB_ATTACKS``), with its parameters.

    Args:
        eps: l_inf budget of the attacks and the noise.
        seed: seeds the attacks.
        pgd_steps: iterations of both PGD kinds (step eps/4, random start).

    Returns:
        Kind -> ``AttackKind``; ``corruption`` is made by two of them (``CORRUPTION_SEVERITIES``).
    """
    pgd = {"eps": eps, "steps": pgd_steps, "seed": seed}
    return {
        "fgsm": AttackKind("fgsm", {"eps": eps}),
        "pgd_min": AttackKind("pgd", {**pgd, "early_stop": True}),
        "pgd": AttackKind("pgd", {**pgd, "early_stop": False}),
        "noise": AttackKind("noise", {"eps": eps, "seed": seed}, keep="all"),
        "deepfool": AttackKind("deepfool", {"norm": "l2", "steps": 50}),
    }


def _corruptions(
    model: nn.Module, x: Tensor, y: Tensor, seed: int, batch_size: int, progress: bool
) -> Tensor:
    """Every other image corrupted at each severity of ``CORRUPTION_SEVERITIES``, all kept."""
    step = len(CORRUPTION_SEVERITIES)
    parts = []
    for i, severity in enumerate(CORRUPTION_SEVERITIES):
        kind = AttackKind("corruption", {"severity": severity, "seed": seed + severity}, keep="all")
        made, _ = kind.run(model, x[i::step], y[i::step], batch_size, "fit: corruption", progress)
        parts.append(made)
    return torch.cat(parts)


def make_training_untrusted(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    seed: int = 0,
    kinds: tuple[str, ...] = TRAINING_KINDS,
    pgd_steps: int = 40,
    batch_size: int = 128,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Untrusted inputs of each kind made from clean, correctly classified training images.

    Args:
        model: the classifier (eval mode).
        x: clean training images (N, C, H, W) in [0, 1], classified correctly.
        y: their labels.
        eps: l_inf budget of the attacks and the noise (the data set's evaluation budget).
        seed: seeds every attack and draw.
        kinds: a subset of ``TRAINING_KINDS``.
        pgd_steps: iterations of both PGD kinds (step eps/4, random start).
        batch_size: inputs per attack call.
        progress: progress bars.

    Returns:
        Inputs (M_k, C, H, W) per kind; an attack kind keeps only its successes.

    Raises:
        ValueError: an unknown kind.
    """
    from models.data.ood import gaussian_noise, uniform_noise

    unknown = sorted(set(kinds) - set(TRAINING_KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; choose from {', '.join(TRAINING_KINDS)}")
    by_attack = training_attack_kinds(eps, seed, pgd_steps)
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(x.shape[1:])
    out: dict[str, Tensor] = {}
    for kind in kinds:
        if kind in by_attack:
            out[kind], _ = by_attack[kind].run(model, x, y, batch_size, f"fit: {kind}", progress)
        elif kind == "noise_images":
            half = len(x) // 2
            out[kind] = torch.cat(
                [
                    uniform_noise(half, shape, seed=seed),
                    gaussian_noise(len(x) - half, shape, seed=seed + 1),
                ]
            )
        elif kind == "corruption":
            out[kind] = _corruptions(model, x, y, seed, batch_size, progress)
        elif kind == "patch_shuffle":
            out[kind] = patch_shuffle(x, generator=generator)
        elif kind == "warp":
            out[kind], _ = misclassified_warps(model, x, y, generator)
        else:
            out[kind] = blend(x, y, generator=generator)
        logger.info("untrusted %s: %d inputs from %d training images", kind, len(out[kind]), len(x))
    return out
