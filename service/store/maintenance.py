"""Background upkeep of the result store: a health probe and the retention prune.

One daemon thread per process. Every ``health_interval_s`` it makes one round trip to the store
and publishes the outcome as ``gga_store_up`` (the ``GGAStoreUnreachable`` alert watches it);
every ``prune_interval_s``, when a retention is set, it deletes the predictions older than it.
Replicas prune independently; the deletes are idempotent, so overlapping prunes only repeat work.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from service.metrics import ServiceMetrics
from service.store import repository as store
from service.store.database import Database

logger = logging.getLogger(__name__)


class StoreMaintenance:
    """Probe the store's health and prune old predictions on a daemon thread.

    Args:
        db: The store.
        metrics: Where ``gga_store_up`` is published.
        retention_days: Keep predictions this many days; 0 keeps them forever.
        prune_interval_s: Seconds between prunes.
        health_interval_s: Seconds between health probes.
    """

    def __init__(
        self,
        db: Database,
        metrics: ServiceMetrics,
        *,
        retention_days: float = 0.0,
        prune_interval_s: float = 3600.0,
        health_interval_s: float = 10.0,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.retention_days = retention_days
        self.prune_interval_s = prune_interval_s
        self.health_interval_s = health_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (the first probe and prune happen at once)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="store-maintenance", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def prune_now(self) -> int:
        """Delete the predictions older than the retention; returns how many (0 without one)."""
        if self.retention_days <= 0:
            return 0
        before = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.retention_days)
        deleted = store.prune_predictions(self.db, before)
        if deleted:
            logger.info("pruned %d predictions older than %s", deleted, before.isoformat())
        return deleted

    def check_health(self) -> bool:
        """One round trip to the store; publishes and returns whether it answered."""
        try:
            store.ping(self.db)
        except Exception as err:  # any failure to answer means "unreachable" to an operator
            logger.warning("result store unreachable: %s", type(err).__name__)
            self.metrics.set_store_up(False)
            return False
        self.metrics.set_store_up(True)
        return True

    def _run(self) -> None:
        next_prune = time.monotonic()
        while not self._stop.is_set():
            healthy = self.check_health()
            if healthy and self.retention_days > 0 and time.monotonic() >= next_prune:
                try:
                    self.prune_now()
                except Exception:
                    logger.exception("pruning old predictions failed; retrying next interval")
                next_prune = time.monotonic() + self.prune_interval_s
            self._stop.wait(self.health_interval_s)
