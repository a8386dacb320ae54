"""Search a network's hyperparameters: ``python -m tuning.search fc|csnn [flags]``.

Ray Tune runs the trials in parallel, Optuna's TPE proposes configurations, ASHA stops weak
trials early; the best configuration is then retrained for the full epochs. Everything lands
in ``RESULTS/NAME/`` (see README "Results of a search").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib
import io
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from snn.allocator import keep_freed_memory
from snn.checkpoint import CheckpointError
from snn.cli import fail
from snn.config import ConfigError, ConfigTooLarge
from snn.data import DataError

from .. import experiment as files
from .inputs import build_parser, checked_input
from .settings import ClusterError, InputError, ResourceError, Settings
from .space import SearchSpace, SpaceError
from .state import TUNER_STATE, create_experiment

# Ray's newer console output ignores CLIReporter; the classic one prints the compact live table.
# A forced experiment snapshot per checkpoint is what makes --resume exact: no warning about it.
# A diverged or silent epoch is not evaluated, so it has no accuracy: ASHA lets such a result pass
# (the trial then ends by itself), but Ray's strict check of every result would stop the search.
_RAY_ENVIRONMENT = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
                    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}


def main(argv: list[str] | None = None, *, trainable=None) -> int:
    """The command line; ``trainable`` replaces the trial function (tests inject faults through it)."""
    keep_freed_memory()  # the command's choice (snn/allocator.py), as each trial's: its estimate and retrain train
    args = build_parser().parse_args(argv)
    for name, value in _RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live table says what happens, not Optuna's log
    try:
        return run(args, trainable)
    except (SpaceError, ConfigError, ConfigTooLarge, DataError, ResourceError, CheckpointError, InputError,
            ClusterError) as e:
        fail(f"python -m tuning.search: error: {e}")


def run(args: argparse.Namespace, trainable=None) -> int:
    start = time.time()
    # Notes and warnings (Optuna's, about the space) wait until the input passed every check: a bad
    # input is one line
    with warnings.catch_warnings(record=True) as held, contextlib.redirect_stderr(io.StringIO()) as notes:
        warnings.simplefilter("always")
        experiment, space, settings, data = checked_input(args)
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
            ray_cluster.start_ray(address=args.address, dashboard=not args.no_dashboard,
                                  dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port,
                                  join_timeout=args.join_timeout)
            try:
                _search_and_retrain(args, experiment, space, settings, data, start, trainable,
                                    early.result if early else lambda: seed_epoch_seconds(space, settings, data))
            finally:
                ray_cluster.stop_ray()
        finally:
            stop.set()  # a search that failed before reading the estimate: it ends at its next batch
    return 0


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


def _search_and_retrain(args, experiment: Path, space: SearchSpace, settings: Settings, data, start: float,
                        trainable, epoch_seconds: Callable[[], float]) -> None:
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
    outcome = tuner.run_search(experiment, space, settings, data, resume=args.resume and began,
                               **({"trainable": trainable} if trainable else {}))
    if outcome.interrupted:
        _finish(experiment, outcome, space, settings, wall_seconds=time.time() - start, status="interrupted")
        fail(f"search interrupted; continue with: python -m tuning.search {space.model} "
             f"--results-dir {args.results_dir} --name {experiment.name} --resume", 130)
    ray_cluster.stop_ray()  # the retrain and the report run in this process; free Ray's CPUs and memory
    if settings.retrain and outcome.best_config is not None:
        outcome.retrain = retrain(experiment, outcome.best_config, space.budget.retrain_epochs,
                                  settings.retrain_seeds, data)
        if settings.retrain_pareto and settings.cost:
            outcome.pareto_retrain = retrain_front(experiment, outcome.rows, space, settings, data)
    _finish(experiment, outcome, space, settings, wall_seconds=time.time() - start)
    if not args.no_report:
        _build_report(experiment)


def _finish(experiment: Path, outcome, space: SearchSpace, settings: Settings, *, wall_seconds: float,
            status: str = "complete") -> None:
    """Write summary.json and print the outcome."""
    from .results import write_summary

    counts = files.trial_counts(outcome.rows)
    best = outcome.best_row
    write_summary(experiment, {
        "experiment": experiment.name, "model": space.model, "dataset": space.fixed.get("dataset", "mnist"),
        "metric": settings.metric, "mode": "max", "status": status, "wall_seconds": wall_seconds,
        "search_seconds": outcome.search_seconds, "trial_training_seconds": outcome.trial_seconds,
        "max_concurrent": outcome.max_concurrent, "trials": counts, "budget": space.budget.__dict__,
        "space": space.describe(), "fixed": space.fixed,
        "best_trial": None if best is None else {
            "trial_id": best["trial_id"], "metric_value": best[f"last_{settings.metric}"],
            "max_metric_value": best[f"best_{settings.metric}"], "seed_trial": bool(best.get(files.SEED_TRIAL)),
            "config": outcome.best_config},
        "seed_trial": _seed_trial_summary(outcome.rows, settings.metric),
        "objectives": [settings.metric] + ([files.objective_metric(settings.cost, settings.metric)]
                                           if settings.cost else []),
        "selected_by": settings.select if settings.cost else "the last epoch's metric",
        "ended_by": "time budget" if outcome.ended_by_time_budget else "trials done" if status == "complete" else status,
        "retrain": outcome.retrain, "pareto_retrain": outcome.pareto_retrain, "settings": settings.__dict__,
    })
    budget = " (the time budget ended the search)" if outcome.ended_by_time_budget else ""
    print(f"{counts['total']} trials ({counts['stopped_early']} stopped early by ASHA, {counts['errored']} errored, "
          f"{counts['diverged']} diverged, {counts['silent']} silent) in {outcome.search_seconds:.0f} s{budget}")
    if best is not None:
        seed = ", the seed's configuration" if best.get(files.SEED_TRIAL) else ""
        chosen = f"selected ({settings.select}) from the Pareto front" if settings.cost else "best"
        cost = files.objective_metric(settings.cost, settings.metric) if settings.cost else None
        cost_text = f", {best[f'last_{cost}']:,.0f} {settings.cost} per image" if cost else ""
        print(f"{chosen} trial {best['trial_id']}{seed}: {settings.metric} {best[f'last_{settings.metric}']:.2%} at "
              f"its last epoch (max {best[f'best_{settings.metric}']:.2%}){cost_text}")
    if outcome.retrain:
        r = outcome.retrain
        print(f"retrained {r['epochs']} epochs x {len(r['seeds'])} seed(s): test acc final "
              f"{r['final_test_acc_mean']:.2%} +- {r['final_test_acc_std']:.2%} (max over epochs "
              f"{r['max_test_acc_mean']:.2%} +- {r['max_test_acc_std']:.2%})")
    for point in outcome.pareto_retrain or []:
        r = point["retrain"]
        print(f"Pareto point {point['trial_id']} retrained: test acc final {r['final_test_acc_mean']:.2%} +- "
              f"{r['final_test_acc_std']:.2%} ({files.PARETO_RETRAIN}/{point['trial_id']}/)")
    print(f"results: {experiment}")


def _seed_trial_summary(rows: list[dict], metric: str) -> dict | None:
    """How the seed's configuration did as trial 0, for the summary."""
    seed = next((r for r in rows if r.get(files.SEED_TRIAL)), None)
    if seed is None:
        return None
    return {"trial_id": seed["trial_id"], "metric_value": seed[f"last_{metric}"], "epochs": seed["epochs"],
            "stopped_early": seed["stopped_early"]}


def _build_report(experiment: Path) -> None:
    """Write report.html; a failure here must not cost the results already on disk."""
    from ..report import build_report

    try:
        path = build_report(experiment)
    except Exception as e:  # the report can be rebuilt later from the files alone
        print(f"warning: the report could not be built ({type(e).__name__}: {e}); rebuild it with "
              f"python -m tuning.report {experiment}", file=sys.stderr)
        return
    print(f"report: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
