"""The Ray side of a search: start or join Ray, run the Tuner, retrain the best, write results."""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from tqdm import tqdm

from snn.data import Dataset, make_splits
from snn.io import write_csv, write_json
from snn.training import RunState, resolve_device, train

from . import results
from .settings import ResourceError, Settings
from .searcher import EPOCH, PruneAwareOptunaSearch
from .space import SearchSpace
from .trial import TrialSetup, run_trial

STUDY_FILE = "optuna.journal"
TUNE_FOLDER = "tune"  # the Ray Tune experiment inside the experiment folder
# Ray's newer console output ignores CLIReporter; the classic one prints the compact live table.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# A forced experiment snapshot per checkpoint is what makes --resume exact; don't warn about it.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
TOKEN_FILE = Path.home() / ".ray" / "auth_token"
log = logging.getLogger("tuning")


@dataclass
class SearchOutcome:
    """What the Tuner left: one row per trial, the best config, and whether it was cut short."""

    rows: list[dict[str, Any]]
    best_config: dict[str, Any] | None
    best_row: dict[str, Any] | None
    interrupted: bool
    trial_seconds: float  # the trials' own epochs (training + evaluation), summed
    search_seconds: float = 0.0
    max_concurrent: int = 1
    retrain: dict[str, Any] | None = None


def start_ray(args) -> None:
    """Join --address, or start a local Ray with its dashboard on --dashboard-host (loopback by default)."""
    if args.address:
        ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False)
        print(f"joined the Ray cluster at {args.address}")
        return
    if not args.no_dashboard and not _is_loopback(args.dashboard_host):
        print(f"warning: the Ray dashboard listens on {args.dashboard_host}, not loopback: anyone who reaches "
              f"it can run code through Ray's job API", file=sys.stderr)
    context = ray.init(include_dashboard=not args.no_dashboard, dashboard_host=args.dashboard_host,
                       dashboard_port=args.dashboard_port, logging_level=logging.WARNING, log_to_driver=False)
    if not args.no_dashboard and context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}")
        if os.environ.get("RAY_AUTH_MODE", "token").lower() == "token":
            print(f"  token authentication is on: sign in with the token in {TOKEN_FILE} (HTTP clients send "
                  f"'Authorization: Bearer <token>'); on a private machine RAY_AUTH_MODE=disabled turns it off")


def stop_ray() -> None:
    """Shut down the local Ray instance (or disconnect from the cluster)."""
    ray.shutdown()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_cluster_resources(cpus: float, gpus: float) -> None:
    """Fail fast when no single node can host one trial (instead of trials PENDING forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    if cpus > most_cpus:
        raise ResourceError(f"--cpus-per-trial {cpus:g} exceeds the largest node's {most_cpus:g} CPUs")
    if gpus > most_gpus:
        what = "has no GPU" if most_gpus == 0 else f"has at most {most_gpus:g} GPUs on one node"
        raise ResourceError(f"--gpus-per-trial {gpus:g} cannot be met: the cluster {what}")


def _max_concurrent(settings: Settings) -> int:
    if settings.max_concurrent:
        return settings.max_concurrent
    total = ray.cluster_resources()
    by_cpu = int(total.get("CPU", 1) // settings.cpus_per_trial)
    by_gpu = int(total.get("GPU", 0) // settings.gpus_per_trial) if settings.gpus_per_trial else by_cpu
    return max(1, min(by_cpu, by_gpu))


def search(experiment: Path, space: SearchSpace, settings: Settings, data: Dataset, *, resume: bool) -> SearchOutcome:
    """Run (or resume) the Tuner and write trials.csv, trial_metrics.csv and best_config.json."""
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, setup=TrialSetup(space, settings.cpus_per_trial, settings.device), data=data),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    start = time.time()
    if resume:
        tuner = tune.Tuner.restore(str(experiment / TUNE_FOLDER), trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, tune_config=_tune_config(experiment, space, settings),
                           run_config=_run_config(experiment, space, settings))
    grid = tuner.fit()
    outcome = collect(experiment, grid, space, settings)
    outcome.search_seconds = time.time() - start
    outcome.max_concurrent = _max_concurrent(settings)
    return outcome


def _tune_config(experiment: Path, space: SearchSpace, settings: Settings) -> tune.TuneConfig:
    sampler = optuna.samplers.TPESampler(seed=settings.seed)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(experiment / STUDY_FILE)))
    searcher = PruneAwareOptunaSearch(space=space.params, metric=settings.metric, mode="max", sampler=sampler,
                                      storage=storage, study_name=experiment.name,
                                      max_epochs=space.budget.epochs_per_trial)
    scheduler = ASHAScheduler(time_attr=EPOCH, metric=settings.metric, mode="max",
                              max_t=space.budget.epochs_per_trial, grace_period=space.budget.grace_period,
                              reduction_factor=space.budget.reduction_factor)
    return tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=_max_concurrent(settings)),
                           scheduler=scheduler, num_samples=space.budget.trials, reuse_actors=True)


def _run_config(experiment: Path, space: SearchSpace, settings: Settings) -> tune.RunConfig:
    return tune.RunConfig(
        name=TUNE_FOLDER,
        storage_path=str(experiment),
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        progress_reporter=tune.CLIReporter(
            metric_columns={EPOCH: "epoch", settings.metric: settings.metric, "train_loss": "loss"},
            parameter_columns=list(space.params), max_report_frequency=10, sort_by_metric=True,
            metric=settings.metric, mode="max",
        ),
        verbose=1,
    )


def collect(experiment: Path, grid, space: SearchSpace, settings: Settings) -> SearchOutcome:
    analysis = tune.ExperimentAnalysis(str(experiment / TUNE_FOLDER))
    outcomes = results.trial_outcomes(grid, {t.trial_id: t.status for t in analysis.trials})
    rows = results.trial_rows(outcomes, settings.metric, space.budget.epochs_per_trial)
    metric_rows = results.trial_metric_rows(outcomes)
    results.write_trial_files(experiment, rows, metric_rows)
    best = results.best_trial(rows, settings.metric)
    best_config = None
    if best is not None:
        sampled = {k.removeprefix("config/"): v for k, v in best.items() if k.startswith("config/")}
        # the config to train in full: what the retrain runs, and `python -m snn.train` can rerun
        best_config = space.config_for(sampled, device=settings.device, epochs=space.budget.retrain_epochs).to_dict()
        write_json(experiment / "best_config.json", best_config)
    interrupted = any(r["status"] not in ("TERMINATED", "ERROR") for r in rows) or len(rows) < space.budget.trials
    trial_seconds = sum(r.get("epoch_seconds", 0.0) for r in metric_rows)
    return SearchOutcome(rows=rows, best_config=best_config, best_row=best, interrupted=interrupted,
                         trial_seconds=trial_seconds)


def retrain(experiment: Path, outcome: SearchOutcome, space: SearchSpace, settings: Settings, data: Dataset) -> None:
    """Train the best config for the full epochs with each retrain seed, in this process."""
    from snn.config import RunConfig

    base = RunConfig.from_dict(outcome.best_config).replace(epochs=space.budget.retrain_epochs)
    device = resolve_device(base.device)
    splits = make_splits(data, val_size=base.val_size, limit_train=base.limit_train, limit_test=base.limit_test,
                         device=device)
    histories: dict[int, list[dict[str, Any]]] = {}
    for seed in range(base.seed, base.seed + settings.retrain_seeds):
        config = base.replace(seed=seed)
        folder = experiment / "retrain" / f"seed-{seed}"
        print(f"retraining the best config for {config.epochs} epochs (seed {seed}) -> {folder}")
        history = train(config, splits, on_epoch=_retrain_writer(folder, config.epochs),
                        on_batch=_progress_bar(), resume_from=_resume_point(folder, config))
        histories[seed] = history.epochs
    write_csv(experiment / "retrain" / "metrics.csv",
              [{"seed": s, **r} for s, h in histories.items() for r in h])
    first = min(histories)
    outcome.retrain = results.retrain_summary(histories, base.epochs, f"retrain/seed-{first}/checkpoint.pt")


def _resume_point(folder: Path, config) -> Path | None:
    """A retrain interrupted earlier continues from its checkpoint."""
    checkpoint = folder / "checkpoint.pt"
    return checkpoint if checkpoint.exists() else None


def _retrain_writer(folder: Path, epochs: int):
    def on_epoch(record: dict[str, Any], state: RunState) -> None:
        write_json(folder / "config.json", state.config.to_dict())
        write_csv(folder / "metrics.csv", state.history.epochs)
        state.save(folder / "checkpoint.pt")
        tqdm.write(f"  retrain epoch {record['epoch']}/{epochs}: test acc {record.get('test_acc', math.nan):.2%}, "
                   f"train loss {record['train_loss']:.4f}, {record['train_images_per_s']:.0f} img/s")
    return on_epoch


def _progress_bar():
    bar = None

    def on_batch(i: int, n: int, loss: float) -> None:
        nonlocal bar
        if bar is None or i == 0:
            if bar is not None:
                bar.close()
            bar = tqdm(total=n, desc="  retrain", unit="batch", leave=False)
        bar.update(1)
        if i == n - 1:
            bar.close()
            bar = None
    return on_batch


def finish(experiment: Path, outcome: SearchOutcome, space: SearchSpace, settings: Settings, *,
           wall_seconds: float, status: str = "complete") -> None:
    """Write summary.json and print the outcome."""
    counts = results.trial_counts(outcome.rows)
    best = outcome.best_row
    summary = {
        "experiment": experiment.name,
        "model": space.model,
        "dataset": space.fixed.get("dataset", "mnist"),
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
        "best_trial": None if best is None else {
            "trial_id": best["trial_id"], "metric_value": best[f"best_{settings.metric}"],
            "config": outcome.best_config,
        },
        "retrain": outcome.retrain,
        "settings": settings.__dict__,
    }
    results.write_summary(experiment, summary)
    print(f"{counts['total']} trials ({counts['stopped_early']} stopped early by ASHA, {counts['errored']} errored, "
          f"{counts['diverged']} diverged) in {outcome.search_seconds:.0f} s")
    if best is not None:
        print(f"best trial {best['trial_id']}: {settings.metric} {best[f'best_{settings.metric}']:.2%}")
    if outcome.retrain:
        r = outcome.retrain
        print(f"retrained {r['epochs']} epochs x {len(r['seeds'])} seed(s): test acc max "
              f"{r['max_test_acc_mean']:.2%} +- {r['max_test_acc_std']:.2%}, final {r['final_test_acc_mean']:.2%}")
    print(f"results: {experiment}")


def build_report(experiment: Path, data_dir: Path | None) -> None:
    """Write report.html; a failure here must not cost the results already on disk."""
    from .report import build_report as build

    try:
        path = build(experiment, data_dir=data_dir)
    except Exception as e:  # the report can be rebuilt later from the files alone
        print(f"warning: the report could not be built ({type(e).__name__}: {e}); rebuild it with "
              f"python -m tuning.report {experiment}", file=sys.stderr)
        return
    print(f"report: {path}")
