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
- ``blend``: the average of two training images of different classes (ambiguous inputs).
"""

import logging

import torch
from torch import Tensor, nn
from tqdm import tqdm

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
)
ATTACK_KINDS: tuple[str, ...] = ("fgsm", "pgd_min", "pgd")  # successful attacks only


def _run(attack, x: Tensor, y: Tensor, batch_size: int, successful_only: bool, desc, progress):
    kept = []
    for i in tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress, leave=False):
        res = attack(x[i : i + batch_size], y[i : i + batch_size])
        kept.append(res.x_adv[res.success] if successful_only else res.x_adv)
    return torch.cat(kept) if kept else x[:0]


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
    from attacks.corruptions import Corruption, UniformNoise
    from attacks.fgsm import FGSM
    from attacks.pgd import PGD
    from models.data.ood import gaussian_noise, uniform_noise

    unknown = sorted(set(kinds) - set(TRAINING_KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; choose from {', '.join(TRAINING_KINDS)}")
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(x.shape[1:])
    out: dict[str, Tensor] = {}
    for kind in kinds:
        desc = f"fit: {kind}"
        if kind == "fgsm":
            out[kind] = _run(FGSM(model, eps=eps), x, y, batch_size, True, desc, progress)
        elif kind in ("pgd", "pgd_min"):
            attack = PGD(model, eps=eps, steps=pgd_steps, seed=seed, early_stop=kind == "pgd_min")
            out[kind] = _run(attack, x, y, batch_size, True, desc, progress)
        elif kind == "noise":
            out[kind] = _run(
                UniformNoise(model, eps=eps, seed=seed), x, y, batch_size, False, desc, progress
            )
        elif kind == "noise_images":
            half = len(x) // 2
            out[kind] = torch.cat(
                [
                    uniform_noise(half, shape, seed=seed),
                    gaussian_noise(len(x) - half, shape, seed=seed + 1),
                ]
            )
        elif kind == "corruption":
            parts = [
                _run(
                    Corruption(model, severity=s, seed=seed + s),
                    x[i::2],
                    y[i::2],
                    batch_size,
                    False,
                    desc,
                    progress,
                )
                for i, s in enumerate((4, 5))
            ]
            out[kind] = torch.cat(parts)
        elif kind == "patch_shuffle":
            out[kind] = patch_shuffle(x, generator=generator)
        else:
            out[kind] = blend(x, y, generator=generator)
        logger.info("untrusted %s: %d inputs from %d training images", kind, len(out[kind]), len(x))
    return out
