"""The engine benchmark's many-class rows (``gga bench engine --imagenet``), on a small stand-in:
all classes (the limit), the classes read by default, saliency at blocks, peak memory, floors."""

import torch

from gga_lab.bench import imagenet
from gga_lab.bench.engine import BenchCase
from gga_lab.bench.imagenet import imagenet_floors, imagenet_rows
from tests.helpers.models import TinyCNN, seeded


def test_rows_floors_and_peaks_of_a_many_class_model(monkeypatch) -> None:
    case = BenchCase("tiny-c40", seeded(TinyCNN, num_classes=40), (1, 28, 28), 40)
    monkeypatch.setattr(imagenet, "LAYERS", (0,))
    lines: list[str] = []
    records, choice, peaks = imagenet_rows(1, torch.device("cpu"), lines.append, case=case)
    assert choice.num_classes == 40 and choice.ms_per_image
    limit = next(r for r in records if r.strategy == "limit" and r.rows == 40)
    assert limit.ratio_to_forward > 1 and "peak RSS" in limit.note
    default = [r for r in records if r.rows == choice.rows and "default choice" in r.note]
    assert {"forward", "limit", "auto"} <= {r.strategy for r in default}
    layered = [r for r in records if "saliency at block 0 (8x28x28)" in r.note]
    assert len(layered) == 1 and layered[0].ratio_to_forward > 0
    assert set(peaks) == {"all", "default", "layers"} and all(v > 0 for v in peaks.values())
    floors = imagenet_floors(records, choice, peaks)
    assert len(floors) == 2 and all(f.startswith(("PASS", "MISS")) for f in floors)
    assert "forwards per image (floor 10)" in floors[0] and "GiB (floor < 4 GiB)" in floors[1]
    assert lines[-1] == "done: tiny-c40, saliency at blocks 0"
