"""The search as a Python function: ``tuning.search.run(space, model=..., data=...)``.

Ray Tune runs the trials in parallel, Optuna's TPE proposes configurations, ASHA stops weak
trials early; the best configuration is then retrained for the full epochs and a report is
built. Everything lands in ``RESULTS/NAME/`` (``tuning.experiment`` names its files).
``python -m tuning.search`` (``tuning.search.cli``) is a thin layer over ``search``.

Bad input raises an ``snn.errors.SnnTuneError`` (``SpaceError``, ``InputError``, ``ConfigError``,
``DataError``, ``NetworkError``, ...) before Ray starts and before anything is written.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import io
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from snn.networks import Network, resolve

from .. import experiment as files
from .inputs import Options, checked_input, parse_duration, parse_objective, parse_select
from .settings import InputError, Settings
from .space import SearchSpace
from .state import TUNER_STATE, create_experiment

# Ray's newer console output ignores CLIReporter; the classic one prints the compact live table.
# A forced experiment snapshot per checkpoint is what makes --resume exact: no warning about it.
# A diverged or silent epoch is not evaluated, so it has no accuracy: ASHA lets such a result pass
# (the trial then ends by itself), but Ray's strict check of every result would stop the search.
_RAY_ENVIRONMENT = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
}


class SearchInterrupted(RuntimeError):
    """The search was stopped (Ctrl-C, a killed trial runner) before it finished; ``resume_hint`` continues it."""

    def __init__(self, experiment: Path, resume_hint: str):
        self.experiment, self.resume_hint = experiment, resume_hint
        super().__init__(f"search interrupted; continue with: {resume_hint}")


@dataclass
class SearchResult:
    """What a search left: its folder, the trials, the best configuration, the retrain and the Pareto front."""

    folder: Path
    summary: dict[str, Any]
    trials: Any  # pandas.DataFrame of trials.csv
    best_config: dict[str, Any] | None
    retrain: dict[str, Any] | None = None
    pareto: Any = None  # pandas.DataFrame of pareto.csv, with two objectives
    report: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


def run(
    space: str | Path | Mapping | None = None,
    *,
    model: str | Callable | None = None,
    data: Any = None,
    name: str | None = None,
    results_dir: str | Path = "results",
    metric: str = "test_acc",
    objective: str = "accuracy",
    select: str = "max-accuracy",
    trials: int | None = None,
    epochs_per_trial: int | None = None,
    grace_period: int | None = None,
    reduction_factor: int | None = None,
    retrain_epochs: int | None = None,
    retrain_seeds: int | None = None,
    retrain: bool = True,
    retrain_pareto: int = 0,
    time_budget: float | str | None = None,
    seed_trial: bool = True,
    sampler: str = "tpe",
    seed: int = 0,
    preset: str | None = None,
    loggers: tuple[str, ...] = (),
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_concurrent: int = 0,
    max_failures: int = 2,
    device: str = "auto",
    data_dir: str | Path | None = None,
    resume: bool = False,
    address: str | None = None,
    join_timeout: float = 30.0,
    dashboard: bool = False,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int | None = None,
    report: bool = True,
) -> SearchResult:
    """Search a spiking network's hyperparameters (and shape); the same search as ``python -m tuning.search``.

    ``space``: a space file, or a mapping of its content (``{"search": {...}, "fixed": {...}, "budget":
    {...}}``); default: the shipped space of ``model`` (fc or csnn). ``model``: fc, csnn, a
    ``package.module:function`` reference or the factory itself, a callable ``(**params) -> nn.Module``
    (it overrides the space's ``model``). ``data``: tensors (``((x, y), (x, y))``, ``(x, y, x, y)``,
    ``{"train": ..., "test": ..., "classes": K}``), torch ``Dataset`` objects or an ``snn.data.Dataset``;
    default: the space's ``data``, read from ``data_dir``. The other keywords are the command line's
    flags (``python -m tuning.search --help``); ``time_budget`` is seconds or a text like ``"30m"``;
    ``objective`` ``"accuracy"`` or ``"accuracy,synops"``; the dashboard is off unless asked for.

    Returns a SearchResult. Raises an ``SnnTuneError`` for bad input (before anything is written) and
    SearchInterrupted when the search is stopped before it ends (``resume=True`` continues it).
    """
    network = resolve(model) if callable(model) and not isinstance(model, str) else None
    try:
        budget = parse_duration(time_budget) if isinstance(time_budget, str) else time_budget
        cost = parse_objective(objective)
        select = parse_select(select)
    except Exception as e:  # argparse's ArgumentTypeError, raised by the flag parsers
        raise InputError(str(e)) from None
    options = Options(
        model=None if network is not None else model,
        space=space if isinstance(space, Mapping) or space is None else Path(space),
        preset=preset,
        metric=metric,
        trials=trials,
        epochs_per_trial=epochs_per_trial,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
        retrain_epochs=retrain_epochs,
        retrain_seeds=retrain_seeds,
        no_retrain=not retrain,
        time_budget=budget,
        no_seed_trial=not seed_trial,
        sampler=sampler,
        seed=seed,
        objective=cost,
        retrain_pareto=retrain_pareto,
        select=select,
        logger=tuple(loggers),
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_concurrent=max_concurrent,
        max_failures=max_failures,
        device=device,
        data_dir=None if data_dir is None else Path(data_dir),
        results_dir=Path(results_dir),
        name=name,
        resume=resume,
        address=address,
        join_timeout=join_timeout,
        dashboard_host=dashboard_host,
        dashboard_port=dashboard_port,
        no_dashboard=not dashboard,
        no_report=not report,
    )
    folder = search(options, network=network, data=data)
    return read_result(folder)


def read_result(folder: Path) -> SearchResult:
    """A finished (or cut short) experiment folder as a SearchResult."""
    import json

    import pandas as pd

    summary = json.loads((folder / files.SUMMARY).read_text()) if (folder / files.SUMMARY).exists() else {}
    trials = pd.read_csv(folder / files.TRIALS, dtype={"trial_id": str}) if (folder / files.TRIALS).exists() else None
    best = json.loads((folder / files.BEST_CONFIG).read_text()) if (folder / files.BEST_CONFIG).exists() else None
    pareto = None
    if (folder / files.PARETO).exists() and (folder / files.PARETO).stat().st_size:
        pareto = pd.read_csv(folder / files.PARETO, dtype={"trial_id": str})
    report = folder / files.REPORT
    return SearchResult(
        folder=folder,
        summary=summary,
        trials=trials,
        best_config=best,
        retrain=summary.get("retrain"),
        pareto=pareto,
        report=report if report.exists() else None,
    )


def search(options: Options, *, network: Network | None = None, data: Any = None, trainable=None) -> Path:
    """Check the input, start Ray, search, retrain, write the summary and the report; the experiment folder.

    ``trainable`` replaces the trial function (tests inject faults through it). The caller's
    ``os.environ`` is as it was once this returns or raises: what the search sets there for Ray's
    processes (Ray Tune's switches, ``RAY_TMPDIR``, a factory's folder on ``PYTHONPATH``) is its own.
    """
    with _environment_restored():
        return _search(options, network=network, data=data, trainable=trainable)


@contextlib.contextmanager
def _environment_restored():
    """``os.environ`` put back as it was on entry: variables added removed, changed or removed ones restored."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def _search(options: Options, *, network: Network | None, data: Any, trainable) -> Path:
    for key, value in _RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live table says what happens, not Optuna's log
    args = options
    start = time.time()
    # Notes and warnings (Optuna's, about the space) wait until the input passed every check: a bad
    # input is one line
    with warnings.catch_warnings(record=True) as held, contextlib.redirect_stderr(io.StringIO()) as notes:
        warnings.simplefilter("always")
        experiment, space, settings, data = checked_input(args, network, data)
    if not args.address and "RAY_TMPDIR" not in os.environ:  # a local Ray's files out of other users' reach
        from .trust import UntrustedExperiment, private_ray_temp

        try:
            os.environ["RAY_TMPDIR"] = str(private_ray_temp())
        except UntrustedExperiment as e:
            raise InputError(str(e)) from None
    sys.stderr.write(notes.getvalue())
    for w in held:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    from . import ray_cluster  # Ray is imported only once the input is known to be good
    from .cost import seed_epoch_seconds

    if not args.address and not args.no_dashboard and args.dashboard_port is not None:
        ray_cluster.check_port_free(args.dashboard_host, args.dashboard_port)  # before any work starts
    # A local search times the cost estimate's few batches and imports Ray Tune while Ray starts
    # (Ray mostly waits on its new processes then). Not on a GPU machine: the estimate would set
    # CUDA switches in os.environ while Ray copies it into its processes.
    overlap = not args.resume and not args.address and not torch.cuda.is_available()
    stop = threading.Event()
    if overlap:
        ray_cluster.import_shared_modules()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        early = pool.submit(_estimate_then_import_tune, space, settings, data, stop) if overlap else None
        try:
            ray_cluster.start_ray(
                address=args.address,
                dashboard=not args.no_dashboard,
                dashboard_host=args.dashboard_host,
                dashboard_port=args.dashboard_port,
                join_timeout=args.join_timeout,
                import_paths=space.import_paths(),
            )
            try:
                _search_and_retrain(
                    args,
                    experiment,
                    space,
                    settings,
                    data,
                    start,
                    trainable,
                    early.result if early else lambda: seed_epoch_seconds(space, settings, data),
                )
            finally:
                ray_cluster.stop_ray()
        finally:
            stop.set()  # a search that failed before reading the estimate: it ends at its next batch
    return experiment


def _estimate_then_import_tune(space: SearchSpace, settings: Settings, data, stop: threading.Event) -> float:
    """``seed_epoch_seconds``, then the search's Ray Tune modules, in a thread while Ray starts.

    What ``ray.init`` imports in the main thread meanwhile shares no module with the estimate's
    imports or Ray Tune's once ``ray_cluster.import_shared_modules`` ran, and the main thread
    waits for this thread before it imports anything more (``_search_and_retrain``): no module
    is imported by two threads at once (tests/tuning/search/test_ray_start.py checks the graphs).
    """
    from .cost import seed_epoch_seconds

    seconds = seed_epoch_seconds(space, settings, data, stop)
    if not stop.is_set():  # else the search failed: nothing will use Ray Tune
        importlib.import_module(f"{__package__}.tuner")
    return seconds


def _search_and_retrain(
    args,
    experiment: Path,
    space: SearchSpace,
    settings: Settings,
    data,
    start: float,
    trainable,
    epoch_seconds: Callable[[], float],
) -> None:
    # first: the thread that times the estimate while Ray starts imports Ray Tune after it
    epoch_s = None if args.resume else epoch_seconds()
    from . import ray_cluster, tuner
    from .retrain import retrain, retrain_front

    ray_cluster.check_cluster_resources(settings.cpus_per_trial, settings.gpus_per_trial)
    if not args.resume:
        from .cost import estimate

        print(estimate(space, settings, epoch_s, ray_cluster.max_concurrent(settings)), flush=True)
        create_experiment(experiment, space, settings)
    print(f"experiment: {experiment}", flush=True)
    began = (experiment / files.TUNE / TUNER_STATE).is_file()  # else killed before Ray Tune wrote anything
    outcome = tuner.run_search(
        experiment,
        space,
        settings,
        data,
        resume=args.resume and began,
        **({"trainable": trainable} if trainable else {}),
    )
    resume_hint = f"python -m tuning.search --results-dir {args.results_dir} --name {experiment.name} --resume"
    if outcome.interrupted:
        _finish(experiment, outcome, space, settings, data, wall_seconds=time.time() - start, status="interrupted")
        raise SearchInterrupted(experiment, resume_hint)
    try:
        ray_cluster.stop_ray()  # the retrain and the report run in this process; free Ray's CPUs and memory
        if settings.retrain and outcome.best_config is not None:
            outcome.retrain = retrain(
                experiment, outcome.best_config, space.budget.retrain_epochs, settings.retrain_seeds, data, space.net
            )
            if settings.retrain_pareto and settings.cost:
                outcome.pareto_retrain = retrain_front(experiment, outcome.rows, space, settings, data)
    except KeyboardInterrupt:  # Ctrl-C: each seed's run folder keeps its last epoch's checkpoint
        print(file=sys.stderr)  # off the progress bar's line
        _finish(experiment, outcome, space, settings, data, wall_seconds=time.time() - start, status="interrupted")
        raise SearchInterrupted(experiment, resume_hint) from None
    _finish(experiment, outcome, space, settings, data, wall_seconds=time.time() - start)
    if not args.no_report:
        _build_report(experiment)
    return None


def _finish(
    experiment: Path,
    outcome,
    space: SearchSpace,
    settings: Settings,
    data,
    *,
    wall_seconds: float,
    status: str = "complete",
) -> None:
    """Write summary.json and print the outcome."""
    from .results import write_summary

    counts = files.trial_counts(outcome.rows)
    best = outcome.best_row
    write_summary(
        experiment,
        {
            "experiment": experiment.name,
            "model": space.model,
            "dataset": space.data,
            "data": {
                "name": data.name,
                "input_shape": list(data.input_shape),
                "classes": data.classes,
                "train_images": len(data.train),
                "test_images": len(data.test),
            },
            "metric": settings.metric,
            "mode": "max",
            "status": status,
            "wall_seconds": wall_seconds,
            "search_seconds": outcome.search_seconds,
            "trial_training_seconds": outcome.trial_seconds,
            "max_concurrent": outcome.max_concurrent,
            "trials": counts,
            "budget": space.budget.__dict__,
            "space": space.describe(),
            "fixed": space.fixed,
            "best_trial": None
            if best is None
            else {
                "trial_id": best["trial_id"],
                "metric_value": best[f"last_{settings.metric}"],
                "max_metric_value": best[f"best_{settings.metric}"],
                "seed_trial": bool(best.get(files.SEED_TRIAL)),
                "network": best.get(files.NETWORK),
                "config": outcome.best_config,
            },
            "seed_trial": _seed_trial_summary(outcome.rows, settings.metric),
            "objectives": [settings.metric]
            + ([files.objective_metric(settings.cost, settings.metric)] if settings.cost else []),
            "selected_by": settings.select if settings.cost else "the last epoch's metric",
            "ended_by": "time budget"
            if outcome.ended_by_time_budget
            else "trials done"
            if status == "complete"
            else status,
            "retrain": outcome.retrain,
            "pareto_retrain": outcome.pareto_retrain,
            "settings": settings.__dict__,
        },
    )
    budget = " (the time budget ended the search)" if outcome.ended_by_time_budget else ""
    print(
        f"{counts['total']} trials ({counts['stopped_early']} stopped early by ASHA, {counts['errored']} errored, "
        f"{counts['diverged']} diverged, {counts['silent']} silent) in {outcome.search_seconds:.0f} s{budget}"
    )
    if best is not None:
        seed = ", the seed's configuration" if best.get(files.SEED_TRIAL) else ""
        chosen = f"selected ({settings.select}) from the Pareto front" if settings.cost else "best"
        cost = files.objective_metric(settings.cost, settings.metric) if settings.cost else None
        cost_text = f", {best[f'last_{cost}']:,.0f} {settings.cost} per image" if cost else ""
        print(
            f"{chosen} trial {best['trial_id']}{seed}: {settings.metric} {best[f'last_{settings.metric}']:.2%} at "
            f"its last epoch (max {best[f'best_{settings.metric}']:.2%}){cost_text}"
        )
    if outcome.retrain:
        r = outcome.retrain
        print(
            f"retrained {r['epochs']} epochs x {len(r['seeds'])} seed(s): test acc final "
            f"{r['final_test_acc_mean']:.2%} +- {r['final_test_acc_std']:.2%} (max over epochs "
            f"{r['max_test_acc_mean']:.2%} +- {r['max_test_acc_std']:.2%})"
        )
    for point in outcome.pareto_retrain or []:
        r = point["retrain"]
        print(
            f"Pareto point {point['trial_id']} retrained: test acc final {r['final_test_acc_mean']:.2%} +- "
            f"{r['final_test_acc_std']:.2%} ({files.PARETO_RETRAIN}/{point['trial_id']}/)"
        )
    print(f"results: {experiment}")


def _seed_trial_summary(rows: list[dict], metric: str) -> dict | None:
    """How the seed's configuration did as trial 0, for the summary."""
    seed = next((r for r in rows if r.get(files.SEED_TRIAL)), None)
    if seed is None:
        return None
    return {
        "trial_id": seed["trial_id"],
        "metric_value": seed[f"last_{metric}"],
        "epochs": seed["epochs"],
        "stopped_early": seed["stopped_early"],
        "network": seed.get(files.NETWORK),
    }


def _build_report(experiment: Path) -> None:
    """Write report.html; a failure here must not cost the results already on disk."""
    from ..report import build_report

    try:
        path = build_report(experiment)
    except Exception as e:  # the report can be rebuilt later from the files alone
        print(
            f"warning: the report could not be built ({type(e).__name__}: {e}); rebuild it with "
            f"python -m tuning.report {experiment}",
            file=sys.stderr,
        )
        return
    print(f"report: {path}")
