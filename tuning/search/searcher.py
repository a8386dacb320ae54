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

import contextlib
import contextvars
import math
import pickle
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search import SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from ..experiment import DIVERGED, EPOCH, RAY_TRIAL_ID, SILENT, STUDY, TUNE


# The experiment folder that searchers and search generators restored within ``resuming_into`` belong to.
_RESUMED_EXPERIMENT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("resumed_experiment", default=None)


@contextlib.contextmanager
def resuming_into(experiment: Path) -> Iterator[None]:
    """What is restored inside this block (``Tuner.restore`` and ``fit``) writes into ``experiment`` only.

    Ray pickles two absolute paths of the experiment it started in: OptunaSearch's whole state,
    the Optuna storage (the journal's path) included, and the search generator's Experiment
    (where new trials are created). Restored from a copy (or a moved folder) both still point
    at the original, and the copy would write into it. So PruneAwareOptunaSearch pickles no
    storage and reopens the study in ``experiment``'s journal, and RelocatingSearchGenerator
    creates new trials in ``experiment``'s tune/ (as Ray re-points the trials it restores).
    """
    token = _RESUMED_EXPERIMENT.set(Path(experiment))
    try:
        yield
    finally:
        _RESUMED_EXPERIMENT.reset(token)


def experiment_being_run() -> Path | None:
    """The experiment folder of the ``resuming_into`` block this runs in, or None outside one."""
    return _RESUMED_EXPERIMENT.get()


class RelocatingSearchGenerator(SearchGenerator):
    """Ray's SearchGenerator whose restored Experiment creates new trials where the experiment is now."""

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        experiment = _RESUMED_EXPERIMENT.get()
        if experiment is not None and self._experiment is not None:
            storage = self._experiment.storage  # also the spec's "storage", from which each new trial copies
            storage.storage_fs_path = str(experiment)
            storage.experiment_dir_name = TUNE


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

    def outcome(self, result: dict | None, error: bool) -> tuple[TrialState, float | list[float] | None]:
        """How a finished Ray trial is told to Optuna: (state, value)."""
        if error or not result:
            return TrialState.FAIL, None
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics]
        if result.get(DIVERGED) or result.get(SILENT) or not all(_is_finite(v) for v in values):
            return TrialState.PRUNED, None
        if int(result.get(EPOCH, 0)) < self._max_epochs:
            return TrialState.PRUNED, None  # a trial ASHA stopped is not put on a Pareto front either
        return TrialState.COMPLETE, ([float(v) for v in values] if isinstance(self.metric, list) else float(values[0]))

    def _report(self, trial_id: str, result: dict) -> None:
        """Report the epoch's metric at its step, unless this step was reported already.

        A multi-objective study takes no intermediate values (Optuna's ``Trial.report`` is
        single-objective): its trials are told only how they ended.
        """
        if isinstance(self.metric, list):
            return
        value = result.get(self.metric)
        if trial_id in self._completed_trials or trial_id not in self._ot_trials or not _is_finite(value):
            return  # a diverged epoch has no accuracy to report
        step = int(result.get(EPOCH, result.get("training_iteration")))
        reported = self._reported_steps.setdefault(trial_id, set())
        if step not in reported:
            self._ot_trials[trial_id].report(float(value), step)
            reported.add(step)


    # Pickled state: no Optuna storage (see study_storage_for_restore). The study and each Ray
    # trial's Optuna trial are saved by name and number, and reopened on restore.

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_storage"] = state["_ot_study"] = None
        state["_ot_trials"] = {rid: t if isinstance(t, int) else t.number for rid, t in self._ot_trials.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reopen_study()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        self._reopen_study()

    def _reopen_study(self) -> None:
        """Open the study in the storage of the experiment being restored; without one, stay closed."""
        experiment = _RESUMED_EXPERIMENT.get()
        if experiment is None:
            return  # e.g. tuner.pkl read by a tool: the study stays closed rather than open someone else's journal
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(experiment / STUDY)))
        self._storage = storage
        self._ot_study = optuna.load_study(study_name=self._study_name, storage=storage, sampler=self._sampler,
                                           pruner=optuna.pruners.NopPruner())
        study_id = storage.get_study_id_from_name(self._study_name)
        self._ot_trials = {
            rid: t if not isinstance(t, int) else optuna.trial.Trial(
                self._ot_study, storage.get_trial_id_from_study_id_trial_number(study_id, t))
            for rid, t in self._ot_trials.items()}


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
