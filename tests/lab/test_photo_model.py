"""The photo-model benchmark's own parts: its folder of JPEGs and its linear-probe ResNet-18."""

import torch

from gga_lab.bench.photo_model import SIDE, photo_folder, probe_model
from models.data.labelled import read_labelled_images


def test_the_folder_is_what_gga_fit_reads_and_the_probe_fits_it(shared_data_dir, tmp_path):
    folder, classes = photo_folder(shared_data_dir, tmp_path / "photos", n=30, seed=0)
    assert len(classes) == 10 and sorted(p.name for p in folder.iterdir()) == sorted(classes)
    data = read_labelled_images(folder, classes, (3, SIDE, SIDE), min_per_class=3)
    assert len(data.y) == 30 and set(data.y.tolist()) == set(range(10))  # class-balanced
    model, accuracy = probe_model(folder, classes, seed=0)
    assert accuracy > 0.9  # 512 features, 30 images: the probe separates them
    with torch.no_grad():
        logits = model(data.float())
    assert logits.shape == (30, 10)
    # The model the benchmark imports is the probe: it classifies the folder as measured.
    assert float((logits.argmax(1) == data.y).float().mean()) > 0.8
