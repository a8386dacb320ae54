"""The Ray Tune part of a search: Optuna's TPE behind Ray's OptunaSearch, ASHA, one Tuner.

``run_search`` runs (or resumes) the Tuner and leaves trials.csv, trial_metrics.csv and
best_config.json in the experiment folder.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from snn.data import Dataset
from snn.io import write_csv, write_json

from .. import experiment as files
from . import digests, ray_cluster, results
from .board import start_board
from .inputs import model_label
from .progress import LiveTable, hide_ray_restore_advice, ray_failed_restore_hidden
from .results import SearchOutcome
from .searcher import MatchingASHAScheduler, PruneAwareOptunaSearch, RelocatingSearchGenerator, resuming_into
from .settings import Settings
from .space import SearchSpace
from .trial import TrialSetup, recover_lost_checkpoints, run_trial

Trainable = Callable[..., None]  # run_trial's signature: (sampled, setup=..., data=...)
# the signals whose handlers Ray Tune's fit sets (ray/tune/tune.py; SIGUSR1 where the platform has it)
RAY_TUNE_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGUSR1") if hasattr(signal, name))


def run_search(
    experiment: Path,
    space: SearchSpace,
    settings: Settings,
    data: Dataset,
    *,
    resume: bool,
    trainable: Trainable = run_trial,
) -> SearchOutcome:
    """Run (or resume) the Tuner, then write the trial tables and best_config.json."""
    board = start_board()
    setup = TrialSetup(space, settings.cpus_per_trial, settings.device, progress_board=board)
    trainable = named_trainable(
        tune.with_resources(
            tune.with_parameters(trainable, setup=setup, data=data),
            {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
        ),
        f"{model_label(space.model)}_trial",
    )
    hide_ray_restore_advice()
    if not resume:
        _make_resume_key()
    storage = digests.signed_filesystem()  # Ray signs the pickles it writes, and reads only pickles that check
    start = time.time()
    afresh = resume and not any((experiment / files.TUNE).glob("experiment_state-*.json"))
    if afresh:
        print("note: this search was stopped before Ray Tune saved its first trial: its trials start afresh")
    elif resume:
        for trial_id in recover_lost_checkpoints(experiment / files.TUNE):
            print(f"note: trial {trial_id} continues from its newest checkpoint, which Ray Tune's saved state missed")
    # restored from a copied or moved folder, the search writes there only
    with resuming_into(experiment), ray_failed_restore_hidden(afresh):
        if resume:
            tuner = tune.Tuner.restore(
                str(experiment / files.TUNE),
                trainable,
                resume_unfinished=True,
                resume_errored=True,
                storage_filesystem=storage,
            )
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=_tune_config(experiment, space, settings),
                run_config=_run_config(experiment, space, settings, storage),
            )
        with signal_handlers_kept(*RAY_TUNE_SIGNALS):
            grid = tuner.fit()
    outcome = collect(
        experiment, grid, space, settings, searched_seconds=time.time() - start, data=data, storage=storage
    )
    outcome.search_seconds = time.time() - start
    outcome.max_concurrent = ray_cluster.max_concurrent(settings)
    return outcome


@contextlib.contextmanager
def signal_handlers_kept(*signals: signal.Signals) -> Iterator[None]:
    """Put back the handlers of ``signals`` after the block.

    Ray Tune's ``fit`` sets its own SIGINT and SIGUSR1 handlers (``ray/tune/tune.py``: they end the search and
    put the previous handler back) and leaves them set when the search ends by itself, so without this the
    first Ctrl-C of the retrain after it would only set a flag nobody reads.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    handlers = {number: signal.getsignal(number) for number in signals}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            if handler is not None:  # None: set outside Python, so it cannot be put back from here
                signal.signal(number, handler)


def named_trainable(trainable: Trainable, name: str):
    """The trial function as a Trainable class called ``name``, the name the Ray dashboard shows for each trial's
    actor (Ray Tune's own wrapping names every function trainable ``wrap_function.<locals>.ImplicitFunc``).

    Uses ``ray.tune.trainable.function_trainable.wrap_function`` (checked with Ray 2.41 to 2.60), which Ray Tune
    calls on any function it is given; where it has moved, the function goes to Ray Tune as it is (one warning).
    """
    try:
        from ray.tune.trainable.function_trainable import wrap_function
    except ImportError:
        warnings.warn(
            "Ray Tune's wrap_function has moved: the dashboard shows the trials as ImplicitFunc", stacklevel=2
        )
        return trainable
    wrapped = wrap_function(trainable)
    return type(name, (wrapped,), {"__qualname__": name, "__module__": __name__})


def _make_resume_key() -> None:
    """The key the search signs its pickles with; without one it runs, but --resume will refuse it."""
    try:
        digests.ensure_key()
    except (OSError, digests.UntrustedPickle) as e:
        why = e if isinstance(e, digests.UntrustedPickle) else f"{digests.key_path()}: {e.strerror or e}"
        print(
            f"warning: no resume key ({why}): this search's pickles are not signed, so --resume will refuse "
            f"to continue it",
            file=sys.stderr,
        )


def study_storage(experiment: Path) -> optuna.storages.JournalStorage:
    """The Optuna study's storage: the journal file in the experiment folder."""
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(experiment / files.STUDY)))


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for a search of ``trials`` trials: TPE, or random search (the baseline).

    TPE models parameters jointly and per group of parameters that occur together
    (``multivariate``, ``group``: what Optuna recommends for define-by-run spaces with
    conditions), and starts modelling after a quarter of the trials (at most Optuna's default
    10), so that a 16-trial search is not mostly random.
    """
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=min(10, max(2, trials // 4))
        )


def _tune_config(experiment: Path, space: SearchSpace, settings: Settings) -> tune.TuneConfig:
    metric, mode = settings.metric, "max"
    if settings.cost:
        metric, mode = [settings.metric, files.objective_metric(settings.cost, settings.metric)], ["max", "min"]
    searcher = PruneAwareOptunaSearch(
        space=space.sample,
        metric=metric,
        mode=mode,
        sampler=make_sampler(settings.sampler, settings.seed, space.budget.trials),
        points_to_evaluate=[space.optuna_point(space.seed_point()[0])] if settings.seed_trial else None,
        storage=study_storage(experiment),
        study_name=experiment.name,
        max_epochs=space.budget.epochs_per_trial,
    )
    scheduler = MatchingASHAScheduler(
        time_attr=files.EPOCH,
        metric=settings.metric,
        mode="max",
        max_t=space.budget.epochs_per_trial,
        grace_period=space.budget.grace_period,
        reduction_factor=space.budget.reduction_factor,
    )
    # Ray Tune keeps as many trials pending as a ConcurrencyLimiter allows (one without it)
    limited = ConcurrencyLimiter(searcher, max_concurrent=ray_cluster.max_concurrent(settings))
    return tune.TuneConfig(
        search_alg=RelocatingSearchGenerator(limited, num_samples=space.budget.trials),
        scheduler=scheduler,
        num_samples=space.budget.trials,
        reuse_actors=True,
        time_budget_s=settings.time_budget_s,
    )


def _run_config(experiment: Path, space: SearchSpace, settings: Settings, storage) -> tune.RunConfig:
    return tune.RunConfig(
        name=files.TUNE,
        storage_path=str(experiment),
        storage_filesystem=storage,
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=_logger_callbacks(experiment, settings),
        progress_reporter=LiveTable(
            settings.metric,
            space.budget.trials,
            space.budget.epochs_per_trial,
            ray_cluster.max_concurrent(settings),
            list(space.params),
        ),
        verbose=1,
    )


def _logger_callbacks(experiment: Path, settings: Settings) -> list:
    """Ray Tune's own MLflow and TensorBoard callbacks, writing inside the experiment folder."""
    callbacks = []
    if "mlflow" in settings.loggers:
        from .tracking import ExperimentMLflowCallback  # imports mlflow: only when asked for

        callbacks.append(ExperimentMLflowCallback(experiment))
    if "tensorboard" in settings.loggers:
        from ray.tune.logger import TBXLoggerCallback  # event files in each trial's folder under tune/

        callbacks.append(TBXLoggerCallback())
    return callbacks


def describe_network(space: SearchSpace, sampled: dict, data: Dataset) -> str:
    """A trial's network in words, for the data the search ran on."""
    return space.net.describe(space.config_for(sampled).net, data.input_shape, data.classes)


def collect(
    experiment: Path, grid, space: SearchSpace, settings: Settings, searched_seconds: float, data: Dataset, storage=None
) -> SearchOutcome:
    """Write trials.csv, trial_metrics.csv and best_config.json from the Tuner's results.

    The search is ``interrupted`` when a trial is unfinished or fewer trials ran than asked
    for, unless ``--time-budget`` ran out (Ray then starts no more trials and stops the
    running ones): that ends the search as planned, and the retrain follows.
    """
    analysis = tune.ExperimentAnalysis(str(experiment / files.TUNE), storage_filesystem=storage)
    outcomes = results.trial_outcomes(grid, {t.trial_id: t.status for t in analysis.trials})
    seed_trial = _seed_trial_id(experiment) if settings.seed_trial else None
    rows = results.write_trial_files(
        experiment,
        outcomes,
        settings.metric,
        space.budget.epochs_per_trial,
        seed_trial,
        describe=lambda sampled: describe_network(space, sampled, data),
    )
    best = files.best_trial(rows, settings.metric)
    if settings.cost:
        best = _pareto(experiment, rows, settings) or best
    best_config = None
    if best is not None:
        # the config to train in full: what the retrain runs, and `python -m snn.train` can rerun
        best_config = space.config_for(
            files.sampled_values(best), device=settings.device, epochs=space.budget.retrain_epochs
        ).to_dict()
        write_json(experiment / files.BEST_CONFIG, best_config)
    budget_ended = settings.time_budget_s is not None and searched_seconds >= settings.time_budget_s
    interrupted = any(r["status"] not in files.FINISHED for r in rows) or (
        len(rows) < space.budget.trials and not budget_ended
    )
    trial_seconds = sum(r.get("epoch_seconds", 0.0) for t in outcomes for r in t.history)
    return SearchOutcome(
        rows=rows,
        best_row=best,
        best_config=best_config,
        interrupted=interrupted,
        trial_seconds=trial_seconds,
        ended_by_time_budget=budget_ended,
    )


def _pareto(experiment: Path, rows: list[dict], settings: Settings) -> dict | None:
    """Write pareto.csv (the front of the trials that ran to the end) and return the point --select picks."""
    accuracy, cost = f"last_{settings.metric}", f"last_{files.objective_metric(settings.cost, settings.metric)}"
    front = files.pareto_front(rows, accuracy, cost)
    write_csv(experiment / files.PARETO, [dict(r) for r in front])
    chosen = files.select(front, settings.select, accuracy, cost)
    if chosen is None and front:
        print(
            f"note: no point of the Pareto front meets --select {settings.select}; retraining the most accurate",
            file=sys.stderr,
        )
    return chosen


def _seed_trial_id(experiment: Path) -> str | None:
    """The Ray trial that ran the enqueued seed configuration: the study's trial number 0."""
    storage = study_storage(experiment)
    names = optuna.get_all_study_names(storage)  # the one study; named after the folder it began in (a copy keeps it)
    if not names:
        return None
    study = optuna.load_study(study_name=names[0], storage=storage)
    first = [t for t in study.get_trials(deepcopy=False) if t.number == 0]
    return first[0].user_attrs.get(files.RAY_TRIAL_ID) if first else None
