"""Common corruptions: every kind at every severity on real photos, grey and colour."""

import pytest
import torch

from attacks.base import AttackParameterError
from attacks.corruptions import CORRUPTIONS, Corruption, corrupt
from models.architectures import build_model
from models.data.ood import photo_crops


@pytest.fixture(scope="module")
def photos() -> dict[int, torch.Tensor]:
    return {c: photo_crops(8, (c, 32, 32), max_scale=4.0, seed=3) for c in (1, 3)}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_severity_changes_the_image_more(photos, name, channels):
    x = photos[channels]
    distances = []
    for severity in range(1, 6):
        out = corrupt(x, name, severity, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        distances.append(float((out - x).abs().mean()))
    assert distances[0] > 0, name
    # Severity is the corruption's strength: the strongest moves pixels furthest.
    assert distances[4] > distances[0], (name, distances)
    # JPEG's and pixelation's block grids alias differently at each size: only the ends compare.
    if name not in ("jpeg_compression", "pixelate"):
        assert distances == sorted(distances), (name, distances)


def test_seeded_noise_is_reproducible(photos):
    x = photos[3]
    a = corrupt(x, "gaussian_noise", 3, torch.Generator().manual_seed(5))
    b = corrupt(x, "gaussian_noise", 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_random_mix_records_what_each_input_got(photos):
    model = build_model("resnet").eval()
    attack = Corruption(model, corruption="random", severity=0, seed=1)
    x = photos[3]
    result = attack(x, torch.zeros(len(x), dtype=torch.long))
    assert len(attack.last_choices) == len(x)
    for i, (name, severity) in enumerate(attack.last_choices):
        assert name in CORRUPTIONS and 1 <= severity <= 5
        if name not in ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"):
            torch.testing.assert_close(
                result.x_adv[i : i + 1], corrupt(x[i : i + 1], name, severity)
            )


def test_bad_parameters_are_named():
    with pytest.raises(AttackParameterError, match="unknown corruption 'fog'"):
        corrupt(torch.rand(1, 1, 8, 8), "fog", 1)
    with pytest.raises(AttackParameterError, match="severity must be 1 to 5"):
        corrupt(torch.rand(1, 1, 8, 8), "contrast", 6)
    with pytest.raises(AttackParameterError, match="severity must be 0"):
        Corruption(build_model("lenet"), severity=7)
