"""``gga lab``: the analyses behind docs/results.md.

``false-alarms`` checks each trust score's flag rate on whole test sets, ``fusion`` compares fusion
rules on the scores one evaluation saved, ``feature-probe`` measures what the GGA features say
about each kind of input, ``results`` regenerates docs/results.md from the evaluation reports,
``saliency-layers`` measures detection against cost with GGA's saliency taken at each block.
The work is in ``gga_lab.analysis``; this module only parses arguments.
"""

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "lab",
        help="analyses behind docs/results.md (false alarms, fusion rules, features, tables)",
        description="Analyses behind docs/results.md.",
    )
    group = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    _register_false_alarms(group)
    _register_fusion(group)
    _register_feature_probe(group)
    _register_results(group)
    _register_saliency_layers(group)


def _register_false_alarms(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "false-alarms",
        help="each trust score's flag rate on the whole test set against its alpha",
        description="Runs every correctly classified test image of each model's data set "
        "through the served pipeline and prints the share flagged beside alpha and its expected "
        "spread; for contrast, the share flagged among images the model trained on.",
    )
    p.add_argument("models", nargs="*", help="model names (default: every model)")
    p.add_argument("--repo", help="model repository folder (default: the shipped zoo)")
    p.add_argument("--data-dir", help="data sets folder (default: $GGA_DATA_DIR)")
    p.add_argument("--batch", type=int, default=256, help="inputs per pipeline call")
    p.add_argument(
        "--n-trained", type=int, default=5000, help="images the model trained on, for contrast"
    )
    p.add_argument("--out", type=Path, help="write the figures here as JSON")
    p.set_defaults(func=_run_false_alarms)


def _run_false_alarms(args: argparse.Namespace) -> int:
    from gga_lab.analysis.false_alarms import report

    report(args.models, args.repo, args.data_dir, args.batch, args.n_trained, args.out)
    return 0


def _register_fusion(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "fusion",
        help="compare fusion rules and view p-value tails on the scores one evaluation saved",
        description="Reads a detector.json and the scores.npz of `gga evaluate --save-scores` "
        "and prints, per rule and view tail, the pooled AUROC and the TNR per kind beside each "
        "view, and what the per-kind floor costs in false alarms. Runs no model: seconds. "
        "Analysis on the evaluation's inputs: it chooses nothing.",
    )
    p.add_argument("model_dir", type=Path, help="folder holding detector.json")
    p.add_argument("scores", type=Path, help="scores.npz from gga evaluate --save-scores")
    p.add_argument("--json", type=Path, help="also write the table here")
    p.add_argument(
        "--subset",
        action="append",
        default=[],
        metavar="VIEW+VIEW",
        help="also fuse only these views, with each rule (repeatable)",
    )
    p.add_argument("--median-p", action="store_true", help="print each view's median p-value")
    p.add_argument(
        "--below",
        type=float,
        action="append",
        default=[],
        metavar="P",
        help="print the share of each view's p-values below P per kind (repeatable); with "
        "the shipped Tippett fusion, also the view p-value its flag at alpha amounts to",
    )
    p.set_defaults(func=_run_fusion)


def _run_fusion(args: argparse.Namespace) -> int:
    from gga_lab.analysis.fusion_offline import report

    report(args.model_dir, args.scores, args.json, args.subset, args.median_p, args.below)
    return 0


def _register_feature_probe(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "feature-probe",
        help="how much the ten GGA features and the whole CSM say about each kind of input",
        description="Clean test inputs against full PGD, PGD stopped at success and noise "
        "images: per kind the best single feature, a logistic regression and gradient-boosted "
        "trees on the features and on the whole CSM (cross-validated), and per-class Gaussians "
        "on the CSM, with and without the logit rescaling.",
    )
    p.add_argument("model", help="model name")
    p.add_argument("--repo", help="model repository folder (default: the shipped zoo)")
    p.add_argument("--data-dir", help="data sets folder (default: $GGA_DATA_DIR)")
    p.add_argument("--n", type=int, default=200, help="clean test inputs (default 200)")
    p.add_argument("--eps", type=float, help="l_inf budget (default 0.3 MNIST, 0.1 else)")
    p.add_argument("--steps", type=int, default=70, help="PGD steps (the paper's 70)")
    p.add_argument("--out", type=Path, help="also write the printed figures to this file")
    p.set_defaults(func=_run_feature_probe)


def _run_feature_probe(args: argparse.Namespace) -> int:
    from gga_lab.analysis.feature_probe import probe_model

    probe_model(args.model, args.data_dir, args.n, args.eps, args.steps, args.out, args.repo)
    return 0


def _register_results(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "results",
        help="regenerate docs/results.md's tables and sections from docs/results/<model>/",
        description="Rewrites the generated parts of docs/results.md (between its markers) from "
        "the reports `gga evaluate` wrote; the hand-written text is kept.",
    )
    p.add_argument("--docs", type=Path, default=Path("docs"), help="the docs folder (docs/)")
    p.set_defaults(func=_run_results)


def _run_results(args: argparse.Namespace) -> int:
    from gga_lab.analysis.collect_results import write_results

    write_results(args.docs)
    return 0


def _register_saliency_layers(group: argparse._SubParsersAction) -> None:
    p = group.add_parser(
        "saliency-layers",
        help="detection against cost with GGA's saliency taken at each block instead of the input",
        description="For the input and each block of the model (with and without the max over "
        "the activation's channels): the engine's ms per image at batch 1 and 32, and the pooled "
        "and per-kind AUROC of the gga-paper and gga-csm views (fitted on clean training images) "
        "of clean test images against FGSM, PGD, noise and OOD inputs. Prints a table; --out "
        "writes the JSON (docs/results/saliency-layers/MODEL.json).",
    )
    p.add_argument("model", help="model name")
    p.add_argument("--repo", help="model repository folder (default: the shipped zoo)")
    p.add_argument("--data-dir", help="data sets folder (default: $GGA_DATA_DIR)")
    p.add_argument("--n-fit", type=int, default=2000, help="clean training images (default 2000)")
    p.add_argument("--n-test", type=int, default=500, help="clean test images (default 500)")
    p.add_argument("--pgd-steps", type=int, default=40, help="PGD iterations (default 40)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per batch size")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a busy box)"
    )
    p.add_argument("--batch", type=int, default=128, help="inputs per engine and attack call")
    p.add_argument("--seed", type=int, default=0, help="seeds the attacks, noise and views")
    p.add_argument(
        "--strategy",
        default="auto",
        help="the engine's gradient strategy (default auto: measured per batch size)",
    )
    p.add_argument("--out", type=Path, help="write the figures here as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_saliency_layers)


def _run_saliency_layers(args: argparse.Namespace) -> int:
    from detectors.engine import EngineOptions
    from gga_cli.arguments import BenchArgumentError

    for flag in ("n_fit", "n_test", "pgd_steps", "repeats", "batch", "threads"):
        if getattr(args, flag) < 1:
            raise BenchArgumentError(f"--{flag.replace('_', '-')} must be at least 1")
    try:
        EngineOptions(strategy=args.strategy)
    except ValueError as err:
        raise BenchArgumentError(f"--strategy: {err}") from err

    from gga_lab.analysis.saliency_layers import run

    run(
        args.model,
        data_dir=args.data_dir,
        repo=args.repo,
        n_fit=args.n_fit,
        n_test=args.n_test,
        pgd_steps=args.pgd_steps,
        repeats=args.repeats,
        batch=args.batch,
        seed=args.seed,
        threads=args.threads,
        strategy=args.strategy,
        out=args.out,
        progress=not args.no_progress,
    )
    return 0
