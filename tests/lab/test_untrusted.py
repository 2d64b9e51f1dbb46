"""The untrusted inputs the fit makes from training images: the minimal-perturbation kind."""

import pytest
import torch

from gga_lab.fit import FitConfig
from gga_lab.untrusted import make_training_untrusted
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


def test_an_unknown_untrusted_kind_is_refused() -> None:
    with pytest.raises(GGAUserError, match="unknown untrusted kinds"):
        FitConfig(untrusted_kinds=("fgsm", "nope"))
    with pytest.raises(ValueError, match="unknown kinds"):
        make_training_untrusted(
            torch.nn.Identity(), torch.rand(2, 1, 4, 4), torch.zeros(2), eps=0.1, kinds=("nope",)
        )
