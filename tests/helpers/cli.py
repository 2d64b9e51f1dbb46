"""The ``gga`` command line run as a user runs it: a real subprocess of this interpreter."""

import subprocess
import sys
from pathlib import Path


def gga(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m gga_cli ARGS`` with text output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gga_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
