"""LODA: separation, determinism, floors, errors."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from detectors.base import DetectorFitError, NotFittedError
from detectors.loda import LODA


def _clusters(seed: int = 0, n: int = 2000, d: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    inliers = rng.normal(0.0, 1.0, size=(n, d))
    outliers = rng.normal(4.0, 1.0, size=(n // 4, d))
    return inliers, outliers


def test_separates_two_gaussian_clusters() -> None:
    inliers, outliers = _clusters()
    det = LODA(projections=100, bins=50, seed=0).fit(inliers[:1500])
    held_in, out = det(inliers[1500:]), det(outliers)
    auroc = roc_auc_score(np.r_[np.zeros(len(held_in)), np.ones(len(out))], np.r_[held_in, out])
    assert auroc > 0.99
    assert np.median(out) > np.median(held_in)


def test_deterministic_given_seed_and_differs_across_seeds() -> None:
    inliers, outliers = _clusters()
    a = LODA(projections=20, bins=30, seed=3).fit(inliers).predict(outliers)
    b = LODA(projections=20, bins=30, seed=3).fit(inliers).predict(outliers)
    c = LODA(projections=20, bins=30, seed=4).fit(inliers).predict(outliers)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_projections_are_sparse_with_sqrt_d_nonzeros() -> None:
    inliers, _ = _clusters(d=16)
    det = LODA(projections=30, bins=10).fit(inliers)
    assert ((det.params.weights != 0).sum(axis=1) == 4).all()


def test_out_of_range_values_get_the_floor_and_score_highest() -> None:
    inliers, _ = _clusters()
    det = LODA(projections=10, bins=20).fit(inliers)
    far = np.full((1, inliers.shape[1]), 1e6)
    assert det(far)[0] == pytest.approx(-det.params.floor)
    assert det(far)[0] >= det(inliers).max()


def test_density_integrates_to_one_before_floor() -> None:
    inliers, _ = _clusters()
    det = LODA(projections=5, bins=20, floor_count=1e-9).fit(inliers)
    p = det.params
    mass = (np.exp(p.log_density) * p.width[:, None]).sum(axis=1)
    np.testing.assert_allclose(mass, 1.0, atol=1e-6)


def test_errors() -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        LODA().predict(np.zeros((2, 3)))
    with pytest.raises(DetectorFitError, match="at least"):
        LODA().fit(np.zeros((3, 3)))
    bad = np.zeros((50, 3))
    bad[7, 1] = np.nan
    with pytest.raises(DetectorFitError, match="NaN"):
        LODA().fit(bad)
    with pytest.raises(DetectorFitError, match="columns"):
        LODA(projections=3, bins=5).fit(np.random.default_rng(0).normal(size=(50, 3))).predict(
            np.zeros((1, 4))
        )
