"""What a person sees while a search runs: one live table of the trials, and nothing else.

Trials report to Ray once per epoch; to show progress within an epoch each trial also posts
its batch count to a small Ray actor (``board.ProgressBoard``) about twenty times an epoch,
fire-and-forget (``tuning.search.trial``).
``LiveTable`` is a Ray Tune ``ProgressReporter`` that prints, when something changed (at most
every few seconds) or every half minute: the trials done, stopped, running and still to
start, an estimate of the time left, and per running trial its epoch, its progress within
the epoch, its latest metric and the parameters it samples.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from typing import Any

import ray
from ray.tune import ProgressReporter

from ..experiment import EPOCH, SILENT
from .board import BOARD_NAME

_MIN_INTERVAL_S = 5.0
_MAX_INTERVAL_S = 30.0


class LiveTable(ProgressReporter):
    """A compact live table of the search (replaces Ray's CLIReporter and its status block)."""

    def __init__(self, metric: str, total: int, max_epochs: int, concurrency: int, params: list[str]) -> None:
        self._metric, self._total = metric, total
        self._max_epochs, self._concurrency, self._params = max_epochs, concurrency, params
        self._start = time.time()
        self._last_print, self._last_state = 0.0, None

    def should_report(self, trials, done: bool = False) -> bool:
        """At once when a trial starts or ends; after a new epoch, at most every few seconds; else now and then."""
        statuses = tuple((t.trial_id, t.status) for t in trials)
        epochs = tuple((t.last_result or {}).get(EPOCH) for t in trials)
        now = time.time()
        new_epoch = (statuses, epochs) != self._last_state and now - self._last_print >= _MIN_INTERVAL_S
        if (
            done
            or statuses != (self._last_state or ((), ()))[0]
            or new_epoch
            or now - self._last_print >= _MAX_INTERVAL_S
        ):
            self._last_state, self._last_print = (statuses, epochs), now
            return True
        return False

    def report(self, trials, done: bool, *sys_info: str) -> None:
        print(self.render(trials, self._snapshot()), file=sys.stdout, flush=True)

    def render(self, trials, progress: dict[str, tuple[int, int, int]]) -> str:
        """The table as text (separate from printing, so a test can read it)."""
        finished = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        running = [t for t in trials if t.status == "RUNNING"]
        stopped = sum(1 for t in finished if _epochs(t) < self._max_epochs and not (t.last_result or {}).get(SILENT))
        silent = sum(1 for t in finished if (t.last_result or {}).get(SILENT))
        errored = sum(1 for t in finished if t.status == "ERROR")
        to_start = self._total - len(finished) - len(running)
        elapsed = time.time() - self._start
        head = (
            f"[{time.strftime('%H:%M:%S')}] {len(finished)} of {self._total} trials done ({stopped} stopped "
            f"early by ASHA, {silent} silent, {errored} errored), {len(running)} running, {max(0, to_start)} to "
            f"start; {_minutes(elapsed)} elapsed{self._time_left(trials, progress, to_start)}"
        )
        lines = [head]
        for t in running:
            epoch, batch, batches = progress.get(t.trial_id, (_epochs(t) + 1, 0, 0))
            within = f"{batch / batches:4.0%}" if batches else "   -"
            value = (t.last_result or {}).get(self._metric)
            shown = f"{value:.2%}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"
            params = " ".join(f"{k}={_short(v)}" for k, v in t.config.items() if k in self._params)
            lines.append(
                f"  {t.trial_id:<14} epoch {epoch}/{self._max_epochs} {within} of it   "
                f"{self._metric} {shown:>7}   {params}"
            )
        return "\n".join(lines)

    def _time_left(self, trials, progress, to_start: int) -> str:
        """At most this long: every unfinished trial running to its last epoch, at the measured epoch time."""
        done_epochs = sum(_epochs(t) for t in trials)
        busy = sum((t.last_result or {}).get("time_total_s", 0.0) for t in trials)
        if not done_epochs or not busy:
            return ""
        per_epoch = busy / done_epochs
        remaining = to_start * self._max_epochs + sum(
            self._max_epochs - _epochs(t) for t in trials if t.status == "RUNNING"
        )
        return f", at most ~{_minutes(remaining * per_epoch / max(1, self._concurrency))} left"

    def _snapshot(self) -> dict[str, tuple[int, int, int]]:
        try:
            return ray.get(ray.get_actor(BOARD_NAME).snapshot.remote(), timeout=2)
        except Exception:  # the table must never stop the search
            return {}


def _not_ray_restore_advice(record: logging.LogRecord) -> bool:
    return "Resume experiment with" not in record.getMessage()


def hide_ray_restore_advice() -> None:
    """On Ctrl-C Ray logs its own ``Tuner.restore(...)`` advice; the tool prints its --resume line instead.
    One filter, however many searches a process runs (``addFilter`` adds a filter once)."""
    logging.getLogger("ray.tune.tune").addFilter(_not_ray_restore_advice)


@contextlib.contextmanager
def ray_failed_restore_hidden(hidden: bool) -> Iterator[None]:
    """For a search Ray Tune saved no trial of (``hidden``): Ray's restore logs an error with a traceback, then
    starts the run afresh (what such a resume should do); the tool says so in one line instead. Only within
    this block: a later search in the same process still shows a restore that failed."""

    def keep(record: logging.LogRecord) -> bool:
        return "Failed to restore the run state" not in record.getMessage()

    logger = logging.getLogger("ray.tune.execution.tune_controller")
    if hidden:
        logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _epochs(trial) -> int:
    return int((trial.last_result or {}).get(EPOCH) or 0)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
