"""How much a piece of code grows a fresh process's resident memory at its peak (Linux)."""

import subprocess
import sys

_MEASURE = """
def _peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
open("/proc/self/clear_refs", "w").write("5")  # the peak restarts from what is resident now
_before = _peak_kb()
{measured}
print((_peak_kb() - _before) // 1024)
"""


def peak_growth_mb(setup: str, measured: str, *argv: str) -> int:
    """Run ``setup`` then ``measured`` in a new Python; the MB ``measured`` added to the peak.

    ``setup`` pays the imports and first-call costs, which are not what is measured; both see
    ``sys.argv[1:] == argv``.
    """
    code = setup + _MEASURE.format(measured=measured)
    run = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True
    )
    return int(run.stdout.strip())
