"""``python -m tuning.search`` with a test-only trial function: crashes and pauses on request.

Run as ``python -m tests.tuning.search.faulty_search MODEL [flags]`` with, in the environment:

* ``CRASH_ONCE_AT_EPOCH=E:DIR``: each trial raises once at epoch E, before reporting it (a
  marker file in DIR records that it did, so the retry from the checkpoint goes on);
* ``PAUSE_WHILE_EXISTS=FILE``: trials wait at their start while FILE exists (so a test can
  look at a live search);
* ``SLOW_EPOCH_SECONDS=S``: every epoch takes S seconds more (slow trials for a time budget).

The wrapper is defined in ``__main__``, so Ray ships it to the trial workers by value.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ray import tune

from tuning.search import trial
from tuning.search.cli import main

CRASH_ENV = "CRASH_ONCE_AT_EPOCH"
PAUSE_ENV = "PAUSE_WHILE_EXISTS"
SLOW_ENV = "SLOW_EPOCH_SECONDS"


def faulty_trial(sampled, setup, data, crash: str | None = None, pause: str | None = None,
                 slow: float = 0.0) -> None:
    """``trial.run_trial`` that waits while ``pause`` exists, crashes once at ``crash``'s epoch, sleeps ``slow``."""
    deadline = time.monotonic() + 600
    while pause and Path(pause).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not crash and not slow:
        trial.run_trial(sampled, setup, data)
        return
    at_epoch, marker_dir = crash.split(":", 1) if crash else ("0", ".")
    marker = Path(marker_dir) / f"crashed-{tune.get_context().get_trial_id()}"
    report = tune.report

    def report_or_crash(metrics, *args, **kwargs):
        time.sleep(slow)
        if crash and metrics["epoch"] == int(at_epoch) and not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected crash at epoch {at_epoch} ({CRASH_ENV})")
        report(metrics, *args, **kwargs)

    trial.tune.report = report_or_crash
    try:
        trial.run_trial(sampled, setup, data)
    finally:
        trial.tune.report = report


if __name__ == "__main__":
    crash, pause, slow = os.environ.get(CRASH_ENV), os.environ.get(PAUSE_ENV), float(os.environ.get(SLOW_ENV, 0))

    def trainable(sampled, setup, data):
        faulty_trial(sampled, setup, data, crash=crash, pause=pause, slow=slow)

    raise SystemExit(main(trainable=trainable))
