"""The cosine similarity matrix (CSM) of GGA: how much the per-class saliency maps agree.

``c_ij = <s_i, s_j> / (|s_i| |s_j|)`` for every pair of the K maps of an input, for the whole
batch as one batched matrix product.
"""

import torch
from torch import Tensor


def cosine_similarity_matrix(maps: Tensor) -> Tensor:
    """The K x K cosine similarities of each input's K maps.

    Zero-norm maps (a class whose gradient is exactly zero everywhere, e.g. behind dead ReLUs or
    a saturated softmax) have no direction. The reference divides by zero and raises on the
    NaN; here a zero map is defined to have cosine 0 with every other map and 1 with itself, so
    the diagonal is always 1 and nothing is NaN. The result is clamped to [-1, 1] against
    rounding, and the diagonal is set to exactly 1.

    Differentiable (with finite gradients at zero maps too): the cosine-similarity attack
    backpropagates through it with smooth surrogate maps.

    Args:
        maps: (B, K, D) maps, one row per class (any float dtype).

    Returns:
        (B, K, K) symmetric matrices, ones on the diagonal, entries in [-1, 1].

    Raises:
        ValueError: ``maps`` is not 3-dimensional.
    """
    if maps.dim() != 3:
        raise ValueError(
            f"maps must be (batch, classes, features), got shape {tuple(maps.shape)}; "
            "flatten each map to one row first"
        )
    squared = (maps * maps).sum(dim=2, keepdim=True)  # (B, K, 1)
    nonzero = squared > 0
    # Two where()s keep the backward finite: rsqrt never sees a zero.
    inv_norm = torch.where(nonzero, torch.where(nonzero, squared, 1.0).rsqrt(), 0.0)
    unit = maps * inv_norm  # zero maps stay zero, so their off-diagonal cosines are 0
    csm = unit @ unit.transpose(1, 2)  # (B, K, K)
    # BLAS blocking can round c_ij and c_ji differently; averaging makes symmetry exact.
    csm = (csm + csm.transpose(1, 2)) / 2
    eye = torch.eye(maps.shape[1], dtype=csm.dtype, device=csm.device)
    return csm.clamp(-1.0, 1.0) * (1 - eye) + eye
