"""The command table: each command's module registers the word that selects it, and serving
loads nothing of the lab."""

import subprocess
import sys
import textwrap

import pytest

from gga_cli import COMMANDS, build_parser, chosen_command


@pytest.mark.parametrize("module", COMMANDS)
def test_each_command_registers_the_word_that_selects_it(module: str) -> None:
    subparsers = build_parser((module,))._subparsers._group_actions[0]
    (word,) = subparsers.choices
    assert chosen_command(["-v", word, "--help"]) == module


def test_no_command_word_builds_every_command() -> None:
    assert chosen_command(["--verbose"]) is None
    assert chosen_command(["no-such-command"]) is None
    assert len(build_parser()._subparsers._group_actions[0].choices) == len(COMMANDS)


def test_gga_serve_loads_no_lab_training_or_attack_code() -> None:
    script = textwrap.dedent(
        """
        import sys
        from gga_cli import main
        try:
            main(["serve", "--help"])
        except SystemExit:
            pass
        offline = ("gga_lab", "gga_training", "attacks")
        print(sorted(m for m in sys.modules if m.split(".")[0] in offline))
        print("service.settings" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-2:] == ["[]", "True"], out.stdout[-2000:]
