"""No function of the request path or the training package grows past a screenful or two.

Issue 27's floor: no function over 100 lines in ``detectors/``, ``service/`` or ``gga_training/``.
A long function there hides steps that deserve a name; split it rather than raise the limit.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIMIT = 100
PACKAGES = ("detectors", "service", "gga_training")


def long_functions(source: str, limit: int = LIMIT) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function or method longer than ``limit`` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def test_the_measure_counts_a_planted_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    assert long_functions(f"def short():\n    pass\n\n\ndef long():\n{body}\n") == [
        ("long", 5, LIMIT + 1)
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_over_the_limit(package: str) -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line} {name} ({length} lines)"
        for path in sorted((REPO / package).rglob("*.py"))
        for name, line, length in long_functions(path.read_text())
    ]
    assert not offenders, offenders
