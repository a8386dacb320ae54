"""Optuna's sampler behind Ray Tune, telling Optuna exactly what each trial did.

Two things in Ray's ``OptunaSearch`` (ray 2.4x-2.60) would mislead TPE here:

* ``on_trial_complete`` marks every trial that returned a result as COMPLETE with its last
  value, so a trial ASHA stopped after one epoch looks like a finished trial with a poor
  final accuracy. Here such a trial (and a diverged or silent one) is told as PRUNED: Optuna
  then ranks it by the step it reached and its intermediate values, as it does for trials its
  own pruners stop.
* Ray hands a trial's last result to ``on_trial_complete`` only, never to ``on_trial_result``,
  so the last epoch of every trial would be missing from its intermediate values. Here each
  epoch reaches the study exactly once, with its epoch as the step.

Ray offers no public hook for how ``OptunaSearch`` tells a trial, so ``PruneAwareOptunaSearch``
is not a subclass of it: it is Ray Tune's public ``Searcher`` over Optuna's public ask-and-tell
interface (``Study.ask``, ``Trial.report``, ``Study.tell``), and reads no private attribute of
either library. ``RelocatingSearchGenerator`` and ``MatchingASHAScheduler`` alone reach into Ray Tune
(see there).

A search killed at any moment resumes with every trial it asked for. Ray Tune saves its trials
(``experiment_state-*.json``) and its search generator's state (``search_gen_state-*.json``,
``searcher-state-*.pkl``) as separate files, uploaded together but not atomically, so a kill can
leave a generator that counts a trial the restored trials lack (that trial would never run and
the search could never complete) or the other way round. On its first use after a resume the
generator takes Ray's trials as the truth (``MatchingASHAScheduler`` tells it each one), and the
searcher agrees with them: an Optuna trial asked for a trial Ray lost is handed to the next new
trial, with the same configuration (the seed's, if it was that one).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import pickle
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path

import optuna
import ray
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

from ..experiment import DIVERGED, EPOCH, RAY_TRIAL_ID, SILENT, STUDY, TUNE
from .settings import InputError

# Ray Tune's StorageContext attributes that name where a search's trials are written
STORAGE_ATTRIBUTES = ("storage_fs_path", "experiment_dir_name")
_FINISHED = tuple(s for s in TrialState if s.is_finished())


# The experiment folder that searchers and search generators restored within ``resuming_into`` belong to.
_RESUMED_EXPERIMENT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("resumed_experiment", default=None)


@contextlib.contextmanager
def resuming_into(experiment: Path) -> Iterator[None]:
    """What is restored inside this block (``Tuner.restore`` and ``fit``) writes into ``experiment`` only.

    Ray pickles two absolute paths of the experiment it started in: the searcher's whole state,
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
    """Ray's SearchGenerator whose restored Experiment creates new trials where the experiment is now.

    Ray Tune has no public way to say where a restored search creates new trials: the restored
    Experiment (``SearchGenerator._experiment``) keeps the StorageContext of the folder the search
    started in (``storage_fs_path``, ``experiment_dir_name``). Both are re-pointed here (checked
    against Ray 2.41-2.60; tests/tuning/search/test_searcher.py pins each private attribute this
    class uses). Where a later Ray has moved them, a resume is refused (ResumeUnsupported, one line)
    rather than let new trials write into another folder.

    Its count of the trials it created (``SearchGenerator._counter``, which decides when the search
    has asked for all its trials) is set, on first use, to the trials Ray holds (see the module's
    docstring), and its searcher is told which those are (``PruneAwareOptunaSearch.match_trials``).
    The number of trials to create is the search's own (``_total_samples``, see ``add_configurations``).
    """

    def __init__(self, searcher: Searcher, num_samples: int | None = None) -> None:
        super().__init__(searcher)
        self._num_samples = num_samples
        self._ray_trials: set[str] = set()  # the trials Ray's controller holds (MatchingASHAScheduler)
        self._matched = False

    def add_configurations(self, experiments) -> None:
        """Ray's, but the search's number of trials stays ``num_samples``: a ``Tuner.restore`` that finds no
        saved trials (a search killed before Ray's first save) starts the run afresh, and Ray 2.60 then
        passes no ``num_samples`` (``TunerInternal._fit_resume``), so the run would end after one trial."""
        super().add_configurations(experiments)
        if getattr(self, "_num_samples", None):
            self._total_samples = self._num_samples

    def trial_added(self, trial_id: str) -> None:
        """Ray's controller holds this trial: one it restored, or one this generator just created."""
        self._ray_trials.add(trial_id)

    def is_finished(self) -> bool:
        self._match_ray_trials()
        return super().is_finished()

    def next_trial(self):
        self._match_ray_trials()
        return super().next_trial()

    def _match_ray_trials(self) -> None:
        """Once, before the first trial is asked for: agree with the trials Ray holds (all restored ones by now)."""
        if getattr(self, "_matched", True):  # True also for a generator pickled before this existed
            return
        self._matched = True
        if not isinstance(getattr(self, "_counter", None), int):
            warnings.warn(
                f"this Ray ({ray.__version__}) no longer counts a search's trials in SearchGenerator._counter "
                f"(checked against Ray 2.41-2.60): a trial lost by a kill is not run again on resume",
                stacklevel=2,
            )
            return
        if not self._ray_trials and self._counter:  # no trial reported: nothing to compare with
            return
        self._counter = len(self._ray_trials)
        limiter = self.searcher if isinstance(self.searcher, ConcurrencyLimiter) else None
        searcher = limiter.searcher if limiter is not None else self.searcher
        if isinstance(searcher, PruneAwareOptunaSearch):
            searcher.match_trials(self._ray_trials)
            if limiter is not None:  # the places it counts (a lost trial's would never be freed) and passes on
                limiter.live_trials = searcher.unfinished()
                limiter.num_unfinished_live_trials = len(limiter.live_trials)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._ray_trials, self._matched = set(), False  # restored: Ray reports its trials next
        experiment = _RESUMED_EXPERIMENT.get()
        if experiment is None:
            return
        storage = getattr(getattr(self, "_experiment", None), "storage", None)
        if not all(hasattr(storage, name) for name in STORAGE_ATTRIBUTES):
            raise ResumeUnsupported(
                f"--resume refused: this Ray ({ray.__version__}) keeps a restored search's storage where this "
                f"project cannot re-point it (SearchGenerator._experiment.storage, checked against Ray "
                f"2.41-2.60), so new trials could be written into another folder"
            )
        storage.storage_fs_path = str(experiment)  # also the spec's "storage", from which each new trial copies
        storage.experiment_dir_name = TUNE


class MatchingASHAScheduler(ASHAScheduler):
    """Ray Tune's ASHA that tells the search generator each trial Ray holds, restored ones included.

    A scheduler is the one part Ray Tune tells of every trial it adds, with the controller whose
    ``search_alg`` it may read (Ray's ``TrialRunnerWrapper`` offers it to schedulers; checked against
    Ray 2.41-2.60, tests/tuning/search/test_searcher.py pins it). Where a Ray no longer offers it, the
    generator is told nothing and keeps its own count, as Ray's does.
    """

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        try:
            generator = tune_controller.search_alg
        except (AttributeError, ValueError):
            return
        if isinstance(generator, RelocatingSearchGenerator):
            generator.trial_added(trial.trial_id)


class ResumeUnsupported(InputError):
    """The installed Ray keeps a restored search's storage where RelocatingSearchGenerator cannot re-point it."""


class PruneAwareOptunaSearch(Searcher):
    """Optuna's sampler (TPE, random) as a Ray Tune searcher that reports every epoch once and tells
    early-stopped or failed trials as PRUNED.

    space: a define-by-run function ``(optuna.Trial) -> dict`` (the trial's configuration, under the names
    the trainer takes) or {name: Optuna distribution};
    metric, mode: one, or lists for a multi-objective study; points_to_evaluate: configurations to
    try first (enqueued in the study); storage, study_name: where the study lives (in memory by
    default); max_epochs: a trial that reported fewer epochs was stopped early.
    """

    def __init__(
        self,
        space,
        metric: str | list[str],
        mode: str | list[str],
        *,
        max_epochs: int,
        sampler: optuna.samplers.BaseSampler | None = None,
        points_to_evaluate: list[dict] | None = None,
        storage: optuna.storages.BaseStorage | None = None,
        study_name: str | None = None,
    ):
        super().__init__(metric=metric, mode=mode)
        storage = storage if storage is not None else optuna.storages.InMemoryStorage()
        self._space, self._sampler, self._storage = space, sampler, storage
        self._study_name = study_name or "optuna"
        self._max_epochs = max_epochs
        self._trials: dict[str, optuna.Trial | int] = {}  # Ray trial id -> its Optuna trial (its number, pickled)
        self._finished: set[str] = set()
        self._spare: list[int] = []  # Optuna trials asked for Ray trials a kill lost: the next new trials take them
        self._reported_steps: dict[str, set[int]] = {}  # saved with the searcher, so resume keeps it
        modes = mode if isinstance(mode, list) else [mode]
        self._study = optuna.create_study(
            storage=storage,
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
            study_name=self._study_name,
            load_if_exists=True,
            directions=["minimize" if m == "min" else "maximize" for m in modes],
        )
        for point in points_to_evaluate or []:
            self._study.enqueue_trial(point)

    @property
    def study(self) -> optuna.Study | None:
        """The Optuna study; None in a searcher unpickled outside ``resuming_into`` (its study stays closed)."""
        return self._study

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return False  # the space, metric and mode were given at construction

    def suggest(self, trial_id: str) -> dict | None:
        """The configuration of a new trial, with the Ray trial id recorded on its Optuna trial (links the study to trials.csv)."""
        if trial_id not in self._trials:
            if self._spare:
                self._trials[trial_id] = self._trial(self._spare.pop(0))
            elif callable(self._space):
                self._trials[trial_id] = self._study.ask()
            else:
                self._trials[trial_id] = self._study.ask(fixed_distributions=self._space)
            self._trials[trial_id].set_user_attr(RAY_TRIAL_ID, trial_id)
        trial = self._trials[trial_id]
        if not callable(self._space):
            return dict(trial.params)
        return self._space(trial)  # the configuration, under its own names (a study may hold ``lr[optimizer=sgd]``)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._finished or trial_id not in self._trials:
            return
        if self._told_before(trial_id):  # told, then the search was killed before this searcher's state was saved
            self._finished.add(trial_id)
            return
        if result:
            self._report(trial_id, result)
        state, value = self.outcome(result, error)
        self._study.tell(self._trials[trial_id], value, state=state)
        self._finished.add(trial_id)
        self._reported_steps.pop(trial_id, None)

    def match_trials(self, ray_trials: Collection[str]) -> None:
        """Agree with the trials Ray holds after a resume (``ray_trials``: their ids), whatever the kill left.

        Ray's trials and this searcher's pickled state are saved apart (see the module's docstring);
        Optuna's journal, written at each ask and tell, holds every trial asked, with the id of the
        Ray trial it was asked for. A RUNNING Optuna trial whose Ray trial Ray holds but this state
        does not is taken back; one whose Ray trial Ray does not hold (lost) goes to the next new
        Ray trial, which then runs that same configuration.
        """
        running = {t.number: t for t in self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for number, frozen in running.items():
            ray_trial = frozen.user_attrs.get(RAY_TRIAL_ID)
            if ray_trial in ray_trials and ray_trial not in self._trials:
                self._trials[ray_trial] = self._trial(number)
        for ray_trial in [t for t in self._trials if t not in ray_trials]:
            del self._trials[ray_trial]  # Ray never reports on it: it must not hold a place among the unfinished
            self._reported_steps.pop(ray_trial, None)
        held = {self._number(t) for t in self._trials.values()}
        self._spare = sorted(n for n in running if n not in held)
        told = {t.number for t in self._study.get_trials(deepcopy=False, states=_FINISHED)}
        self._finished |= {t for t, trial in self._trials.items() if self._number(trial) in told}

    def unfinished(self) -> set[str]:
        """The Ray trials this searcher gave a configuration to and has not heard the end of."""
        return {t for t in self._trials if t not in self._finished}

    def _trial(self, number: int) -> optuna.Trial:
        """The study's trial ``number``, to report to and tell (Optuna's storage API, public)."""
        study_id = self._storage.get_study_id_from_name(self._study_name)
        return optuna.trial.Trial(self._study, self._storage.get_trial_id_from_study_id_trial_number(study_id, number))

    @staticmethod
    def _number(trial: optuna.Trial | int) -> int:
        return trial if isinstance(trial, int) else trial.number

    def _told_before(self, trial_id: str) -> bool:
        """Whether the study (its journal, written at once) already holds this trial as finished: a resumed
        searcher's pickled state can be older than the journal, and Optuna refuses to tell a trial twice."""
        number = self._number(self._trials[trial_id])  # a restored searcher may hold numbers
        return any(t.number == number for t in self._study.get_trials(deepcopy=False, states=_FINISHED))

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
        if trial_id in self._finished or trial_id not in self._trials or not _is_finite(value):
            return  # a diverged epoch has no accuracy to report
        step = int(result.get(EPOCH, result.get("training_iteration")))
        reported = self._reported_steps.setdefault(trial_id, set())
        if step not in reported:
            self._trials[trial_id].report(float(value), step)
            reported.add(step)

    # Pickled state: no Optuna storage (its journal's path is the original experiment's). The study is saved
    # by name and each Ray trial's Optuna trial by number, and reopened on restore.

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_storage"] = state["_study"] = None
        state["_trials"] = {rid: t if isinstance(t, int) else t.number for rid, t in self._trials.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"_spare": [], **state})  # the default: pickled before it was
        self._reopen_study()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__setstate__(pickle.load(f))

    def _reopen_study(self) -> None:
        """Open the study in the storage of the experiment being restored; without one, stay closed."""
        experiment = _RESUMED_EXPERIMENT.get()
        if experiment is None:
            return  # e.g. tuner.pkl read by a tool: the study stays closed rather than open someone else's journal
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(experiment / STUDY)))
        self._storage = storage
        self._study = optuna.load_study(
            study_name=self._study_name, storage=storage, sampler=self._sampler, pruner=optuna.pruners.NopPruner()
        )
        self._trials = {rid: self._trial(t) if isinstance(t, int) else t for rid, t in self._trials.items()}


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
