"""The ten GGA features: S1/S2 split, population std, energy as the mean of squares."""

import statistics

import pytest
import torch

from detectors.features import FEATURE_NAMES, gga_features


def _symmetric(upper: dict[tuple[int, int], float], k: int) -> torch.Tensor:
    csm = torch.eye(k)
    for (i, j), v in upper.items():
        csm[i, j] = csm[j, i] = v
    return csm


def _stats(values: list[float]) -> list[float]:
    return [
        statistics.fmean(values),
        max(values),
        min(values),
        statistics.pstdev(values),  # population std
        statistics.fmean(v * v for v in values),  # energy = mean of squares
    ]


def test_names_are_the_ten_in_order():
    assert FEATURE_NAMES == (
        "s1_mean", "s1_max", "s1_min", "s1_std", "s1_energy",
        "s2_mean", "s2_max", "s2_min", "s2_std", "s2_energy",
    )  # fmt: skip


@pytest.mark.parametrize("k", [0, 2, 3])
def test_features_of_a_hand_made_csm(k):
    pairs = {(0, 1): 0.9, (0, 2): -0.2, (0, 3): 0.4, (1, 2): 0.5, (1, 3): -0.7, (2, 3): 0.1}
    csm = _symmetric(pairs, 4)
    s1 = [v for (i, j), v in pairs.items() if k not in (i, j)]
    s2 = [v for (i, j), v in pairs.items() if k in (i, j)]
    assert len(s1) == 3 and len(s2) == 3
    got = gga_features(csm.unsqueeze(0), torch.tensor([k]))
    torch.testing.assert_close(got[0], torch.tensor(_stats(s1) + _stats(s2)))


def test_a_batch_uses_each_inputs_own_predicted_row():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(6, 5, 5, generator=gen) * 2 - 1
    csm = (a + a.transpose(1, 2)) / 2
    rows = torch.tensor([0, 4, 2, 2, 1, 3])
    batch = gga_features(csm, rows)
    for n in range(6):
        torch.testing.assert_close(batch[n], gga_features(csm[n : n + 1], rows[n : n + 1])[0])
    assert batch.dtype == torch.float32 and batch.shape == (6, 10)


def test_two_classes_leave_s1_empty_and_defined_as_zeros():
    csm = _symmetric({(0, 1): -0.6}, 2).unsqueeze(0)
    got = gga_features(csm, torch.tensor([1]))
    torch.testing.assert_close(got[0], torch.tensor([0.0] * 5 + [-0.6, -0.6, -0.6, 0.0, 0.36]))


def test_one_class_leaves_both_sets_empty():
    got = gga_features(torch.ones(2, 1, 1), torch.tensor([0, 0]))
    assert torch.equal(got, torch.zeros(2, 10))


def test_single_value_sets_have_zero_std_not_nan():
    csm = _symmetric({(0, 1): 0.3, (0, 2): 0.5, (1, 2): -0.1}, 3).unsqueeze(0)
    got = gga_features(csm, torch.tensor([0]))  # S1 = {c_12} alone
    torch.testing.assert_close(got[0, :5], torch.tensor([-0.1, -0.1, -0.1, 0.0, 0.01]))
    assert not torch.isnan(got).any()


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="batch, K, K"):
        gga_features(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="one row index per input"):
        gga_features(torch.zeros(2, 3, 3), torch.zeros(3, dtype=torch.int64))
