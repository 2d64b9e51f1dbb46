"""GGAPipeline: outputs the service relies on, and loading through detector.json."""

import numpy as np
import pytest
import torch

from detectors.collect import view_inputs
from detectors.engine import EngineOptions, GradientEngine
from detectors.features import FEATURE_NAMES
from detectors.persistence import DetectorFileError, DetectorNotFoundError
from detectors.pipeline import GGAPipeline, PipelineOutput, load_pipeline
from detectors.trust import TrustScorer
from gga_lab.fit import FitConfig, fit_trust_scorer

SHA = "0f" * 32
SMALL = {"n_fit": 300, "n_view_cal": 100, "n_tune": 100, "n_cal": 150, "pgd_steps": 5, "bins": 20}


@pytest.fixture(scope="module")
def scorer(tiny_mnist) -> TrustScorer:
    config = FitConfig(**SMALL, rescale="on", strategy="vmap")
    t = tiny_mnist
    return fit_trust_scorer(
        t.model,
        t.x_train,
        t.y_train,
        model_name="tiny",
        weights_sha256=SHA,
        config=config,
        dataset="mnist",
        progress=False,
    )


def test_pipeline_output_shapes_and_types(tiny_mnist, scorer, tmp_path) -> None:
    scorer.save(tmp_path)
    pipe = load_pipeline(tmp_path, tiny_mnist.model, SHA)
    x = tiny_mnist.x_test[:5]
    out = pipe(x, saliency=True)
    assert isinstance(out, PipelineOutput)
    assert out.probabilities.shape == (5, 10) and out.probabilities.dtype == np.float32
    np.testing.assert_allclose(out.probabilities.sum(1), 1.0, rtol=1e-5)
    assert out.labels.dtype == np.int64
    np.testing.assert_array_equal(out.labels, tiny_mnist.model(x).argmax(1).numpy())
    assert out.trust.dtype == np.float64 and ((out.trust > 0) & (out.trust <= 1)).all()
    np.testing.assert_array_equal(out.flagged, out.trust < pipe.alpha)
    assert out.features.shape == (5, len(FEATURE_NAMES)) and out.features.dtype == np.float32
    assert out.csm.shape == (5, 10, 10) and out.classes.shape == (5, 10)
    assert out.saliency.shape == (5, 10, 28 * 28) and out.engine_seconds > 0
    engine_out = GradientEngine(tiny_mnist.model, EngineOptions(**scorer.engine_options))(x)
    expected = scorer.evaluate(view_inputs(engine_out))
    np.testing.assert_allclose(out.trust, expected.trust, rtol=1e-6)
    assert set(out.views) == set(scorer.view_names)
    for name, p in out.views.items():
        np.testing.assert_allclose(p, expected.views[name], rtol=1e-6)
        assert ((p > 0) & (p <= 1)).all()
    assert pipe(x).saliency is None
    assert pipe.warmup((1, 28, 28), (4,))  # maps bucket -> strategy


def test_noise_gets_lower_trust_than_clean(tiny_mnist, scorer) -> None:
    pipe = GGAPipeline(tiny_mnist.model, scorer)
    clean = pipe(tiny_mnist.x_test[:64]).trust
    noise = pipe(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))).trust
    assert np.median(noise) < np.median(clean)


def test_load_errors(tiny_mnist, scorer, tmp_path) -> None:
    with pytest.raises(DetectorNotFoundError, match="gga fit"):
        load_pipeline(tmp_path, tiny_mnist.model, SHA)
    scorer.save(tmp_path)
    with pytest.raises(DetectorFileError, match="re-fitted"):
        load_pipeline(tmp_path, tiny_mnist.model, "11" * 32)


def test_a_detector_fitted_without_rescaling_is_served_without_it(tiny_mnist, tmp_path) -> None:
    t = tiny_mnist
    config = FitConfig(**SMALL, strategy="vmap", rescale="off", views=("gga-paper", "energy"))
    plain = fit_trust_scorer(
        t.model,
        t.x_train,
        t.y_train,
        model_name="tiny",
        weights_sha256=SHA,
        config=config,
        progress=False,
    )
    assert plain.engine_options["rescale_logits"] is False
    plain.save(tmp_path)
    pipe = load_pipeline(tmp_path, t.model, SHA)
    x = t.x_test[:8]
    served = pipe(x).features
    unscaled = GradientEngine(t.model, EngineOptions(rescale_logits=False))(x).features.numpy()
    rescaled = GradientEngine(t.model, EngineOptions(rescale_logits=True))(x).features.numpy()
    np.testing.assert_allclose(served, unscaled, atol=1e-6)
    assert not np.allclose(served, rescaled, atol=1e-3)


def test_a_detector_whose_views_the_model_cannot_serve_is_refused(tiny_mnist, scorer, tmp_path):
    from torch import nn

    class NoFeatures(nn.Module):  # the same classifier, without embed/head
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    assert scorer.needs_penultimate
    scorer.save(tmp_path)
    with pytest.raises(DetectorFileError, match=r"need penultimate features.*gga fit tiny"):
        load_pipeline(tmp_path, NoFeatures(tiny_mnist.model), SHA)


def test_without_a_scorer_the_pipeline_gives_labels_and_no_trust(tiny_mnist) -> None:
    model, x = tiny_mnist.model, tiny_mnist.x_test
    out = GGAPipeline(model, None)(x[:5])
    with torch.no_grad():
        expected = model(x[:5]).argmax(1).numpy()
    np.testing.assert_array_equal(out.labels, expected)
    assert np.isnan(out.trust).all() and not out.flagged.any() and out.views == {}
    assert out.csm.shape[0] == 5 and GGAPipeline(model, None).alpha is None


class Seeing:
    """The fitted scorer, keeping the inputs its views were given."""

    def __init__(self, inner: TrustScorer) -> None:
        self.inner = inner
        self.seen = None

    def evaluate(self, inputs):
        self.seen = inputs
        return self.inner.evaluate(inputs)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_each_tensor_leaves_the_engine_once(tiny_mnist, scorer) -> None:
    # The output holds the very arrays the views read: no second copy off the device.
    seeing = Seeing(scorer)
    out = GGAPipeline(tiny_mnist.model, seeing)(tiny_mnist.x_test[:4])
    assert out.csm is seeing.seen.csm and out.classes is seeing.seen.classes
    assert out.labels is seeing.seen.predicted


def test_rows_and_concat_give_back_the_batch(tiny_mnist, scorer) -> None:
    out = GGAPipeline(tiny_mnist.model, scorer)(tiny_mnist.x_test[:5], saliency=True)
    parts = [out.rows(0, 2), out.rows(2, 5)]
    assert [len(p) for p in parts] == [2, 3] and np.shares_memory(parts[1].csm, out.csm)
    joined = PipelineOutput.concat(parts)
    for field in ("probabilities", "labels", "trust", "flagged", "features", "csm", "saliency"):
        np.testing.assert_array_equal(getattr(joined, field), getattr(out, field))
    assert (
        joined.views.keys() == out.views.keys() and joined.engine_seconds == 2 * out.engine_seconds
    )
