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
import copy
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import GGAUserError

# Below this many confirmed-correct predictions the command refuses. With n calibration scores
# the false-alarm rate on exchangeable traffic is alpha on average, and spread around it by about
# sqrt(alpha (1 - alpha) / n): 1.5 points at alpha 0.05 and n = 200.
DEFAULT_MIN_LABELLED = 200
# Confirmed-wrong predictions --refit-fusion needs: the untrusted side of what it learns from.
MIN_WRONG = 50
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
    p.add_argument(
        "--refit-fusion",
        action="store_true",
        help="also refit a learnt fusion (logistic, clean-knn, guarded) on the stored view scores "
        f"of predictions confirmed correct and confirmed wrong (at least {MIN_WRONG} wrong); the "
        "confirmed-correct ones are split in half, one half to refit, the other to calibrate",
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
            folder,
            args.model,
            db,
            since=since,
            min_labelled=args.min_labelled,
            refit_fusion=args.refit_fusion,
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
    refit_fusion: bool = False,
) -> dict[str, Any]:
    """Refit ``folder``'s final calibration on the store's confirmed-correct predictions.

    With ``refit_fusion``, a learnt fusion is first refitted on the stored view scores of
    confirmed-correct and confirmed-wrong predictions (``_refit_fusion``), and the calibration
    uses only confirmed-correct predictions it did not learn from.

    Args:
        folder: The model folder (its ``detector.json`` is replaced, the old one kept).
        model: The model's name in the store.
        db: The result store (``service.store.Database``).
        since: Only predictions made at or after this time.
        min_labelled: Refuse below this many usable confirmed-correct predictions (for the
            calibration alone: with ``refit_fusion``, twice as many are needed).
        refit_fusion: Refit a learnt fusion too.

    Returns:
        What was done: the calibration size, the time span and the statistic id used.

    Raises:
        NotEnoughLabels: Fewer than ``min_labelled`` usable predictions, or with
            ``refit_fusion`` fewer than ``MIN_WRONG`` confirmed wrong ones.
        GGAUserError: ``refit_fusion`` on a fusion that learns nothing from data.
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
    fusion = scorer.fusion
    fused = [float(r["scores"]["fused"]) for r in rows]
    refitted: dict[str, Any] = {}
    if refit_fusion:
        wrong = [
            r
            for r in confirmed_scores(db, model, since=since, correct=False)
            if r["scores"].get("statistic") == statistic
        ]
        fusion, calibration_rows, refitted = _refit_fusion(scorer, rows, wrong, min_labelled)
        fused = [float(v) for v in _fused(scorer, fusion, calibration_rows)]
        rows = calibration_rows
    used = {
        "source": "result store: predictions confirmed correct by feedback",
        "n": len(rows),
        "first": rows[0]["created_at"].isoformat(),
        "last": rows[-1]["created_at"].isoformat(),
        "since": since.isoformat() if since else None,
        "statistic": statistic,
        "previous_n": scorer.calibrator.n,
        "at": dt.datetime.now(dt.UTC).isoformat(),
        **({"fusion_refitted": refitted} if refitted else {}),
    }
    recalibrated = TrustScorer(
        views=scorer.views,
        view_calibrators=scorer.view_calibrators,
        fusion=fusion,
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


def _view_scores(fusion: Any, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {n: np.array([float(r["scores"]["views"][n]) for r in rows]) for n in fusion.views}


def _fused(scorer: Any, fusion: Any, rows: list[dict[str, Any]]) -> np.ndarray:
    """The fused statistic of stored rows under ``fusion`` (their raw view scores, re-fused)."""
    from detectors.trust import fuse

    statistic, _ = fuse(_view_scores(fusion, rows), scorer.view_calibrators, fusion)
    return statistic


def _refit_fusion(
    scorer: Any, correct: list[dict[str, Any]], wrong: list[dict[str, Any]], min_labelled: int
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """A copy of the served fusion refitted on traffic, and the rows left to calibrate it on.

    The confirmed-correct rows are shuffled (seed 0) and halved: the fusion learns from one half
    and the wrong rows, and the other half calibrates it, so that the calibration scores are
    exchangeable with future clean traffic, never ones the fusion was fitted to.

    Raises:
        GGAUserError: The fusion is a fixed rule, or fuses one view: nothing to refit.
        NotEnoughLabels: Fewer than ``MIN_WRONG`` wrong rows, or ``2 * min_labelled`` correct.
    """
    from detectors.fusion import Fusion, SingleFusion

    fusion = scorer.fusion
    if isinstance(fusion, SingleFusion) or type(fusion).fit is Fusion.fit:
        raise GGAUserError(
            f"the served fusion ({fusion.kind}) learns nothing from data: there is nothing to "
            "refit; recalibrate without --refit-fusion"
        )
    usable = [r for r in wrong if all(n in r["scores"].get("views", {}) for n in fusion.views)]
    if len(usable) < MIN_WRONG or len(correct) < 2 * min_labelled:
        raise NotEnoughLabels(
            f"--refit-fusion needs at least {MIN_WRONG} predictions confirmed wrong and "
            f"{2 * min_labelled} confirmed correct (half to refit, half to calibrate); the store "
            f"has {len(usable)} and {len(correct)} for the fused statistic now served"
        )
    order = np.random.default_rng(0).permutation(len(correct))
    half = len(correct) // 2
    learn = [correct[i] for i in order[:half]]
    calibrate = [correct[i] for i in order[half:]]
    scores = {
        n: np.concatenate([_view_scores(fusion, learn)[n], _view_scores(fusion, usable)[n]])
        for n in fusion.views
    }
    p_values = np.stack([scorer.view_calibrators[n].trust(scores[n]) for n in fusion.views], 1)
    labels = np.concatenate([np.zeros(len(learn), dtype=int), np.ones(len(usable), dtype=int)])
    refitted = copy.deepcopy(fusion).fit(p_values, labels)
    summary = {"kind": fusion.kind, "correct": len(learn), "wrong": len(usable)}
    return refitted, calibrate, summary


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
