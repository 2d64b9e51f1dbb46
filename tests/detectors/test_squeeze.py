"""Feature squeezing: the squeezers, the engine's squeezed logits and the view that reads them."""

import numpy as np
import pytest
import torch

from detectors.engine import EngineOptions, GradientEngine
from detectors.squeeze import SQUEEZERS, bit_depth, gaussian_blur, median_2x2
from detectors.views import ViewUnavailableError
from detectors.views.squeeze import SqueezeView, squeeze_distances
from models.architectures import build_model
from tests.detectors.synthetic import view_inputs


def test_bit_depth_keeps_only_its_levels() -> None:
    x = torch.linspace(0, 1, 101).view(1, 1, 1, 101)
    assert set(bit_depth(x, 1).unique().tolist()) == {0.0, 1.0}
    assert len(bit_depth(x, 4).unique()) == 16
    assert torch.equal(bit_depth(bit_depth(x, 4), 4), bit_depth(x, 4))


def test_median_2x2_removes_a_lone_pixel_and_keeps_flat_regions() -> None:
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 2, 3] = 1.0  # salt: one pixel, the kind of detail a perturbation adds
    assert float(median_2x2(x).abs().max()) == 0.0
    flat = torch.full((2, 3, 5, 7), 0.4)
    assert median_2x2(flat).shape == flat.shape
    torch.testing.assert_close(median_2x2(flat), flat)


def test_blur_keeps_a_constant_image_and_the_mean() -> None:
    flat = torch.full((1, 3, 8, 8), 0.7)
    torch.testing.assert_close(gaussian_blur(flat), flat)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert float(gaussian_blur(x).std()) < float(x.std())
    assert float(gaussian_blur(x).min()) >= 0 and float(gaussian_blur(x).max()) <= 1


def test_the_engine_runs_the_model_on_every_squeezed_copy() -> None:
    torch.manual_seed(0)
    model = build_model("lenet", {"conv1_channels": 4, "conv2_channels": 8, "hidden": 16}).eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    plain = GradientEngine(model, EngineOptions(strategy="loop"))(x)
    out = GradientEngine(model, EngineOptions(strategy="loop", squeeze=True))(x)
    assert plain.squeezed is None and out.squeezed.shape == (3, len(SQUEEZERS), 10)
    with torch.no_grad():
        for s, squeeze in enumerate(SQUEEZERS.values()):
            torch.testing.assert_close(out.squeezed[:, s], model(squeeze(x)))
    torch.testing.assert_close(out.csm, plain.csm)  # squeezing changes nothing else


def test_an_input_whose_label_flips_under_squeezing_is_flagged() -> None:
    fit = view_inputs(300, False, 0)
    view = SqueezeView().fit_features(fit)
    clean = view_inputs(100, False, 1)
    flipped = clean.take(slice(0, 1))
    # The squeezed copies of this one input put its mass on another class.
    other = (int(flipped.predicted[0]) + 1) % flipped.logits.shape[1]
    flipped.squeezed = flipped.squeezed.copy()
    flipped.squeezed[0, :, other] += 20.0
    assert squeeze_distances(flipped.logits, flipped.squeezed)[0].min() > 5.0  # p fell e^-5
    clean_scores = view.predict_features(clean)
    assert view.predict_features(flipped)[0] > np.quantile(clean_scores, 0.99)


def test_the_view_needs_squeezed_logits_and_matching_squeezers() -> None:
    fit = view_inputs(50, False, 0)
    bare = fit.take(slice(None))
    bare.squeezed = None
    with pytest.raises(ViewUnavailableError, match="squeezed inputs"):
        SqueezeView().fit_features(bare)
    params = SqueezeView().fit_features(fit).get_params()
    params["squeezers"] = ["bits1"]
    with pytest.raises(ValueError, match="squeezers"):
        SqueezeView.from_params(params)
