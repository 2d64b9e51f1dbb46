"""``gga evaluate MODEL``: the paper's protocol: the trust score, its views and the baselines."""

import argparse
import json
import shlex
import sys
from pathlib import Path

from gga_cli.arguments import batch_size_for
from gga_lab.evaluate import ALL_KINDS, SPLITS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate the trust score, each view and the baselines on attacks and OOD inputs",
        description="Clean test inputs as positives; uniform noise, PGD (l_inf, l_2), rotations, "
        "L-BFGS, out-of-distribution sets and adaptive attacks (targeted PGD CE/MSE, CSA) as "
        "untrusted inputs (successful attacks only). Writes results.json, results.md, roc.png "
        "and examples_<kind>.png into --out-dir. Needs the model's detector.json (gga fit).",
    )
    p.add_argument("model", help="model name in the repository")
    p.add_argument("--n", type=int, default=1000, help="clean test inputs (bounds every kind)")
    p.add_argument(
        "--n-slow",
        type=int,
        default=100,
        help="inputs for L-BFGS, CSA and the adaptive attack on the trust score",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of attacks and noise")
    p.add_argument("--eps", type=float, help="l_inf budget (default: the data set's)")
    p.add_argument("--pgd-steps", type=int, default=70, help="PGD iterations (paper: 70)")
    p.add_argument("--csa-steps", type=int, default=100, help="CSA iterations (paper: 100)")
    p.add_argument(
        "--n-baseline-fit",
        type=int,
        default=5000,
        help="clean training inputs the baselines are fitted on",
    )
    p.add_argument(
        "--split",
        choices=tuple(SPLITS),
        default="test",
        help="clean inputs from the test set (default; for reporting) or from the training "
        "images the model never trained on (its recipe's validation part and what train_limit "
        "left out: for choosing detector settings without touching the test set)",
    )
    p.add_argument("--kinds", help=f"comma-separated subset of: {', '.join(ALL_KINDS)}")
    p.add_argument("--out-dir", type=Path, help="output folder (default eval/MODEL)")
    p.add_argument(
        "--save-scores",
        action="store_true",
        help="also write scores.npz: every detector's score of every input (for offline analysis)",
    )
    p.add_argument(
        "--compare-with",
        type=Path,
        help="committed results to compare each kind's TNR with (default docs/results/MODEL, "
        "read before anything is written); kinds worse by more than 5 points are printed and "
        "recorded in comparison.json",
    )
    p.add_argument("--no-compare", action="store_true", help="skip that comparison")
    p.add_argument(
        "--batch-size",
        type=int,
        help="inputs per attack batch and engine call (default: as many as "
        "GGA_ENGINE_MEMORY_GB holds for this model, at most 128)",
    )
    p.add_argument("--data-dir", help="data set folder (default $GGA_DATA_DIR)")
    p.add_argument("--repo", help="model repository folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detectors.trust import TrustScorer
    from gga_lab.evaluate import TRUST, EvalConfig, evaluate_model
    from gga_lab.regression import compare, read_committed
    from gga_lab.report import write_report
    from gga_training.splits import evaluation_split
    from models.data import load_dataset
    from models.errors import DataError
    from models.repository import ModelRepository

    kinds = tuple(k.strip() for k in args.kinds.split(",")) if args.kinds else ALL_KINDS
    loaded = ModelRepository(args.repo).load(args.model)
    card = loaded.card
    # Read before the report is written: --out-dir may be the committed folder itself.
    committed_at = args.compare_with or Path("docs") / "results" / card.name
    committed = None if args.no_compare else read_committed(committed_at)
    scorer = TrustScorer.load(loaded.path, card.weights_sha256, card.name)
    train = load_dataset(card.dataset, "train", data_dir=args.data_dir)
    x_train, y_train = train.float(), train.y
    if args.split == "test":
        # limit: the first n of MNIST's shuffled files, but a seeded class-balanced subset of
        # CIFAR-10's image folder, which is stored class by class (its first 1,000 test images
        # are all airplanes); test.drawn says which.
        test = load_dataset(
            card.dataset, "test", data_dir=args.data_dir, limit=args.n, seed=args.seed
        )
        x_eval, y_eval, drawn = test.float(), test.y, test.drawn
    else:
        split = evaluation_split(card.recipe, y_train, args.seed)
        if split is None:
            raise DataError(
                f"model {card.name!r} has no held-out training images (its card has no recipe, "
                "or the recipe trains on every image); use --split test"
            )
        held_out, trained_on = split  # the baselines are fitted on trained-on images only
        x_eval, y_eval = x_train[held_out], y_train[held_out]
        x_train, y_train = x_train[trained_on], y_train[trained_on]
        drawn = f"shuffled with seed {args.seed}, the first {min(args.n, len(held_out))}"
    cfg = EvalConfig(
        n=args.n,
        n_slow=args.n_slow,
        seed=args.seed,
        eps_linf=args.eps,
        pgd_steps=args.pgd_steps,
        csa_steps=args.csa_steps,
        kinds=kinds,
        n_baseline_fit=args.n_baseline_fit,
        split=args.split,
        drawn=drawn,
        batch_size=batch_size_for(args.batch_size, loaded.module, card.input_shape),
    )
    result = evaluate_model(
        loaded.module,
        scorer,
        model_name=card.name,
        dataset=card.dataset,
        train=(x_train, y_train),
        test=(x_eval, y_eval),
        cfg=cfg,
        data_dir=args.data_dir,
    )
    out_dir = args.out_dir or Path("eval") / card.name
    command = (
        "gga evaluate " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 2
        else f"gga evaluate {card.name}"
    )
    paths = write_report(result, out_dir, command=command, save_scores=args.save_scores)
    ours = result.pooled.get(TRUST, {})
    best = max(result.pooled, key=lambda n: result.pooled[n]["AUROC"], default=TRUST)
    sys.stdout.write(
        f"{card.name}: trust score pooled AUROC {100 * ours.get('AUROC', float('nan')):.1f} "
        f"(best: {best} {100 * result.pooled.get(best, {}).get('AUROC', float('nan')):.1f}), "
        f"TNR@95TPR on PGD l_inf {100 * result.tnr[TRUST].get('pgd_linf', float('nan')):.1f}, "
        f"false alarms {100 * result.false_alarm['rate']:.1f}% (alpha "
        f"{100 * result.false_alarm['alpha']:.0f}%); wrote {paths['markdown']}\n"
    )
    if committed is not None:
        new = json.loads(paths["json"].read_text())
        comparison = compare(committed, new, str(committed_at))
        sys.stdout.write("\n".join(comparison.lines()) + "\n")
        (out_dir / "comparison.json").write_text(json.dumps(comparison.to_dict(), indent=1) + "\n")
    return 0
