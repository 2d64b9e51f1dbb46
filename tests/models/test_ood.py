"""Out-of-distribution sources: shapes, ranges, determinism, and what each one contains."""

import pytest
import torch

from models.data import load_dataset
from models.data.ood import (
    OOD_SOURCES,
    gaussian_noise,
    make_ood,
    other_dataset,
    photo_crops,
    rotations,
    uniform_noise,
)
from models.errors import DataError

GREY, COLOUR = (1, 28, 28), (3, 32, 32)


def _in_unit_range(x: torch.Tensor) -> bool:
    return x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("shape", [GREY, COLOUR])
def test_noise_sources_shape_range_determinism(shape):
    for source in (uniform_noise, gaussian_noise):
        a, b = source(8, shape, seed=1), source(8, shape, seed=1)
        assert a.shape == (8, *shape) and _in_unit_range(a)
        assert torch.equal(a, b) and not torch.equal(a, source(8, shape, seed=2))
    g = gaussian_noise(2000, GREY, mean=0.5, std=0.25, seed=0)
    assert abs(float(g.mean()) - 0.5) < 0.01
    assert float((g == 0).float().mean()) > 0.01  # clipped tails pile up at 0 (and 1)


def test_rotations_keep_shape_and_differ_from_inputs():
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    r = rotations(x, seed=3)
    assert r.shape == x.shape and _in_unit_range(r)
    assert torch.equal(r, rotations(x, seed=3))
    assert ((r - x).abs().flatten(1).max(dim=1).values > 0.1).all()
    # max_degrees bounds the angle: a tiny bound changes the images only a little.
    assert (rotations(x, max_degrees=0.01, seed=3) - x).abs().max() < 0.05


@pytest.mark.parametrize("shape", [GREY, COLOUR])
def test_photo_crops_shape_range_determinism(shape):
    crops = photo_crops(5, shape, seed=4)
    assert crops.shape == (5, *shape) and _in_unit_range(crops)
    assert torch.equal(crops, photo_crops(5, shape, seed=4))
    assert not torch.equal(crops, photo_crops(5, shape, seed=5))
    wide = photo_crops(3, shape, max_scale=8.0, seed=4)
    assert wide.shape == (3, *shape) and _in_unit_range(wide)


def test_photo_crops_are_the_photos_pixels():
    from sklearn.datasets import load_sample_images

    crop = photo_crops(1, COLOUR, seed=0)[0]
    # A raw crop (max_scale=1) appears verbatim in one photo: find where its top-left pixel
    # occurs, then compare the whole window at those few places.
    found = False
    for array in load_sample_images().images:
        photo = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255
        corners = torch.nonzero((photo == crop[:, :1, :1]).all(dim=0))
        for top, left in corners.tolist():
            window = photo[:, top : top + 32, left : left + 32]
            found = found or (window.shape == crop.shape and torch.equal(window, crop))
    assert found


def test_other_dataset_converts_to_the_target_shape(shared_data_dir):
    fashion = other_dataset("fashion-mnist", 10, GREY, data_dir=shared_data_dir)
    expected = load_dataset("fashion-mnist", "test", data_dir=shared_data_dir, limit=10).float()
    assert torch.equal(fashion, expected)
    as_colour = other_dataset("mnist", 4, COLOUR, data_dir=shared_data_dir)
    assert as_colour.shape == (4, 3, 32, 32) and _in_unit_range(as_colour)
    assert torch.equal(as_colour[:, 0], as_colour[:, 2])  # grey repeated to three channels


def test_make_ood_dispatches_and_validates(tmp_path):
    x = torch.rand(3, 1, 28, 28)
    assert set(OOD_SOURCES) == {"dataset", "uniform", "gaussian", "rotation", "photos"}
    assert torch.equal(make_ood("uniform", 4, GREY, seed=7), uniform_noise(4, GREY, seed=7))
    assert torch.equal(make_ood("rotation", 2, GREY, inputs=x, seed=1), rotations(x[:2], seed=1))
    assert make_ood("photos", 2, GREY).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="unknown OOD source 'blur'; choose one of dataset"):
        make_ood("blur", 2, GREY)
    with pytest.raises(ValueError, match="needs inputs="):
        make_ood("rotation", 2, GREY)
    with pytest.raises(ValueError, match="needs dataset=NAME"):
        make_ood("dataset", 2, GREY)
    with pytest.raises(DataError, match="looked in"):
        make_ood("dataset", 2, GREY, dataset="mnist", data_dir=tmp_path)
