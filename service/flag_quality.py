"""How well the flag works on live traffic, measured on the predictions that got feedback.

For a model and a time window, over its labelled predictions:

- precision: of the flagged ones, the share that were wrong;
- recall: of the wrong ones, the share that were flagged;
- false alarms: of the correct ones, the share that were flagged. The calibration promises
  about ``alpha`` on clean traffic like its calibration set; a Wilson interval around the rate
  says whether the labelled traffic shows more than that beyond chance.

Labelled predictions are the ones users chose to label, not a random sample: the numbers
describe that set, which is what an operator can check. Served in ``/v1/stats`` and, refreshed
in the background, as ``gga_flag_quality_*`` gauges (docs/operations.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from service.metrics import ServiceMetrics
from service.registry import ModelRegistry
from service.store import Database
from service.store.feedback import flag_outcomes

logger = logging.getLogger(__name__)

CONFIDENCE = 0.95
# The windows the gauges cover; /v1/stats takes any window.
GAUGE_WINDOWS: dict[str, dt.timedelta] = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}
# Seconds between two refreshes of the gauges: each refresh is one aggregate query per window.
REFRESH_S = 60.0


def wilson_interval(
    successes: int, trials: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion.

    Chosen over the normal approximation because it stays inside [0, 1] and keeps its coverage
    for rates near 0, where false alarms live (alpha is typically 5%).

    Args:
        successes: Events counted (e.g. flagged correct predictions).
        trials: Trials (e.g. correct predictions); 0 gives the uninformative (0, 1).
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)``.
    """
    if trials == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * ((p * (1 - p) / trials + z * z / (4 * trials * trials)) ** 0.5) / denominator
    # Exact ends: rounding must not put 0 or 1 outside an interval that contains it.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class FlagQuality:
    """The flag's outcomes on one model's labelled predictions.

    Attributes:
        labelled: Predictions with feedback.
        wrong: Of those, the ones whose class was wrong.
        flagged: Of those, the flagged ones.
        flagged_wrong: Flagged and wrong.
        alpha: The model's calibrated false-alarm rate (None: not served, or no detector).
    """

    labelled: int
    wrong: int
    flagged: int
    flagged_wrong: int
    alpha: float | None

    @property
    def correct(self) -> int:
        return self.labelled - self.wrong

    @property
    def false_alarms(self) -> int:
        """Flagged although the class was right."""
        return self.flagged - self.flagged_wrong

    @property
    def precision(self) -> float | None:
        return self.flagged_wrong / self.flagged if self.flagged else None

    @property
    def recall(self) -> float | None:
        return self.flagged_wrong / self.wrong if self.wrong else None

    @property
    def false_alarm_rate(self) -> float | None:
        return self.false_alarms / self.correct if self.correct else None

    @property
    def false_alarm_interval(self) -> tuple[float, float]:
        return wilson_interval(self.false_alarms, self.correct)

    @property
    def false_alarms_above_alpha(self) -> bool | None:
        """Whether even the interval's low end exceeds alpha (None without an alpha)."""
        if self.alpha is None or not self.correct:
            return None
        return self.false_alarm_interval[0] > self.alpha

    def to_dict(self) -> dict[str, Any]:
        low, high = self.false_alarm_interval
        return {
            "labelled": self.labelled,
            "correct": self.correct,
            "wrong": self.wrong,
            "flagged": self.flagged,
            "flagged_wrong": self.flagged_wrong,
            "false_alarms": self.false_alarms,
            "precision": self.precision,
            "recall": self.recall,
            "false_alarm_rate": self.false_alarm_rate,
            "false_alarm_interval": [low, high],
            "confidence": CONFIDENCE,
            "alpha": self.alpha,
            "false_alarms_above_alpha": self.false_alarms_above_alpha,
        }


def flag_quality(
    db: Database,
    owner: str | None,
    alphas: Mapping[str, float | None],
    *,
    model: str | None = None,
    since: dt.datetime | None = None,
) -> dict[str, FlagQuality]:
    """The flag's quality per model over the labelled predictions the caller may read.

    Args:
        db: The store.
        owner: Caller's key id, or None for every key's predictions.
        alphas: Each served model's alpha (a model missing here gets None).
        model: Only this model.
        since: Only predictions made at or after this time (None: all time).

    Returns:
        Per model with at least one labelled prediction.
    """
    counts = flag_outcomes(db, owner, model=model, since=since)
    return {name: FlagQuality(**c, alpha=alphas.get(name)) for name, c in counts.items()}


class FlagQualityRefresher(Collector):
    """Keeps the ``gga_flag_quality_*`` gauges current, over every key's labelled predictions.

    Registered beside the gauges, it is asked for its (empty) samples at every scrape. A scrape
    never waits on the store: when the gauges are older than ``refresh_s`` it starts one
    refresh on a background thread, whose values the next scrape reads. No request path ever
    queries for them.

    Args:
        db: The store.
        metrics: Holds the gauges.
        alphas: Returns each served model's alpha.
        refresh_s: Seconds a refresh stays fresh.
    """

    def __init__(
        self,
        db: Database,
        metrics: ServiceMetrics,
        alphas: Callable[[], Mapping[str, float | None]],
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.alphas = alphas
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._refreshed = -float("inf")
        self._refreshing = False

    def refresh(self) -> None:
        """Recount every window now (one query each); keeps the old values on failure."""
        try:
            now = dt.datetime.now(dt.UTC)
            alphas = self.alphas()
            values = {
                (model, window): gauge_values(quality)
                for window, span in GAUGE_WINDOWS.items()
                for model, quality in flag_quality(self.db, None, alphas, since=now - span).items()
            }
            self.metrics.set_flag_quality(values)
        except Exception as err:  # the store may be down: gga_store_up reports that
            logger.warning("flag quality not refreshed: %s", type(err).__name__)
        finally:
            with self._lock:
                self._refreshed = time.monotonic()
                self._refreshing = False

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            stale = time.monotonic() - self._refreshed >= self.refresh_s
            start = stale and not self._refreshing
            self._refreshing = self._refreshing or start
        if start:
            threading.Thread(target=self.refresh, name="flag-quality", daemon=True).start()
        return iter(())

    def describe(self) -> Iterator[Metric]:
        return iter(())


def gauge_values(quality: FlagQuality) -> dict[str, float | None]:
    """One model's gauge values, by ``FLAG_QUALITY_GAUGES`` field.

    A ratio without a denominator (nothing flagged, wrong or correct yet) is NaN, as PromQL's
    own 0/0: the series exists, comparisons with it are false, and panels show a gap. The
    interval of no trials is the uninformative [0, 1]. Only a missing alpha (no detector)
    leaves its series out.
    """
    low, high = quality.false_alarm_interval

    def ratio(value: float | None) -> float:
        return math.nan if value is None else value

    return {
        "labelled": quality.labelled,
        "precision": ratio(quality.precision),
        "recall": ratio(quality.recall),
        "false_alarm_rate": ratio(quality.false_alarm_rate),
        "false_alarm_low": low,
        "false_alarm_high": high,
        "alpha": quality.alpha,
    }


def watch_flag_quality(
    metrics: ServiceMetrics, db: Database, models: ModelRegistry
) -> FlagQualityRefresher:
    """Keep ``metrics``' flag-quality gauges current for the served ``models``."""
    refresher = FlagQualityRefresher(db, metrics, lambda: served_alphas(models))
    metrics.registry.register(refresher)
    return refresher


def served_alphas(models: ModelRegistry) -> dict[str, float | None]:
    """Each served model's alpha (None while loading, or without a detector)."""
    served = {}
    for name in models.names():
        try:
            served[name] = models.get(name).alpha
        except LookupError:  # unloaded meanwhile
            continue
    return served
