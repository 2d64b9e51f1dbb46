"""``gga lab``: the analyses behind docs/results.md.

``false-alarms`` checks each trust score's flag rate on whole test sets, ``fusion`` compares fusion
rules on the scores one evaluation saved, ``feature-probe`` measures what the GGA features say
about each kind of input, ``results`` regenerates docs/results.md from the evaluation reports.
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
    _register_results(group)


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
