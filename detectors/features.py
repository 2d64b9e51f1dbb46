"""The ten GGA features of a CSM: five statistics of the similarities not involving the predicted
class (S1) and of those involving it (S2).

With k the row of the predicted class among the K rows, and only pairs i < j of the symmetric
CSM counted once: ``S1 = {c_ij : i < j, i != k, j != k}`` ((K-1)(K-2)/2 values) and
``S2 = {c_ik : i != k}`` (K-1 values). Statistics, for each set:

- mean, max, min;
- std: the *population* standard deviation (divides by the count, not count - 1), so a set of
  one value has std 0;
- energy: the mean of the squared similarities. The paper does not define it; the mean (not the
  sum) keeps it comparable across numbers of classes (top-N or C).

An empty set (S1 when K = 2; both when K = 1) gets 0 for all five statistics, never NaN.
"""

import torch
from torch import Tensor

FEATURE_NAMES: tuple[str, ...] = (
    "s1_mean",
    "s1_max",
    "s1_min",
    "s1_std",
    "s1_energy",
    "s2_mean",
    "s2_max",
    "s2_min",
    "s2_std",
    "s2_energy",
)


def pair_masks(predicted_row: Tensor, num_rows: int) -> tuple[Tensor, Tensor]:
    """Boolean (B, K, K) masks of S1 and S2 over the upper triangle (i < j).

    Args:
        predicted_row: (B,) int64 row of the predicted class among the K rows.
        num_rows: K.

    Returns:
        (s1, s2) masks.
    """
    idx = torch.arange(num_rows, device=predicted_row.device)
    upper = idx.view(1, -1, 1) < idx.view(1, 1, -1)  # (1, K, K): i < j
    k = predicted_row.view(-1, 1, 1)
    involves_k = (idx.view(1, -1, 1) == k) | (idx.view(1, 1, -1) == k)  # (B, K, K)
    return upper & ~involves_k, upper & involves_k


def _masked_stats(values: Tensor, mask: Tensor) -> Tensor:
    """mean, max, min, population std, energy of ``values`` where ``mask``; (B, 5)."""
    m = mask.to(values.dtype)
    count = m.sum(dim=(1, 2))  # (B,)
    empty = count == 0
    safe = count.clamp_min(1)
    mean = (values * m).sum(dim=(1, 2)) / safe
    energy = (values.square() * m).sum(dim=(1, 2)) / safe
    var = ((values - mean.view(-1, 1, 1)).square() * m).sum(dim=(1, 2)) / safe
    vmax = values.masked_fill(~mask, float("-inf")).amax(dim=(1, 2))
    vmin = values.masked_fill(~mask, float("inf")).amin(dim=(1, 2))
    stats = torch.stack([mean, vmax, vmin, var.sqrt(), energy], dim=1)
    return torch.where(empty.view(-1, 1), torch.zeros_like(stats), stats)


def gga_features(csm: Tensor, predicted_row: Tensor) -> Tensor:
    """The ten features of each input's CSM, in ``FEATURE_NAMES`` order.

    Args:
        csm: (B, K, K) cosine similarity matrices.
        predicted_row: (B,) int64 index, within the K rows, of the predicted class (its class
            index with all classes; 0 with top-N, where the most probable class comes first).

    Returns:
        (B, 10) float32 features.

    Raises:
        ValueError: the shapes do not fit. (Values of ``predicted_row`` are not checked: that
            would cost a host synchronisation on CUDA.)
    """
    if csm.dim() != 3 or csm.shape[1] != csm.shape[2]:
        raise ValueError(f"csm must be (batch, K, K), got shape {tuple(csm.shape)}")
    if predicted_row.shape != (csm.shape[0],):
        raise ValueError(
            f"predicted_row must be ({csm.shape[0]},) (one row index per input), "
            f"got shape {tuple(predicted_row.shape)}"
        )
    num_rows = csm.shape[1]
    s1, s2 = pair_masks(predicted_row.to(torch.int64), num_rows)
    values = csm.to(torch.float32)
    return torch.cat([_masked_stats(values, s1), _masked_stats(values, s2)], dim=1)
