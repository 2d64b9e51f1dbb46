"""The ``gga`` command line: one entry point, a thin subcommand module per job.

Each module in ``COMMANDS`` exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from models.errors import GGAUserError

# Subcommand modules under gga_cli, in the order `gga --help` lists them.
COMMANDS: tuple[str, ...] = (
    "models_cmd",
    "predict",
    "train",
    "export",
    "import_cmd",
    "attack",
    "robustness",
    "serve",
    "keys",
    "db",
    "bench",
    "fit",
    "evaluate",
    "lab",
    "experiment",
)

USER_ERROR_EXIT = 2
# Top-level modules of the optional extras, and the extra that installs each: the serving
# install lacks them, and a command that needs one says how to get it.
EXTRA_OF_MODULE: dict[str, str] = {
    "onnx": "train",
    "onnxscript": "train",
    "scipy": "train",
    "matplotlib": "eval",
    "ray": "ray",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gga",
        description="Image classifiers served with a Geometric Gradient Analysis trust score.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"gga_cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except GGAUserError as err:
        # User errors are one line and exit code 2; anything else keeps its traceback.
        sys.stderr.write(f"gga {args.command}: error: {err}\n")
        return USER_ERROR_EXIT
    except ModuleNotFoundError as err:
        extra = EXTRA_OF_MODULE.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        sys.stderr.write(
            f"gga {args.command}: error: this command needs {err.name!r}, which the serving "
            f"install leaves out: pip install 'gga-serve[{extra}]' (or -e '.[{extra}]')\n"
        )
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
