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
    "recalibrate",
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


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The ``gga`` parser with the subcommands of ``commands`` (modules of this package)."""
    parser = argparse.ArgumentParser(
        prog="gga",
        description="Image classifiers served with a Geometric Gradient Analysis trust score.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        importlib.import_module(f"gga_cli.{name}").register(subparsers)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The module of the command ``argv`` names (its first word that is not an option), if any.

    ``main`` then registers that command alone: a command module may import the lab for its
    choices, and ``gga serve`` should load the service and nothing of the lab.
    """
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return None
    by_word = {name.removesuffix("_cmd"): name for name in COMMANDS}
    return by_word.get(words[0])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = chosen_command(argv)
    parser = build_parser((chosen,) if chosen else COMMANDS)
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
