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

    python -m gga_lab.analysis.false_alarms --data-dir ../shared/data \
        --out docs/results/false_alarms.json
"""

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", help="model names (default: every model)")
    parser.add_argument("--data-dir")
    parser.add_argument("--repo", help="model repository (default: the shipped zoo)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--n-trained", type=int, default=5000, help="images the model trained on, for contrast"
    )
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    repo = ModelRepository(args.repo)
    rows = [
        false_alarm_rate(name, repo, args.data_dir, args.batch, args.n_trained)
        for name in (args.models or repo.names())
    ]
    out = sys.stdout
    out.write(
        "| model | alpha | calibration inputs | correct test inputs | flagged | false-alarm rate "
        "| 1 sd (test + calibration) | flagged among misclassified "
        "| flagged among trained-on images |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        missed, trained = r["flag_rate_misclassified"], r["flag_rate_trained_on"]
        out.write(
            f"| {r['model']} | {r['alpha']:.2f} | {r['n_calibration']:,} "
            f"| {r['n_correct']:,} | {r['flagged_correct']:,} "
            f"| {100 * r['false_alarm_rate']:.1f}% | {100 * r['sd']:.1f} "
            f"| {'-' if missed is None else f'{100 * missed:.1f}%'} "
            f"| {'-' if trained is None else f'{100 * trained:.1f}%'} |\n"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
