"""Aggregated warnings for server-side refusals: one line per kind and interval, with a count.

Under overload every refused request is a 503; one log line each (800 KB in 20 s at 512 clients)
drowns the log and costs the event loop time when it can least afford it. The first refusal of
a kind is logged at once; the rest within ``interval_s`` are counted and summed up in the next
line of that kind.
"""

from __future__ import annotations

import logging
import threading
import time


class ThrottledLog:
    """Log at most one line per ``(status, code)`` every ``interval_s`` seconds.

    Args:
        logger: Where the lines go (WARNING level).
        interval_s: Shortest time between two lines of one kind.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[tuple[int, str], float] = {}
        self._suppressed: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()

    def warning(self, status: int, code: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless a line of this kind went out within the interval."""
        kind = (status, code)
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -float("inf")) < self.interval_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (and %d more %s %s in the last %g s)"
            args = (*args, suppressed, status, code, self.interval_s)
        self.logger.warning(message, *args)
