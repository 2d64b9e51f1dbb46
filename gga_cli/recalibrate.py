"""``gga recalibrate MODEL --from-store``: refit a detector's final calibration on live traffic.

The conformal guarantee of the flag (about ``alpha`` of clean inputs flagged) holds for inputs
exchangeable with the calibration set. When traffic shifts, the stored fused statistics of the
predictions that feedback confirmed correct are a calibration set exchangeable with that traffic:
this command makes them the new final calibration. The views, their calibrations and the fusion
stay as fitted, so the fused statistic is unchanged and only its threshold moves; only scores of
the fused statistic now served (``scores.statistic``) are used.

The replaced ``detector.json`` is kept in ``detector-versions/`` beside it, and the new file
records the data it was calibrated on; ``gga recalibrate MODEL --rollback`` puts the previous
file back. A running server serves either after a reload (``POST
/v2/repository/models/{name}/load``, or a restart).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from models.errors import GGAUserError

# Below this many confirmed-correct predictions the command refuses. With n calibration scores
# the false-alarm rate on exchangeable traffic is alpha on average, and spread around it by about
# sqrt(alpha (1 - alpha) / n): 1.5 points at alpha 0.05 and n = 200.
DEFAULT_MIN_LABELLED = 200
VERSIONS = "detector-versions"
DETECTOR_FILE = "detector.json"


class NotEnoughLabels(GGAUserError):
    """Too few predictions confirmed correct to recalibrate on."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recalibrate",
        help="refit a detector's final calibration on stored predictions confirmed correct",
        description="Refit the final conformal calibration of MODEL's detector on the stored "
        "fused statistics of its predictions that feedback confirmed correct, keeping the "
        "replaced detector.json in detector-versions/ (--rollback restores it). Reload the "
        "model afterwards. See docs/operations.md, 'The feedback loop'.",
    )
    p.add_argument("model", help="model name in the repository")
    p.add_argument(
        "--from-store",
        action="store_true",
        help="recalibrate on the result store's labelled predictions (the only source so far)",
    )
    p.add_argument("--since", help="only predictions made at or after this ISO 8601 time")
    p.add_argument(
        "--min-labelled",
        type=int,
        default=DEFAULT_MIN_LABELLED,
        help=f"refuse below this many confirmed-correct predictions (default "
        f"{DEFAULT_MIN_LABELLED})",
    )
    p.add_argument("--rollback", action="store_true", help="restore the previous detector.json")
    p.add_argument("--repo", help="model repository folder")
    p.add_argument("--database-url", help="SQLAlchemy URL of the store (default GGA_DATABASE_URL)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models.repository import ModelRepository

    folder = ModelRepository(args.repo).path(args.model)
    if args.rollback:
        restored = rollback(folder)
        sys.stdout.write(f"{args.model}: restored {restored.name}; reload the model to serve it\n")
        return 0
    if not args.from_store:
        raise GGAUserError("say where the calibration comes from: --from-store (or --rollback)")
    from service.settings import get_settings
    from service.store import Database

    since = dt.datetime.fromisoformat(args.since) if args.since else None
    db = Database(get_settings(database_url=args.database_url).database_url)
    try:
        summary = recalibrate_from_store(
            folder, args.model, db, since=since, min_labelled=args.min_labelled
        )
    finally:
        db.dispose()
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    sys.stdout.write(
        f"{args.model}: recalibrated; reload the model to serve it (--rollback undoes)\n"
    )
    return 0


def recalibrate_from_store(
    folder: Path,
    model: str,
    db: Any,
    *,
    since: dt.datetime | None = None,
    min_labelled: int = DEFAULT_MIN_LABELLED,
) -> dict[str, Any]:
    """Refit ``folder``'s final calibration on the store's confirmed-correct predictions.

    Args:
        folder: The model folder (its ``detector.json`` is replaced, the old one kept).
        model: The model's name in the store.
        db: The result store (``service.store.Database``).
        since: Only predictions made at or after this time.
        min_labelled: Refuse below this many usable confirmed-correct predictions.

    Returns:
        What was done: the calibration size, the time span and the statistic id used.

    Raises:
        NotEnoughLabels: Fewer than ``min_labelled`` usable predictions.
    """
    from detectors.calibration import ConformalCalibrator
    from detectors.trust import TrustScorer
    from models.card import ModelCard
    from service.predictions import statistic_id
    from service.store.feedback import confirmed_scores

    scorer = TrustScorer.load(folder, ModelCard.load(folder).weights_sha256)
    statistic = statistic_id(scorer)
    rows = [
        r
        for r in confirmed_scores(db, model, since=since)
        if r["scores"].get("statistic") == statistic and r["scores"].get("fused") is not None
    ]
    if len(rows) < min_labelled:
        raise NotEnoughLabels(
            f"{model}: {len(rows)} stored predictions confirmed correct carry the fused "
            f"statistic now served; recalibrating needs at least {min_labelled} (--min-labelled). "
            "Post feedback (POST /v1/predictions/{id}/feedback) on more predictions, or widen "
            "--since"
        )
    fused = [float(r["scores"]["fused"]) for r in rows]
    used = {
        "source": "result store: predictions confirmed correct by feedback",
        "n": len(rows),
        "first": rows[0]["created_at"].isoformat(),
        "last": rows[-1]["created_at"].isoformat(),
        "since": since.isoformat() if since else None,
        "statistic": statistic,
        "previous_n": scorer.calibrator.n,
        "at": dt.datetime.now(dt.UTC).isoformat(),
    }
    recalibrated = TrustScorer(
        views=scorer.views,
        view_calibrators=scorer.view_calibrators,
        fusion=scorer.fusion,
        calibrator=ConformalCalibrator(fused, tail=scorer.calibrator.tail),
        alpha=scorer.alpha,
        engine_options=scorer.engine_options,
        model_name=scorer.model_name,
        weights_sha256=scorer.weights_sha256,
        provenance={
            **scorer.provenance,
            "calibration_inputs": used["source"],
            "recalibrations": [*scorer.provenance.get("recalibrations", []), used],
        },
    )
    keep_version(folder)
    recalibrated.save(folder)
    return used


def keep_version(folder: Path) -> Path:
    """Copy the current ``detector.json`` into ``detector-versions/`` (named by the time)."""
    versions = Path(folder) / VERSIONS
    versions.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    kept = versions / f"detector-{stamp}.json"
    shutil.copy2(Path(folder) / DETECTOR_FILE, kept)
    return kept


def rollback(folder: Path) -> Path:
    """Put the newest kept ``detector.json`` back (atomically), removing it from the versions.

    Raises:
        GGAUserError: No version is kept.
    """
    versions = sorted((Path(folder) / VERSIONS).glob("detector-*.json"))
    if not versions:
        raise GGAUserError(f"{folder}: no earlier detector.json in {VERSIONS}/ to roll back to")
    newest = versions[-1]
    os.replace(newest, Path(folder) / DETECTOR_FILE)
    return newest
