"""The cosine similarity matrix: definition, properties, zero maps, differentiability."""

import pytest
import torch

from detectors.csm import cosine_similarity_matrix


def _naive(maps: torch.Tensor) -> torch.Tensor:
    """Pair by pair in float64, straight from the definition (no zero maps allowed)."""
    b, k, _ = maps.shape
    out = torch.empty(b, k, k, dtype=torch.float64)
    for n in range(b):
        for i in range(k):
            for j in range(k):
                si, sj = maps[n, i].double(), maps[n, j].double()
                out[n, i, j] = si @ sj / (si.norm() * sj.norm())
    return out


def test_equals_the_definition_on_sign_maps_and_real_valued_maps():
    gen = torch.Generator().manual_seed(0)
    signs = torch.randint(-1, 2, (3, 5, 40), generator=gen).float()
    signs[:, :, 0] = 1.0  # no zero map here
    real = torch.randn(2, 4, 30, generator=gen)
    for maps in (signs, real):
        torch.testing.assert_close(cosine_similarity_matrix(maps).double(), _naive(maps))


def test_diagonal_ones_symmetric_and_bounded():
    gen = torch.Generator().manual_seed(1)
    maps = torch.randint(-1, 2, (4, 10, 49), generator=gen).float()
    maps[0, 3] = maps[0, 5]  # identical maps: cosine exactly 1 even with rounding
    maps[1, 2] = -maps[1, 7]
    csm = cosine_similarity_matrix(maps)
    assert torch.equal(torch.diagonal(csm, dim1=1, dim2=2), torch.ones(4, 10))
    assert torch.equal(csm, csm.transpose(1, 2))
    assert csm.min() >= -1 and csm.max() <= 1
    assert csm[0, 3, 5] == pytest.approx(1.0) and csm[1, 2, 7] == pytest.approx(-1.0)


def test_a_zero_map_has_cosine_zero_with_others_and_one_with_itself():
    maps = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    csm = cosine_similarity_matrix(maps)
    assert not torch.isnan(csm).any()
    expected_02 = 0.0  # (1 - 1 + 0) / ...
    assert torch.equal(csm[0, 1], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(csm[0, :, 1], torch.tensor([0.0, 1.0, 0.0]))
    assert csm[0, 0, 2].item() == pytest.approx(expected_02)
    all_zero = cosine_similarity_matrix(torch.zeros(2, 3, 5))
    assert torch.equal(all_zero, torch.eye(3).expand(2, 3, 3))


def test_gradients_flow_and_stay_finite_with_a_zero_map():
    gen = torch.Generator().manual_seed(2)
    maps = torch.randn(2, 4, 6, generator=gen)
    maps[1, 2] = 0.0
    maps.requires_grad_(True)
    csm = cosine_similarity_matrix(maps)
    (csm.triu(diagonal=1).sum()).backward()
    assert maps.grad is not None and torch.isfinite(maps.grad).all()
    assert maps.grad[0].abs().sum() > 0
    # Matches float64 autograd through the definition where the maps are non-zero.
    ref = maps[0:1].detach().double().requires_grad_(True)
    unit = ref / ref.norm(dim=2, keepdim=True)
    (unit @ unit.transpose(1, 2)).triu(diagonal=1).sum().backward()
    torch.testing.assert_close(maps.grad[0].double(), ref.grad[0], rtol=1e-4, atol=1e-6)


def test_wrong_shape_is_refused_with_the_remedy():
    with pytest.raises(ValueError, match="flatten each map"):
        cosine_similarity_matrix(torch.zeros(2, 3, 4, 4))
