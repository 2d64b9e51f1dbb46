"""Every trust view: it separates two synthetic clusters, round-trips through JSON exactly, and
says clearly what it needs; GradNorm's closed form equals autograd's weight gradient."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectors.base import NotFittedError
from detectors.views import VIEWS, ViewUnavailableError, available_views
from detectors.views.penultimate import GradNormView
from gga_lab.metrics import auroc
from models.architectures import build_model
from tests.detectors.synthetic import view_inputs


@pytest.fixture(scope="module")
def clusters():
    return view_inputs(400, False, 0), view_inputs(200, False, 1), view_inputs(200, True, 2)


@pytest.mark.parametrize("name", list(VIEWS))
def test_view_separates_two_clusters(clusters, name):
    fit, clean, shifted = clusters
    view = VIEWS[name]().fit_features(fit)
    trusted, untrusted = view.predict_features(clean), view.predict_features(shifted)
    assert trusted.shape == (200,) and np.isfinite(trusted).all()
    assert auroc(trusted, untrusted) > 0.95, name


@pytest.mark.parametrize("name", list(VIEWS))
def test_json_round_trip_gives_identical_scores(clusters, name):
    fit, clean, shifted = clusters
    view = VIEWS[name]().fit_features(fit)
    params = json.loads(json.dumps(view.get_params()))
    loaded = VIEWS[name].from_params(params)
    for inputs in (clean, shifted):
        np.testing.assert_array_equal(
            loaded.predict_features(inputs), view.predict_features(inputs)
        )


@pytest.mark.parametrize("name", [n for n, cls in VIEWS.items() if cls.needs_penultimate])
def test_feature_views_refuse_a_model_without_features(clusters, name):
    fit = clusters[0]
    no_features = fit.take(slice(None))
    no_features.penultimate = None
    with pytest.raises(ViewUnavailableError, match="needs penultimate features"):
        VIEWS[name]().fit_features(no_features)
    assert name not in available_views(has_penultimate=False)
    assert name in available_views(has_penultimate=True)


def test_the_blocks_view_refuses_inputs_without_blocks_or_with_other_blocks(clusters):
    fit, clean, _ = clusters
    no_blocks = fit.take(slice(None))
    no_blocks.blocks = None
    with pytest.raises(ViewUnavailableError, match="EngineOptions\\(blocks=True\\)"):
        VIEWS["blocks"]().fit_features(no_blocks)
    view = VIEWS["blocks"]().fit_features(fit)
    one_block = clean.take(slice(None))
    one_block.blocks = one_block.blocks[:1]
    with pytest.raises(ValueError, match="fitted on 2 blocks, the engine gave 1"):
        view.predict_features(one_block)
    assert "blocks" not in available_views(True, has_blocks=False)
    assert "blocks" in available_views(True)


def test_a_view_used_before_fit_says_so(clusters):
    with pytest.raises(NotFittedError, match="call fit"):
        VIEWS["gga-csm"]().predict_features(clusters[1])


def test_gradnorm_is_the_l1_norm_of_the_last_layer_weight_gradient():
    torch.manual_seed(0)
    model = build_model("compact-cnn").eval()
    x = torch.rand(5, 1, 28, 28)
    expected = []
    for xi in x:
        h = model.embed(xi[None]).detach()
        weight = model.head.weight.detach().clone().requires_grad_(True)
        logits = F.linear(h, weight, model.head.bias)
        # KL(uniform || softmax) up to a constant: -mean_c log softmax_c.
        kl = -F.log_softmax(logits, dim=1).mean()
        (grad,) = torch.autograd.grad(kl, weight)
        expected.append(float(grad.abs().sum()))
    with torch.no_grad():
        h = model.embed(x)
        logits = model.head(h)
    inputs = view_inputs(5, False, 0)
    inputs.logits, inputs.penultimate = logits.double().numpy(), h.numpy()
    scores = GradNormView().fit_features(inputs).predict_features(inputs)
    np.testing.assert_allclose(-scores, expected, rtol=1e-5)


def test_wide_features_and_many_classes_stay_small_and_still_separate():
    from detectors.views.gga import GGACSMView
    from detectors.views.penultimate import MahalanobisView
    from detectors.views.projection import MAX_DIM

    def widen(inputs, seed):
        rng = np.random.default_rng(seed)
        out = inputs.take(slice(None))
        lift = np.random.default_rng(7).normal(size=(inputs.penultimate.shape[1], 600))
        out.penultimate = inputs.penultimate @ lift + rng.normal(0, 0.1, (len(inputs), 600))
        return out

    fit, clean, shifted = (
        view_inputs(400, False, 0),
        view_inputs(200, False, 1),
        view_inputs(200, True, 2),
    )
    view = MahalanobisView().fit_features(widen(fit, 0))
    assert view.precision.shape == (MAX_DIM, MAX_DIM)
    assert (
        auroc(view.predict_features(widen(clean, 1)), view.predict_features(widen(shifted, 2)))
        > 0.95
    )
    loaded = MahalanobisView.from_params(json.loads(json.dumps(view.get_params())))
    np.testing.assert_array_equal(
        loaded.predict_features(widen(clean, 1)), view.predict_features(widen(clean, 1))
    )

    # 30 classes: 435 CSM entries, projected; the classes share one covariance.
    many = [
        view_inputs(n, s, seed) for n, s, seed in ((900, False, 3), (200, False, 4), (200, True, 5))
    ]
    for inputs in many:
        rng = np.random.default_rng(len(inputs))
        inputs.logits = np.pad(inputs.logits, ((0, 0), (0, 26)), constant_values=-5.0)
        inputs.csm = np.clip(
            rng.normal(0.6 if inputs is not many[2] else 0.1, 0.05, (len(inputs), 30, 30)), -1, 1
        )
    csm_view = GGACSMView().fit_features(many[0])
    assert csm_view.precisions.shape == (1, MAX_DIM, MAX_DIM)
    assert auroc(csm_view.predict_features(many[1]), csm_view.predict_features(many[2])) > 0.95
