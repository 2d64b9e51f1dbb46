"""Writing an evaluation: JSON, a markdown report in the paper's Table 1 layout, and figures."""

import json
from pathlib import Path
from typing import Any

import numpy as np

from gga_lab.adaptive_trust import AdaptiveReport
from gga_lab.evaluate import (
    ADAPTIVE_KINDS,
    COLUMNS,
    EXTRA_KINDS,
    OOD_KINDS,
    PAPER_ROWS,
    PUBLISHED,
    SPLITS,
    TABLE_KINDS,
    TRUST,
    EvalResult,
    roc_curves,
)
from gga_lab.plots import plot_examples, plot_roc

KIND_LABELS: dict[str, str] = {
    "noise": "uniform noise",
    "pgd_linf": "PGD l∞",
    "pgd_l2": "PGD l2",
    "rotation": "rotation",
    "lbfgs": "L-BFGS",
    "ood_dataset": "OOD: other data set",
    "ood_noise": "OOD: noise images",
    "ood_photos": "OOD: photo crops",
    "ood_mnist": "OOD: MNIST",
    "ood_corrupted": "OOD: corrupted, still right",
    "corrupted_wrong": "corrupted, misclassified",
    "tpgd_ce": "T-PGD CE",
    "tpgd_mse": "T-PGD MSE",
    "csa": "CSA",
    "adaptive_trust": "adaptive on the trust score",
    "pgd_linf_min": "PGD l∞ stopped at success",
}


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _paper(v: float | None) -> str:
    return "–" if v is None else f"*{v:.1f}*"


def markdown(result: EvalResult, command: str | None = None, figures: str = ".") -> str:
    """The report of one model as markdown.

    Args:
        result: the evaluation.
        command: the command line that produced it (shown first).
        figures: folder of the PNGs relative to where the markdown will live.
    """
    r = result
    published = PUBLISHED.get(r.dataset, {})
    lines = [f"## {r.model} ({r.dataset})", ""]
    if command:
        lines += ["```", command, "```", ""]
    fa = r.false_alarm
    source = SPLITS[r.config.get("split", "test")]
    drawn = r.config.get("drawn", "chosen by the caller")
    lines += [
        f"Trust score: {_detector_phrase(r.detector)}, views fitted on "
        f"{r.detector.get('n_fit')} and the trust score calibrated on "
        f"{r.detector.get('n_cal')} correctly classified training inputs "
        f"({_calibration_source(r.detector)}seed "
        f"{r.detector.get('seed')}). Evaluation: {r.n_clean} {source} inputs ({drawn}), "
        f"{100 * r.clean_accuracy:.1f}% correct; the {fa['n']} correct ones are the positives. "
        f"Seed {r.config['seed']}; eps l∞ {r.eps['linf']:.4g}, l2 {r.eps['l2']:.4g}; PGD "
        f"{r.config['pgd_steps']} steps of eps/4; L-BFGS, CSA and the adaptive attack on the "
        f"trust score on the first {r.config['n_slow']} positives; {r.seconds / 60:.1f} min.",
        "",
        f"False alarms (trust < alpha = {fa['alpha']}) on clean, correctly classified {source} "
        f"inputs: **{_pct(fa['rate'])}%** (n = {fa['n']}); misclassified clean {source} inputs "
        f"flagged: {_pct(fa['flag_rate_misclassified'])}% (n = {fa['n_misclassified']}).",
        "",
        "Untrusted inputs per kind (attacks: successful ones only):",
        "",
        "| kind | attempted | untrusted | attack success |",
        "|---|---|---|---|",
    ]
    for kind, info in r.kinds.items():
        lines.append(
            f"| {KIND_LABELS[kind]} | {info['n_attempted']} | {info['n_untrusted']} | "
            f"{_pct(info['success_rate'])} |"
        )
    lines += [
        "",
        "TNR@95TPR (%) per kind, pooled AUROC / AUPR-In / AUPR-Out (%) over the non-adaptive "
        "kinds: the shipped trust score, each of its views alone (`view ...`; the views the "
        "trust score does not fuse are marked †), and the baselines. *Italic rows*: the paper's "
        "published numbers (a different model; its GGA is our `view gga-paper`; L-BFGS and PGD "
        "l2 sit under the paper's B&B and B&B-L2 columns, which are different attacks).",
        "",
        "| method | " + " | ".join(c[1] for c in COLUMNS) + " | AUROC | AUPR-In | AUPR-Out |",
        "|---|" + "---|" * (len(COLUMNS) + 3),
    ]
    for name in r.tnr:
        cells = [_pct(r.tnr[name].get(col)) for col, _, _ in COLUMNS]
        pooled = r.pooled.get(name, {})
        lines.append(
            f"| {_row_label(r, name)} | " + " | ".join(cells) + f" | {_pct(pooled.get('AUROC'))} | "
            f"{_pct(pooled.get('AUPR-IN'))} | {_pct(pooled.get('AUPR-OUT'))} |"
        )
        paper_name = PAPER_ROWS.get(name)
        if paper_name in published:
            pub = published[paper_name]
            cells = [_paper(pub.get(p)) for _, _, p in COLUMNS]
            lines.append(
                f"| *{paper_name} (paper)* | "
                + " | ".join(cells)
                + f" | {_paper(pub.get('AUROC'))} | – | – |"
            )
    gga_paper = published.get("GGA", {})
    lines += _kind_table(
        r,
        ADAPTIVE_KINDS,
        "Adaptive attacks (TNR@95TPR %, successful attacks only):",
        paper_row=("GGA", gga_paper) if gga_paper else None,
    )
    lines += adaptive_trust_section(r.adaptive_trust)
    lines += _kind_table(
        r,
        EXTRA_KINDS,
        "Beyond the paper (TNR@95TPR %, successful attacks only): PGD that stops each input at"
        " its first successful step, so it sits just past the decision boundary.",
    )
    lines += _kind_table(r, OOD_KINDS, "OOD sources separately (TNR@95TPR %):")
    lines += _rank_table(r)
    lines += [
        "",
        discussion(r),
        "",
        f"Figures: [ROC curves]({figures}/roc.png); examples per kind: "
        + ", ".join(f"[{k}]({figures}/examples_{k}.png)" for k in r.examples),
        "",
    ]
    return "\n".join(lines)


def adaptive_trust_section(report: AdaptiveReport | None) -> list[str]:
    """The plain and the adaptive attack's success on the trust score, or that it was not run.

    Success: the label is wrong **and** the trust score is at or above alpha (not flagged), as
    a share of the attempted inputs (``gga_lab.adaptive_trust``).
    """
    lines = ["", "### Adaptive attack on the trust score", ""]
    if report is None:
        return [*lines, "Not measured in this evaluation (the kind `adaptive_trust` was not run)."]
    a = report
    not_attacked = ", ".join(a.views_not_attacked) or "none"
    return [
        *lines,
        f"Success = label wrong **and** trust >= alpha = {a.alpha} (not flagged), as a share of "
        f"the {a.n} attempted positives. Both attacks: l∞ eps {a.eps:.4g}, {a.steps} steps of "
        f"eps/4 from the same random start. The adaptive one knows the fitted scorer: it "
        f"descends a torch surrogate of its views (weight {a.lam_before:g} while the label is "
        f"right, {a.lam:g} once it is wrong), and keeps each input's best iterate by the real "
        f"pipeline, scored every "
        f"{a.check_every} steps (`gga_lab/adaptive_trust.py`).",
        "",
        "| attack | misclassified (%) | misclassified and trusted: success (%) |",
        "|---|---|---|",
        f"| plain PGD l∞ | {_pct(a.plain_misclassified)} | {_pct(a.plain_success)} |",
        f"| adaptive | {_pct(a.adaptive_misclassified)} | **{_pct(a.adaptive_success)}** |",
        f"| either of the two | – | {_pct(a.either_success)} |",
        "",
        f"Views in the adaptive attack's gradient: {', '.join(a.views_attacked) or 'none'}; "
        f"fused but left out of it (no surrogate): {not_attacked}.",
    ]


def _detector_phrase(detector: dict) -> str:
    views = detector.get("views") or [detector.get("kind", "?")]
    rescaled = detector.get("engine_options", {}).get("rescale_logits")
    return (
        f"views {', '.join(views)} fused by {detector.get('fusion', '?')} (GGA logits "
        f"{'rescaled' if rescaled else 'not rescaled'})"
    )


def _row_label(r: EvalResult, name: str) -> str:
    """``name``, in bold for the shipped score, with † for a view the trust score leaves out."""
    if name == TRUST:
        return f"**{name}**"
    fused = r.detector.get("views", [])
    if name.startswith("view ") and name[5:] not in fused:
        return f"{name} †"
    return name


def _rank_table(r: EvalResult) -> list[str]:
    """Each detector's rank by TNR@95TPR per kind (1 = best), and its mean rank."""
    kinds = [k for k in (*TABLE_KINDS, *EXTRA_KINDS, *ADAPTIVE_KINDS) if k in r.kinds]
    if not kinds or not r.ranks:
        return []
    lines = [
        "",
        "Rank of each detector per kind by TNR@95TPR (1 = best, ties share a rank):",
        "",
        "| method | " + " | ".join(KIND_LABELS[k] for k in kinds) + " | mean rank |",
        "|---|" + "---|" * (len(kinds) + 1),
    ]
    for name, per_kind in r.ranks.items():
        ranks = [per_kind.get(k) for k in kinds]
        known = [v for v in ranks if v is not None]
        mean = f"{np.mean(known):.1f}" if known else "–"
        cells = " | ".join("–" if v is None else str(v) for v in ranks)
        lines.append(f"| {_row_label(r, name)} | {cells} | {mean} |")
    return lines


def _calibration_source(detector: dict) -> str:
    """Where the calibration inputs came from, as a phrase ("" for older detector.json files)."""
    source = detector.get("calibration_inputs")
    if source == "held out from training":
        return "held out from the model's training; "
    return "ones the model was trained on; " if source == "training" else ""


def _kind_table(
    r: EvalResult,
    kinds: tuple[str, ...],
    caption: str,
    paper_row: tuple[str, dict[str, float]] | None = None,
) -> list[str]:
    """A TNR@95TPR table of the evaluated ``kinds``, one row per method (none if none ran)."""
    present = [k for k in kinds if k in r.kinds]
    if not present:
        return []
    lines = [
        "",
        caption,
        "",
        "| method | " + " | ".join(KIND_LABELS[k] for k in present) + " |",
        "|---|" + "---|" * len(present),
    ]
    for name in r.tnr:
        cells = " | ".join(_pct(r.tnr[name].get(k)) for k in present)
        lines.append(f"| {_row_label(r, name)} | {cells} |")
    if paper_row is not None:
        name, values = paper_row
        cells = " | ".join(_paper(values.get(k)) for k in present)
        lines.append(f"| *{name} (paper)* | {cells} |")
    return lines


def discussion(r: EvalResult) -> str:
    """Plain statements of where the trust score wins and what beats it (from the numbers)."""
    ours = r.tnr.get(TRUST, {})
    losses, wins = [], []
    for kind, value in ours.items():
        best = max(
            ((n, t[kind]) for n, t in r.tnr.items() if n != TRUST and kind in t),
            key=lambda p: p[1],
            default=None,
        )
        if best is None:
            continue
        label = KIND_LABELS.get(kind, "OOD (pooled)")
        if best[1] > value + 0.005:
            losses.append(f"{label} ({best[0]} {_pct(best[1])} vs {_pct(value)})")
        else:
            wins.append(label)
    text = []
    if wins:
        text.append(
            "The trust score is best or tied (within 0.5 points) on: " + ", ".join(wins) + "."
        )
    if losses:
        text.append("A single view or baseline beats it on: " + "; ".join(losses) + ".")
    aurocs = {n: p["AUROC"] for n, p in r.pooled.items()}
    if aurocs:
        top = max(aurocs, key=aurocs.get)
        text.append(f"Highest pooled AUROC: {top} ({_pct(aurocs[top])}).")
        if TRUST in aurocs and top != TRUST:
            text.append(f"The trust score's: {_pct(aurocs[TRUST])}.")
    return " ".join(text)


def write_report(
    result: EvalResult, out_dir: Path, command: str | None = None, save_scores: bool = False
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``roc.png`` and ``examples_<kind>.png``.

    With ``save_scores``, also ``scores.npz``: every row's outlier score of every input, keyed
    ``"ROW|KIND"`` (float64: max softmax saturates near 1 on confident models, and float32 would
    tie inputs the calibration tells apart), so other fusions and calibrations can be compared
    offline on the same inputs (``gga lab fusion``).

    Returns:
        Name -> path of every file written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    data: dict[str, Any] = result.to_dict()
    data["command"] = command
    paths["json"] = out_dir / "results.json"
    paths["json"].write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
    paths["markdown"] = out_dir / "results.md"
    paths["markdown"].write_text(markdown(result, command) + "\n")
    if save_scores:
        paths["scores"] = out_dir / "scores.npz"
        np.savez_compressed(
            paths["scores"],
            **{
                f"{row}|{kind}": np.asarray(s, dtype=np.float64)
                for row, per_kind in result.scores.items()
                for kind, s in per_kind.items()
            },
        )
    paths["roc"] = plot_roc(roc_curves(result), f"{result.model}: pooled ROC", out_dir / "roc.png")
    for kind, ex in result.examples.items():
        if len(ex.get("images", [])):
            paths[f"examples_{kind}"] = plot_examples(
                ex["images"],
                ex["saliency"],
                ex["csm"],
                ex["classes"],
                ex["predicted"],
                ex["trust"],
                f"{result.model}: {KIND_LABELS.get(kind, kind)}",
                out_dir / f"examples_{kind}.png",
            )
    return paths


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
