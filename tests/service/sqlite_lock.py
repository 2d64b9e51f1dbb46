"""Another process that takes the write lock of a SQLite store and gives it back on demand.

What a SQLite store's operator meets as an outage: another program writing to the file for a
long time (``sqlite3 gga.db`` left inside ``BEGIN``, a ``VACUUM``, a bulk ``DELETE`` or a
migration run by hand). The service's writers wait SQLite's busy timeout and then fail with
"database is locked"; in WAL mode its readers go on. The lock is held by a separate process
through the same SQLite library, as such a program would hold it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
for line in sys.stdin:
    if line.strip() == "lock":
        conn.execute("BEGIN EXCLUSIVE")  # waits for the service's write in progress, if any
        print("locked", flush=True)
    elif line.strip() == "release":
        conn.execute("COMMIT")
        print("released", flush=True)
"""


class SqliteLock:
    """A process holding ``BEGIN EXCLUSIVE`` on ``path`` between :meth:`cut` and
    :meth:`restore` (the names of ``TcpProxy``'s, so an outage test drives either).

    Args:
        path: The database file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> SqliteLock:
        """Start the holder (idle, lock not taken): its start-up is not part of the outage."""
        self._process = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def _ask(self, command: str, answer: str) -> None:
        assert self._process is not None and self._process.stdin and self._process.stdout
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline().strip()
        assert line == answer, f"lock holder answered {line!r} to {command!r}"

    def cut(self) -> None:
        """Take the write lock (returns once it is held)."""
        self._ask("lock", "locked")

    def restore(self) -> None:
        """Commit, giving the lock back."""
        self._ask("release", "released")

    def close(self) -> None:
        """End the holder (its open transaction, if any, rolls back)."""
        if self._process is not None:
            self._process.stdin.close()  # type: ignore[union-attr]
            self._process.wait(10)
