"""Baselines: the contract, scores by formula, the views' maths where they share a name, and
detection of noise on a trained model."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from detectors.base import DetectorFitError, NotFittedError
from detectors.views.logits import EnergyView, MSPView, msp_score
from gga_lab.baselines import KNN, ODIN, EnergyScore, Mahalanobis, MaxSoftmax
from gga_lab.baselines.common import EPS_GRID
from tests.detectors.synthetic import view_inputs
from tests.helpers.models import TinyLinear, seeded


def test_msp_and_energy_by_formula() -> None:
    model = seeded(TinyLinear, in_shape=(1, 4, 4), num_classes=3)
    x = torch.rand(6, 1, 4, 4)
    logits = model(x).detach().double()
    msp = MaxSoftmax(model).fit()
    np.testing.assert_allclose(msp(x), -logits.softmax(1).max(1).values.numpy(), rtol=1e-6)
    energy = EnergyScore(model, temperature=2.0).fit()
    expected = -2.0 * torch.logsumexp(logits / 2.0, dim=1).numpy()
    np.testing.assert_allclose(energy(x), expected, rtol=1e-5)


def test_baselines_named_like_a_view_compute_its_maths() -> None:
    inputs = view_inputs(40, True, 0)
    model = _Embed()
    z = inputs.logits
    np.testing.assert_array_equal(
        MaxSoftmax(model).fit().predict_features(z),
        MSPView().fit_features(inputs).predict_features(inputs),
    )
    np.testing.assert_array_equal(
        EnergyScore(model).fit().predict_features(z),
        EnergyView().fit_features(inputs).predict_features(inputs),
    )
    odin = ODIN(model, eps=0.0)
    np.testing.assert_array_equal(odin.predict_features(z), msp_score(z, temperature=1000.0))
    # k-NN: the view's distance, by hand: the k-th smallest Euclidean distance of unit rows.
    bank, queries = inputs.penultimate[:30], inputs.penultimate[30:]
    knn = KNN(model, k=3).fit_features(bank)

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    dist = np.linalg.norm(unit(queries)[:, None] - unit(bank)[None], axis=2)
    np.testing.assert_allclose(knn.predict_features(queries), np.sort(dist)[:, 2], rtol=1e-6)


def test_mahalanobis_fit_features_by_hand() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 3))
    y = np.repeat([0, 1, 2], 20)
    z[y == 1] += 5
    det = Mahalanobis(_Embed(), eps=0.0).fit_features(z, y)
    means = np.stack([z[y == c].mean(0) for c in range(3)])
    cov = np.cov((z - means[y]).T, bias=True)
    q = rng.normal(size=(4, 3))
    expected = [min((v - m) @ np.linalg.inv(cov) @ (v - m) for m in means) for v in q]
    np.testing.assert_allclose(det.predict_features(q), expected, rtol=1e-4)


def test_not_fitted_and_bad_fits() -> None:
    model = seeded(TinyLinear)
    x = torch.rand(2, 1, 8, 8)
    for det in (MaxSoftmax(model), EnergyScore(model), ODIN(model), Mahalanobis(_Embed())):
        with pytest.raises(NotFittedError, match="fit"):
            det.predict(x)
    with pytest.raises(DetectorFitError, match="2 inputs per class"):
        Mahalanobis(_Embed()).fit_features(np.zeros((3, 2)), [0, 1, 1])
    with pytest.raises(TypeError, match="embed"):
        Mahalanobis(model)


class _Embed(TinyLinear):
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_baselines_on_a_trained_model(tiny_mnist) -> None:
    t = tiny_mnist
    clean = t.x_test[:100]
    noise = torch.rand(100, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = np.r_[np.zeros(100), np.ones(100)]
    maha = Mahalanobis(t.model).fit(t.x_train[::4], t.y_train[::4])
    assert maha.eps in EPS_GRID
    auroc = roc_auc_score(labels, np.r_[maha(clean), maha(noise)])
    assert auroc > 0.9, auroc  # noise is far from every class mean
    # ODIN's preprocessing step raises the temperature-scaled confidence of clean inputs.
    odin = ODIN(t.model, eps=0.0).fit(clean)
    base = odin(clean)
    odin.eps = 0.01
    assert odin(clean).mean() < base.mean()
    tuned = ODIN(t.model).fit(t.x_train[:64])
    assert tuned.eps in EPS_GRID
