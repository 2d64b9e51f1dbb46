"""The untrusted inputs the fit makes from training images: the minimal-perturbation kind and
the geometric one."""

import pytest
import torch

from gga_lab.fit import FitConfig
from gga_lab.untrusted import make_training_untrusted, misclassified_warps, random_warp
from models.errors import GGAUserError


def margins(model, x):
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def test_the_deepfool_kind_lands_just_past_the_boundary(trained_lenet, correct_batch) -> None:
    x, y = correct_batch.x[:32], correct_batch.y[:32]
    made = make_training_untrusted(
        trained_lenet, x, y, eps=0.3, kinds=("deepfool",), progress=False
    )["deepfool"]
    assert len(made) >= 0.9 * len(x)  # its successes: nearly every input crosses
    # Within a small margin of the boundary: a tenth of the clean inputs' winning margin.
    assert margins(trained_lenet, made).median() < 0.1 * margins(trained_lenet, x).median()


def test_the_warp_kind_keeps_whole_images_the_model_gets_wrong(trained_lenet, correct_batch):
    x, y = correct_batch.x[:64], correct_batch.y[:64]
    warped, source = misclassified_warps(trained_lenet, x, y, torch.Generator().manual_seed(0))
    assert 0 < len(warped) < len(x)  # some warps fool the model, not all
    with torch.no_grad():
        assert (trained_lenet(warped).argmax(1) != y[source]).all()
    assert warped.min() >= 0 and warped.max() <= 1
    made = make_training_untrusted(trained_lenet, x, y, eps=0.3, kinds=("warp",), progress=False)
    assert torch.equal(made["warp"], warped)  # the fit's kind, seed 0
    # A warp moves the ink but keeps most of it: no image is blanked or replaced by noise.
    ink = x.sum(dim=(1, 2, 3)).median()
    assert (warped.sum(dim=(1, 2, 3)) > 0.3 * ink).all()


def test_a_random_warp_is_reproducible_from_its_generator():
    x = torch.rand(8, 1, 28, 28)
    a = random_warp(x, torch.Generator().manual_seed(0))
    b = random_warp(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)


def test_an_unknown_untrusted_kind_is_refused() -> None:
    with pytest.raises(GGAUserError, match="unknown untrusted kinds"):
        FitConfig(untrusted_kinds=("fgsm", "nope"))
    with pytest.raises(ValueError, match="unknown kinds"):
        make_training_untrusted(
            torch.nn.Identity(), torch.rand(2, 1, 4, 4), torch.zeros(2), eps=0.1, kinds=("nope",)
        )
