"""Compare fusion rules and view p-value tails on the inputs one evaluation scored.

Reads a model's ``detector.json`` (its views' calibration scores) and the ``scores.npz`` that
``gga evaluate MODEL --save-scores`` wrote (every view's raw score of every input), and prints,
for each view tail (``detectors.calibration.TAILS``) and each fixed rule over all views, the
pooled AUROC and the TNR@95TPR per kind, beside the best single view per kind. No model is run,
so it takes seconds.

It then asks what issue 13's per-kind floor (the trust score within 10 TNR points of the best
single view on every kind) costs in false alarms: for each kind, the view that is best on it
and the smallest share of clean inputs that view must flag to stay within 10 points of its own
TNR at 5%; and the share of clean inputs that those views flag together at those levels. When
that union exceeds alpha, a trust score that flags an input whenever one of its views finds it
unusual enough cannot keep every kind within 10 points at alpha = 5%.

``--subset gga-csm+knn+mahalanobis`` (repeatable) adds each rule over those views only;
``--median-p`` prints each view's median p-value per kind: how far beyond the clean inputs a view
puts a kind, which decides whether a rule over several views, each cut lower than alpha, still
flags it.

This is analysis on the evaluation's inputs (the test set, unless the evaluation ran with
``--split held-out``): use it to understand the rules, never to pick a model's fusion, which
``gga fit`` chooses on held-out training images.

    gga evaluate fashion-mnist-cnn --save-scores --out-dir eval/fashion-mnist-cnn
    gga lab fusion models/zoo/fashion-mnist-cnn eval/fashion-mnist-cnn/scores.npz
"""

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detectors.calibration import TAILS, ConformalCalibrator
from detectors.fusion import FUSIONS
from detectors.trust import TrustScorer
from gga_lab.evaluate import TABLE_KINDS, view_row
from gga_lab.metrics import auroc, tnr_at_tpr
from models.errors import GGAUserError


def load_scores(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Row -> kind -> scores, from ``scores.npz``."""
    scores: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as npz:
        for key in npz.files:
            row, kind = key.split("|")
            scores.setdefault(row, {})[kind] = npz[key]
    return scores


def measure(per_kind: dict[str, np.ndarray]) -> dict[str, float]:
    """Pooled AUROC over the paper's kinds and TNR@95TPR per kind, in percent."""
    clean = per_kind["clean"]
    table = [per_kind[k] for k in TABLE_KINDS if k in per_kind]
    out = {"pooled": 100 * auroc(clean, np.concatenate(table))}
    for kind, s in per_kind.items():
        if kind != "clean":
            out[kind] = 100 * tnr_at_tpr(clean, s)
    return out


def floor_budget(
    views: dict[str, dict[str, np.ndarray]],
    kinds: list[str],
    alpha: float = 0.05,
    gap: float = 0.10,
) -> tuple[dict[str, tuple[str, float, float]], dict[str, float], float]:
    """What the per-kind floor asks of the views (module docstring).

    Returns:
        Per kind (best view, its TNR at ``alpha``, the false-alarm share it needs to keep
        ``TNR - gap``); per view, the largest share any kind needs of it; and the share of clean
        inputs flagged by any of those views at those shares.
    """
    grid = np.linspace(alpha / 100, alpha, 400)
    per_kind: dict[str, tuple[str, float, float]] = {}
    need: dict[str, float] = {}
    for kind in kinds:
        best = max(views, key=lambda v: tnr_at_tpr(views[v]["clean"], views[v][kind], 1 - alpha))
        clean, scores = views[best]["clean"], views[best][kind]
        top = tnr_at_tpr(clean, scores, 1 - alpha)
        share = min(f for f in grid if tnr_at_tpr(clean, scores, 1 - f) >= top - gap)
        per_kind[kind] = (best, top, share)
        need[best] = max(need.get(best, 0.0), share)
    flagged = np.zeros(len(next(iter(views.values()))["clean"]), dtype=bool)
    for view, share in need.items():
        clean = views[view]["clean"]
        flagged |= clean > np.quantile(clean, 1.0 - share)
    return per_kind, need, float(flagged.mean())


def flag_threshold(calibrator: ConformalCalibrator, alpha: float) -> float | None:
    """The smallest calibration score that, exceeded, the fused calibration flags at alpha."""
    scores = np.asarray(calibrator.sorted_scores, dtype=np.float64)
    flagged = scores[calibrator.trust(scores + 1e-9) < alpha]
    return float(flagged.min()) if len(flagged) else None


def report(
    model_dir: Path,
    scores: Path,
    json_out: Path | None = None,
    subsets: Sequence[str] = (),
    median_p: bool = False,
    below: Sequence[float] = (),
) -> dict[str, dict[str, float]]:
    """Print every table of the module docstring; write the rows and floor budget to ``json_out``.

    Args:
        model_dir: the folder holding the detector.json the evaluation scored.
        scores: that evaluation's scores.npz.
        json_out: where to write the table as JSON.
        subsets: ``"view+view"`` names: each rule over those views only, too.
        median_p: also print each view's median p-value per kind.
        below: also print the share of each view's p-values under each level.

    Returns:
        The rows: per detector or rule, pooled AUROC and TNR per kind (percent).
    """
    scorer = TrustScorer.load(model_dir, None)
    raw = load_scores(scores)
    views = [v for v in scorer.views if view_row(v) in raw]
    kinds = list(raw[view_row(views[0])])
    chosen = [tuple(s.split("+")) for s in subsets]
    for subset in chosen:
        unknown = sorted(set(subset) - set(views))
        if unknown:
            raise GGAUserError(
                f"--subset names views {unknown} not in this detector; it has {views}"
            )
    rows = compare_rules(scorer, raw, views, kinds, chosen)
    shown = [k for k in kinds if k != "clean"]
    width = max(len(r) for r in rows)
    _print_rows(rows, views, shown, width)
    if median_p:
        _print_median_p(scorer, raw, views, kinds, width)
    _print_below(scorer, raw, views, kinds, below, width)
    per_kind, need, union = floor_budget({v: raw[view_row(v)] for v in views}, shown)
    sys.stdout.write("\nper-kind floor: the best view per kind, and the clean share it must flag\n")
    for kind, (view, top, share) in per_kind.items():
        sys.stdout.write(
            f"  {kind:14} {view:12} TNR {100 * top:5.1f} at 5%, needs {100 * share:.2f}%\n"
        )
    shares = ", ".join(f"{v} {100 * s:.2f}%" for v, s in need.items())
    sys.stdout.write(f"  together ({shares}) they flag {100 * union:.1f}% of clean inputs\n")
    if json_out:
        budget = {
            "per_kind": {k: list(v) for k, v in per_kind.items()},
            "per_view": need,
            "union_false_alarms": union,
        }
        json_out.write_text(json.dumps({"rows": rows, "floor_budget": budget}, indent=1) + "\n")
    return rows


def compare_rules(
    scorer: TrustScorer,
    raw: dict[str, dict[str, np.ndarray]],
    views: list[str],
    kinds: list[str],
    subsets: list[tuple[str, ...]],
) -> dict[str, dict[str, float]]:
    """The shipped score, each view, and each fixed rule (over all views and each subset) per
    view tail; warns when the shipped fusion recomputed here misses the evaluation's own score."""
    rows: dict[str, dict[str, float]] = {"shipped trust score": measure(raw["trust score"])}
    for name in views:
        rows[f"view {name}"] = measure(raw[view_row(name)])
    for tail in TAILS:
        cals = {
            v: ConformalCalibrator(scorer.view_calibrators[v].sorted_scores, tail=tail)
            for v in views
        }
        p_values = {
            k: np.stack([cals[v].trust(raw[view_row(v)][k]) for v in views], 1) for k in kinds
        }
        rules = ("fisher", "cauchy", "tippett")
        fusions = {rule: FUSIONS[rule](tuple(views)) for rule in rules}
        for subset in subsets:
            fusions |= {f"{rule} {'+'.join(subset)}": FUSIONS[rule](subset) for rule in rules}
        if scorer.fusion.kind in FUSIONS:  # the shipped fusion, its weights unchanged
            fusions[f"shipped {scorer.fusion.kind}"] = scorer.fusion
        for label, fusion in fusions.items():
            cols = [views.index(v) for v in fusion.views]
            rows[f"{label} (tail {tail})"] = measure(
                {k: fusion.statistic(p[:, cols]) for k, p in p_values.items()}
            )
    # The shipped fusion recomputed from the saved view scores must give back the evaluation's
    # own trust score: a check that this analysis scores inputs as the service does.
    tail = next(iter(scorer.view_calibrators.values())).tail if scorer.view_calibrators else ""
    recomputed = rows.get(f"shipped {scorer.fusion.kind} (tail {tail})")
    shipped = rows["shipped trust score"]["pooled"]
    if recomputed and abs(recomputed["pooled"] - shipped) > 0.05:
        sys.stderr.write(
            "warning: the shipped fusion recomputed from scores.npz gives pooled AUROC "
            f"{recomputed['pooled']:.2f}, the evaluation {shipped:.2f}; was scores.npz written "
            "by an older gga evaluate (float32 scores)?\n"
        )
    return rows


def _print_rows(
    rows: dict[str, dict[str, float]], views: list[str], shown: list[str], width: int
) -> None:
    best = {k: max(rows[f"view {v}"][k] for v in views) for k in shown}
    sys.stdout.write(f"{'':{width}}  pooled  " + "  ".join(f"{k[:9]:>9}" for k in shown))
    sys.stdout.write("  worst gap\n")
    for name, m in rows.items():
        gap = max(best[k] - m[k] for k in shown)
        cells = "  ".join(f"{m[k]:9.1f}" for k in shown)
        sys.stdout.write(f"{name:{width}}  {m['pooled']:6.1f}  {cells}  {gap:9.1f}\n")


def _print_median_p(
    scorer: TrustScorer, raw: dict, views: list[str], kinds: list[str], width: int
) -> None:
    sys.stdout.write("\nmedian p-value per view and kind (view calibration, tail none)\n")
    sys.stdout.write(f"{'':{width}}  " + "  ".join(f"{k[:9]:>9}" for k in kinds) + "\n")
    for v in views:
        cal = ConformalCalibrator(scorer.view_calibrators[v].sorted_scores)
        cells = "  ".join(f"{np.median(cal.trust(raw[view_row(v)][k])):9.3f}" for k in kinds)
        sys.stdout.write(f"{'view ' + v:{width}}  {cells}\n")


def _print_below(
    scorer: TrustScorer,
    raw: dict,
    views: list[str],
    kinds: list[str],
    levels: Sequence[float],
    width: int,
) -> None:
    cut = flag_threshold(scorer.calibrator, scorer.alpha)
    if scorer.fusion.kind == "tippett" and levels and cut is not None:
        # Tippett's statistic is -log of the smallest view p-value, so the fused flag is a cut
        # on that p-value.
        sys.stdout.write(
            f"\nthe shipped tippett flags (alpha {scorer.alpha}) where the smallest view "
            f"p-value is below {np.exp(-cut):.4f}\n"
        )
    for level in levels:
        sys.stdout.write(f"\nshare of each view's p-values below {level} (view calibration)\n")
        sys.stdout.write(f"{'':{width}}  " + "  ".join(f"{k[:9]:>9}" for k in kinds) + "\n")
        for v in views:
            view_p = {k: scorer.view_calibrators[v].trust(raw[view_row(v)][k]) for k in kinds}
            cells = "  ".join(f"{np.mean(view_p[k] < level):9.3f}" for k in kinds)
            sys.stdout.write(f"{'view ' + v:{width}}  {cells}\n")
