"""Does each shipped trust score flag clean inputs at the rate its alpha promises?

The conformal calibration of `gga fit` says: on clean, correctly classified inputs drawn like the
calibration split, a fraction of about alpha is flagged. This script checks it on data the
detector never saw: the whole test split of each model's data set, through the same pipeline the
service runs (engine options from detector.json, trust score, flag). It prints, per model, the
number of correctly classified test inputs, the fraction flagged, and how far that may stray from
alpha by chance: the binomial spread of the test sample plus the spread of the calibration set
(with n calibration scores, the flag rate that one calibration set achieves has a standard
deviation of about sqrt(alpha (1 - alpha) / (n + 2))). For contrast it also shows the flag rate
on images the model was trained on (a seeded sample): these look more trustworthy than new
ones, which is why `gga fit` calibrates on held-out images. It writes the figures as JSON (--out).

    gga lab false-alarms --data-dir ../shared/data --out docs/results/false_alarms.json
"""

import json
import math
import sys
from pathlib import Path

import torch

from detectors.pipeline import load_pipeline
from gga_lab.flags import flagged_and_correct
from gga_training.splits import card_split
from models.data import load_dataset
from models.repository import ModelRepository


def false_alarm_rate(
    name: str, repo: ModelRepository, data_dir: str | None, batch: int, n_trained: int
) -> dict:
    """Flag rate of one model's trust score on its correctly classified test inputs."""
    loaded = repo.load(name)
    pipeline = load_pipeline(loaded.path, loaded.module, loaded.card.weights_sha256)
    data = load_dataset(loaded.card.dataset, "test", data_dir=data_dir)
    x = data.float()
    flagged, correct = flagged_and_correct(pipeline, x, data.y, batch, f"{name} test")
    trained_rate = None
    if n_trained and loaded.card.recipe:
        train = load_dataset(loaded.card.dataset, "train", data_dir=data_dir)
        trained = card_split(loaded.card.recipe, train.y).train
        idx = trained[torch.randperm(len(trained), generator=torch.Generator().manual_seed(0))]
        idx = idx[:n_trained]
        f_tr, c_tr = flagged_and_correct(
            pipeline, train.float()[idx], train.y[idx], batch, f"{name} train"
        )
        trained_rate = float(f_tr[c_tr].mean())
    n = int(correct.sum())
    alpha = pipeline.alpha
    n_cal = pipeline.scorer.calibrator.n
    sd_test = math.sqrt(alpha * (1 - alpha) / n)
    sd_cal = math.sqrt(alpha * (1 - alpha) / (n_cal + 2))
    return {
        "model": name,
        "alpha": alpha,
        "n_test": len(x),
        "n_correct": n,
        "flagged_correct": int(flagged[correct].sum()),
        "false_alarm_rate": float(flagged[correct].mean()),
        "n_calibration": n_cal,
        "calibration_inputs": pipeline.scorer.provenance.get("calibration_inputs", "training"),
        "sd": math.sqrt(sd_test**2 + sd_cal**2),
        "flag_rate_misclassified": float(flagged[~correct].mean()) if n < len(x) else None,
        "flag_rate_trained_on": trained_rate,
    }


def report(
    models: list[str],
    repo: str | None = None,
    data_dir: str | None = None,
    batch: int = 256,
    n_trained: int = 5000,
    out: Path | None = None,
) -> list[dict]:
    """Measure every model (all of the repository's when ``models`` is empty), print a markdown
    table and write the figures as JSON to ``out``."""
    torch.set_grad_enabled(True)
    repository = ModelRepository(repo)
    rows = [
        false_alarm_rate(name, repository, data_dir, batch, n_trained)
        for name in (models or repository.names())
    ]
    sys.stdout.write(
        "| model | alpha | calibration inputs | correct test inputs | flagged | false-alarm rate "
        "| 1 sd (test + calibration) | flagged among misclassified "
        "| flagged among trained-on images |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        missed, trained = r["flag_rate_misclassified"], r["flag_rate_trained_on"]
        sys.stdout.write(
            f"| {r['model']} | {r['alpha']:.2f} | {r['n_calibration']:,} "
            f"| {r['n_correct']:,} | {r['flagged_correct']:,} "
            f"| {100 * r['false_alarm_rate']:.1f}% | {100 * r['sd']:.1f} "
            f"| {'-' if missed is None else f'{100 * missed:.1f}%'} "
            f"| {'-' if trained is None else f'{100 * trained:.1f}%'} |\n"
        )
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows
