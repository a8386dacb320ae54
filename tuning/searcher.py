"""Ray's OptunaSearch, telling Optuna the truth about trials that ASHA stopped early.

Ray's ``OptunaSearch.on_trial_complete`` marks every trial that returned a result as
COMPLETE with its last value, so a trial ASHA stopped after one epoch looks to TPE like a
finished trial with a poor final accuracy. Here such a trial is told as PRUNED: Optuna then
ranks it by the step it reached and its intermediate values (which ``on_trial_result``
reported every epoch), as it does for trials its own pruners stop.
"""

from __future__ import annotations

import logging
import math

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

EPOCH = "epoch"  # the time attribute every trial reports and ASHA counts in
DIVERGED = "diverged"  # set in a trial's last result when its loss turned NaN


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that reports early-stopped and diverged trials to Optuna as PRUNED."""

    def __init__(self, *args, max_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return  # a diverged epoch has no accuracy to report
        step = int(result.get(EPOCH, result.get("training_iteration")))
        self._ot_trials[trial_id].report(value, step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        state, value = self.outcome(result, error)
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)

    def outcome(self, result: dict | None, error: bool) -> tuple[TrialState, float | None]:
        """How a finished Ray trial is told to Optuna: (state, value)."""
        if error or not result:
            return TrialState.FAIL, None
        value = result.get(self.metric)
        epochs = int(result.get(EPOCH, 0))
        if result.get(DIVERGED) or value is None or not math.isfinite(value):
            return TrialState.PRUNED, None
        if epochs < self._max_epochs:
            return TrialState.PRUNED, None
        return TrialState.COMPLETE, float(value)
