"""Ray's OptunaSearch, telling Optuna exactly what each trial did.

Two things in Ray's ``OptunaSearch`` (ray 2.4x-2.60) would mislead TPE here:

* ``on_trial_complete`` marks every trial that returned a result as COMPLETE with its last
  value, so a trial ASHA stopped after one epoch looks like a finished trial with a poor
  final accuracy. Here such a trial (and a diverged or silent one) is told as PRUNED: Optuna
  then ranks it by the step it reached and its intermediate values, as it does for trials its
  own pruners stop.
* Ray hands a trial's last result to ``on_trial_complete`` only, never to ``on_trial_result``,
  so the last epoch of every trial would be missing from its intermediate values. Here each
  epoch reaches the study exactly once, with its epoch as the step.

Ray offers no public hook for how a trial is told, so this subclass uses three of
``OptunaSearch``'s attributes: ``_ot_trials`` (Ray trial id -> Optuna trial), ``_ot_study``
and ``_completed_trials``. ``tests/tuning/test_searcher.py`` pins that they exist and mean
that.
"""

from __future__ import annotations

import math

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from ..experiment import DIVERGED, EPOCH, RAY_TRIAL_ID, SILENT


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that reports every epoch once and early-stopped or failed trials as PRUNED."""

    def __init__(self, *args, max_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._reported_steps: dict[str, set[int]] = {}  # saved with the searcher, so resume keeps it

    def suggest(self, trial_id: str) -> dict | None:
        """Ray's suggestion, with the Ray trial id recorded on the Optuna trial (links the study to trials.csv)."""
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ID, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result:
            self._report(trial_id, result)
        state, value = self.outcome(result, error)
        self._ot_study.tell(self._ot_trials[trial_id], value, state=state)
        self._completed_trials.add(trial_id)
        self._reported_steps.pop(trial_id, None)

    def outcome(self, result: dict | None, error: bool) -> tuple[TrialState, float | None]:
        """How a finished Ray trial is told to Optuna: (state, value)."""
        if error or not result:
            return TrialState.FAIL, None
        value = result.get(self.metric)
        if result.get(DIVERGED) or result.get(SILENT) or not _is_finite(value):
            return TrialState.PRUNED, None
        if int(result.get(EPOCH, 0)) < self._max_epochs:
            return TrialState.PRUNED, None
        return TrialState.COMPLETE, float(value)

    def _report(self, trial_id: str, result: dict) -> None:
        """Report the epoch's metric at its step, unless this step was reported already."""
        value = result.get(self.metric)
        if trial_id in self._completed_trials or trial_id not in self._ot_trials or not _is_finite(value):
            return  # a diverged epoch has no accuracy to report
        step = int(result.get(EPOCH, result.get("training_iteration")))
        reported = self._reported_steps.setdefault(trial_id, set())
        if step not in reported:
            self._ot_trials[trial_id].report(float(value), step)
            reported.add(step)


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
