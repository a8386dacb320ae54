"""``python -m tuning.search`` with a test-only trial function: crashes and pauses on request.

Run as ``python -m tests.tuning.search.faulty_search MODEL [flags]`` with, in the environment:

* ``CRASH_ONCE_AT_EPOCH=E:DIR``: each trial raises once at epoch E, before reporting it (a
  marker file in DIR records that it did, so the retry from the checkpoint goes on); E may be
  ``random``: each trial its own epoch in 1..epochs per trial (seeded by its trial id);
* ``KILL_ONCE_AT_EPOCH=E:DIR``: likewise, but the trial's worker process is killed with SIGKILL
  (no Python exception: Ray sees its actor die);
* ``EPOCH_LOG=FILE``: every epoch a trial reports appends ``trial_id epoch`` to FILE (so a test
  counts epochs trained twice);
* ``PAUSE_WHILE_EXISTS=FILE``: trials wait at their start while FILE exists (so a test can
  look at a live search);
* ``SLOW_EPOCH_SECONDS=S``: every epoch takes S seconds more (slow trials for a time budget);
* ``COST_FOLLOWS_ACCURACY=1``: each reported epoch's SynOps per image are replaced by its accuracy
  times 10^6 (per split), so that no finished trial dominates another: every trial that runs all its
  epochs is on the accuracy-vs-SynOps front, whatever the data;
* ``SLOW_RETRAIN_EPOCH_SECONDS=S``: every epoch of the retrain takes S seconds more, so that a
  kill aimed at the retrain finds it running however fast this machine trains.

The wrapper is defined in ``__main__``, so Ray ships it to the trial workers by value.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from ray import tune

from tuning.search import trial
from tuning.search.cli import main

CRASH_ENV = "CRASH_ONCE_AT_EPOCH"
KILL_ENV = "KILL_ONCE_AT_EPOCH"
EPOCH_LOG_ENV = "EPOCH_LOG"
PAUSE_ENV = "PAUSE_WHILE_EXISTS"
SLOW_ENV = "SLOW_EPOCH_SECONDS"
SLOW_RETRAIN_ENV = "SLOW_RETRAIN_EPOCH_SECONDS"
TRADE_OFF_ENV = "COST_FOLLOWS_ACCURACY"


def faulty_trial(
    sampled,
    setup,
    data,
    crash: str | None = None,
    pause: str | None = None,
    slow: float = 0.0,
    kill: str | None = None,
    epoch_log: str | None = None,
    trade_off: bool = False,
) -> None:
    """``trial.run_trial`` that waits while ``pause`` exists, crashes once at ``crash``'s epoch, sleeps ``slow``,
    is SIGKILLed once at ``kill``'s epoch, logs each reported epoch to ``epoch_log`` and, with ``trade_off``, reports
    SynOps that grow with accuracy."""
    deadline = time.monotonic() + 600
    while pause and Path(pause).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not crash and not slow and not kill and not epoch_log and not trade_off:
        trial.run_trial(sampled, setup, data)
        return
    trial_id = tune.get_context().get_trial_id()
    epochs = setup.space.budget.epochs_per_trial
    crash_at, crash_marker = _fault(crash, "crashed", trial_id, epochs)
    kill_at, kill_marker = _fault(kill, "killed", trial_id, epochs)
    report = tune.report

    def report_or_crash(metrics, *args, **kwargs):
        time.sleep(slow)
        if metrics["epoch"] == crash_at and not crash_marker.exists():
            crash_marker.touch()
            raise RuntimeError(f"injected crash at epoch {crash_at} ({CRASH_ENV})")
        if metrics["epoch"] == kill_at and not kill_marker.exists():
            kill_marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if epoch_log:  # before reporting: a trial ASHA stops never returns from its last report
            with open(epoch_log, "a") as log:
                log.write(f"{trial_id} {metrics['epoch']}\n")
        if trade_off:
            metrics = {
                **metrics,
                **{
                    f"{split}_synops_per_image": metrics[f"{split}_acc"] * 1e6
                    for split in ("test", "val")
                    if f"{split}_synops_per_image" in metrics
                },
            }
        report(metrics, *args, **kwargs)

    trial.tune.report = report_or_crash
    try:
        trial.run_trial(sampled, setup, data)
    finally:
        trial.tune.report = report


def _fault(spec: str | None, what: str, trial_id: str, epochs: int) -> tuple[int | None, Path]:
    """(epoch, marker file) of a fault spec ``E:DIR`` (E a number or ``random``); (None, .) without one."""
    if not spec:
        return None, Path(".")
    at_epoch, marker_dir = spec.split(":", 1)
    epoch = random.Random(f"{what}-{trial_id}").randint(1, epochs) if at_epoch == "random" else int(at_epoch)
    return epoch, Path(marker_dir) / f"{what}-{trial_id}"


if __name__ == "__main__":
    crash, pause, slow = os.environ.get(CRASH_ENV), os.environ.get(PAUSE_ENV), float(os.environ.get(SLOW_ENV, 0))
    kill, epoch_log = os.environ.get(KILL_ENV), os.environ.get(EPOCH_LOG_ENV)
    trade_off = os.environ.get(TRADE_OFF_ENV) == "1"

    def trainable(sampled, setup, data):
        faulty_trial(
            sampled,
            setup,
            data,
            crash=crash,
            pause=pause,
            slow=slow,
            kill=kill,
            epoch_log=epoch_log,
            trade_off=trade_off,
        )

    if slow_retrain := float(os.environ.get(SLOW_RETRAIN_ENV, 0)):
        from tuning.search import retrain

        def slow_train(*args, on_epoch=None, train=retrain.train, **kwargs):
            def slowly(record, state):
                time.sleep(slow_retrain)  # before the epoch is saved
                on_epoch(record, state)

            return train(*args, on_epoch=slowly if on_epoch else None, **kwargs)

        retrain.train = slow_train  # the retrain runs in this process

    raise SystemExit(main(trainable=trainable))
