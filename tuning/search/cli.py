"""Search a network's hyperparameters: ``python -m tuning.search fc|csnn [flags]``.

Ray Tune runs the trials in parallel, Optuna's TPE proposes configurations, ASHA stops weak
trials early; the best configuration is then retrained for the full epochs. Everything lands
in ``RESULTS/NAME/`` (see README "Results of a search").
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any

import os
import sys

from snn.checkpoint import CheckpointError
from snn.cli import Parser, device_memory, fail, unwritable
from snn.config import MAX_SEED, MODELS, ConfigError, ConfigTooLarge, check_fits
from snn.data import DataError, default_data_dir, read_dataset
from snn.io import write_json

from .. import experiment as files
from .settings import ClusterError, ResourceError, Settings, check_local_gpus, check_resource_request
from .space import SearchSpace, SpaceError, default_space_path, load_space, parse_space, with_overrides

METRICS = ("test_acc", "val_acc")
LOGGERS = ("mlflow", "tensorboard")
TUNER_STATE = "tuner.pkl"  # what Tuner.restore reads first in tune/ (ray.tune.impl.tuner_internal._TUNER_PKL)
DEFAULT_VAL_SIZE = 5000  # held out for --metric val_acc when the space sets no val_size
# Ray's newer console output ignores CLIReporter; the classic one prints the compact live table.
# A forced experiment snapshot per checkpoint is what makes --resume exact: no warning about it.
# A diverged or silent epoch is not evaluated, so it has no accuracy: ASHA lets such a result pass
# (the trial then ends by itself), but Ray's strict check of every result would stop the search.
_RAY_ENVIRONMENT = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
                    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}
SMOKE = {  # --preset smoke: the whole path on a small real-MNIST subset in about two minutes
    "fixed": {"limit_train": 2000, "limit_test": 1000},
    "budget": {"trials": 6, "epochs_per_trial": 3, "grace_period": 1, "reduction_factor": 2, "retrain_epochs": 3},
    "params": {"fc": {"T": {"type": "int", "low": 8, "high": 100, "log": True},  # holds the seed's 100
                      "lr": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True}},
               "csnn": {"T": {"type": "int", "low": 2, "high": 3},
                        "channels": {"type": "categorical", "choices": [4, 8]}}},
}


def build_parser() -> Parser:
    p = Parser(prog="python -m tuning.search", description=__doc__.splitlines()[0])
    p.add_argument("model", choices=MODELS)
    p.add_argument("--space", type=Path, help="search-space YAML (default search_spaces/MODEL.yaml)")
    p.add_argument("--preset", choices=("smoke",), help="smoke: 6 trials of up to 3 epochs on a 2,000-image subset")
    p.add_argument("--metric", choices=METRICS, default="test_acc",
                   help="test_acc (as the seed reports) or val_acc (a held-out training split; keeps test unbiased)")
    p.add_argument("--trials", type=int, help="number of trials (default: the space's budget)")
    p.add_argument("--epochs-per-trial", type=int, help="ASHA's max_t")
    p.add_argument("--grace-period", type=int)
    p.add_argument("--reduction-factor", type=int)
    p.add_argument("--retrain-epochs", type=int)
    p.add_argument("--retrain-seeds", type=int,
                   help="retrain the best config with K seeds (default 3; 1 with --preset smoke)")
    p.add_argument("--no-retrain", action="store_true")
    p.add_argument("--time-budget", type=parse_duration, metavar="DURATION",
                   help="stop starting trials after this long (e.g. 90s, 30m, 2h, 1h30m), stop the running ones, "
                        "then retrain and report as usual")
    p.add_argument("--no-seed-trial", action="store_true",
                   help="do not run the seed's configuration as trial 0")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe",
                   help="Optuna's TPE (default) or random search (a baseline)")
    p.add_argument("--seed", type=int, default=0, help="seed of Optuna's sampler")
    p.add_argument("--objective", type=parse_objective, default=None, metavar="accuracy[,synops|,spikes]",
                   help="accuracy (default), or accuracy and the spikes' cost: accuracy,synops (synaptic operations "
                        "per image) or accuracy,spikes (spikes per image), searched by multi-objective TPE")
    p.add_argument("--select", type=parse_select, default="max-accuracy",
                   help="with two objectives, the point of the Pareto front to retrain: max-accuracy (default), "
                        "knee, 'synops<=N', 'spikes<=N' or 'accuracy>=X' (the cheapest at least that accurate)")
    p.add_argument("--logger", action="append", choices=LOGGERS, default=[],
                   help="also track the trials with MLflow (a file store in the experiment folder: "
                        "pip install 'snn-tune[mlflow]') or TensorBoard; may be given twice")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractional: 0.25 runs four trials per GPU")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default: as resources allow)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its checkpoint")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device of trials and retrain")
    p.add_argument("--data-dir", type=Path, help="folder holding MNIST/raw (default $SNN_DATA_DIR, else ./data)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--name", help="experiment name (default MODEL-YYYYmmdd-HHMMSS)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment --name")
    p.add_argument("--address", help="join an existing Ray cluster (e.g. 10.0.0.1:6379 or auto)")
    p.add_argument("--join-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="give up on --address's cluster if it does not answer within this (default 30)")
    p.add_argument("--dashboard-host", default="127.0.0.1")
    p.add_argument("--dashboard-port", type=int, help="default 8265, or the next free port when it is taken")
    p.add_argument("--no-dashboard", action="store_true")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    return p


def parse_duration(text: str) -> float:
    """Seconds in a duration like 90s, 30m, 2h or 1h30m (a bare number is minutes)."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", text)
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", text):
        seconds = float(text) * 60
    elif match and any(match.groups()):
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 2h or 1h30m")
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a time budget must be longer than 0")
    return seconds


def parse_objective(text: str) -> str | None:
    """``accuracy`` (None: no second objective) or ``accuracy,synops`` / ``accuracy,spikes`` (the cost)."""
    names = [n.strip() for n in text.split(",")]
    if names == ["accuracy"]:
        return None
    if len(names) == 2 and names[0] == "accuracy" and names[1] in files.OBJECTIVES and names[1] != "accuracy":
        return names[1]
    raise argparse.ArgumentTypeError(f"{text!r}: use accuracy, accuracy,synops or accuracy,spikes")


def parse_select(text: str) -> str:
    if text in ("max-accuracy", "knee"):
        return text
    try:
        files.parse_selection(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def main(argv: list[str] | None = None, *, trainable=None) -> int:
    """The command line; ``trainable`` replaces the trial function (tests inject faults through it)."""
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


class InputError(ValueError):
    """A flag or a saved search that breaks a rule; the message names the flag or file and the rule."""


def run(args: argparse.Namespace, trainable=None) -> int:
    start = time.time()
    # Notes and warnings (Optuna's, about the space) wait until the input passed every check: a bad
    # input is one line
    with warnings.catch_warnings(record=True) as held, contextlib.redirect_stderr(io.StringIO()) as notes:
        warnings.simplefilter("always")
        experiment, space, settings, data = _checked_input(args)
    sys.stderr.write(notes.getvalue())
    for w in held:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    from . import ray_cluster  # Ray is imported only once the input is known to be good

    ray_cluster.start_ray(address=args.address, dashboard=not args.no_dashboard,
                          dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port,
                          join_timeout=args.join_timeout)
    try:
        _search_and_retrain(args, experiment, space, settings, data, start, trainable)
    finally:
        ray_cluster.stop_ray()
    return 0


def _checked_input(args: argparse.Namespace):
    """Every check of the input that needs no Ray; (experiment folder, space, settings, dataset). Writes nothing."""
    _check_flags(args)
    experiment = (args.results_dir / (args.name or f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")).resolve()
    if args.resume:
        space, settings = _load_state(experiment, args)
    else:
        if experiment.exists():
            raise SpaceError(f"{experiment} already exists; pass --resume to continue it or choose another --name")
        space = _space_from_args(args)
        settings = _settings_from_args(args, space)
    check_resource_request(settings.cpus_per_trial, settings.gpus_per_trial)
    _check_loggers(settings.loggers)
    if not args.address:
        check_local_gpus(settings.gpus_per_trial, settings.device)
    _check_memory(space, settings)
    data = read_dataset(args.data_dir or default_data_dir(), space.fixed.get("dataset", "mnist"))
    return experiment, space, settings, data


BUDGET_FLAGS = {"trials": 1, "epochs_per_trial": 1, "grace_period": 1, "reduction_factor": 2, "retrain_epochs": 1}
MEMORY_PARAMS = ("T", "channels", "batch_size")  # what training_memory_bytes grows with


def _check_flags(args: argparse.Namespace) -> None:
    """The flags' own rules, before any file is read; InputError names the flag."""
    if args.name is not None:
        problem = _not_a_folder_name(args.name)
        if problem:
            raise InputError(f"--name {args.name!r}: {problem}; a name is one folder name inside --results-dir")
    if not 0 <= args.seed <= MAX_SEED:
        raise InputError(f"--seed must be in [0, 2**32 - 1] (numpy's seeds), got {args.seed}")
    for key, least in BUDGET_FLAGS.items():
        value = getattr(args, key)
        if value is not None and value < least:
            raise InputError(f"--{key.replace('_', '-')} must be an integer >= {least}, got {value}")
    if not (math.isfinite(args.join_timeout) and args.join_timeout > 0):
        raise InputError(f"--join-timeout must be a number of seconds > 0, got {args.join_timeout:g}")
    if not args.no_dashboard and args.dashboard_port is not None and not 1 <= args.dashboard_port <= 65535:
        raise InputError(f"--dashboard-port must be a port number in [1, 65535], got {args.dashboard_port}")
    if args.address and args.address != "auto" and "://" not in args.address:
        host, _, port = args.address.rpartition(":")
        if not host or not port.isdigit() or not 1024 <= int(port) <= 65535:
            raise InputError(f"--address must be HOST:PORT with a port in [1024, 65535] (Ray's rule), or auto; "
                             f"got {args.address!r}")
    reason = unwritable(args.results_dir)
    if reason:
        raise InputError(f"--results-dir {args.results_dir}: {reason}")


def _not_a_folder_name(name: str) -> str | None:
    """Why ``name`` is not a single folder name (a path, empty, . or ..), or None."""
    if not name.strip():
        return "is empty"
    if "/" in name or (os.altsep and os.altsep in name) or os.sep in name:
        return "is a path"
    if name in (".", ".."):
        return "names no folder of its own"
    return None


def _check_memory(space: SearchSpace, settings: Settings) -> None:
    """Refuse a space whose largest trial (largest T, channels, batch size) cannot fit in one device's memory."""
    largest: dict[str, Any] = {}
    for name in MEMORY_PARAMS:
        dist = space.params.get(name)
        values = [] if dist is None else getattr(dist, "choices", None) or [dist.low, dist.high]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers:
            largest[name] = max(numbers)
    config = space.config_for(largest, device=settings.device)
    available, where = device_memory(settings.device)
    try:
        check_fits(config, available, where)
    except ConfigTooLarge as e:
        raise ConfigTooLarge(f"{space.path}: the largest trial of this space: {e}") from None


def _search_and_retrain(args, experiment: Path, space: SearchSpace, settings: Settings, data, start: float,
                        trainable) -> None:
    from . import ray_cluster, tuner
    from .retrain import retrain

    ray_cluster.check_cluster_resources(settings.cpus_per_trial, settings.gpus_per_trial)
    if not args.resume:
        from .cost import estimate

        print(estimate(space, settings, data, ray_cluster.max_concurrent(settings)), flush=True)
        _create_experiment(experiment, space, settings)
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
        "retrain": outcome.retrain, "settings": settings.__dict__,
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


def _check_loggers(loggers: tuple[str, ...]) -> None:
    """A logger whose package is missing is one line naming the extra that installs it."""
    for logger, module, extra in (("mlflow", "mlflow", "pip install 'snn-tune[mlflow]'"),
                                  ("tensorboard", "tensorboardX", "pip install tensorboardX")):
        if logger in loggers and importlib.util.find_spec(module) is None:
            raise ResourceError(f"--logger {logger} needs the {module} package: {extra}")


def _space_from_args(args: argparse.Namespace) -> SearchSpace:
    space = load_space(args.space or default_space_path(args.model), args.model)
    fixed: dict[str, Any] = {}
    params: dict[str, Any] = {}
    budget: dict[str, int] = {}
    if args.preset == "smoke":
        fixed.update(SMOKE["fixed"])
        budget.update(SMOKE["budget"])
        params.update({k: v for k, v in SMOKE["params"][args.model].items() if k in space.params})
    for key in ("trials", "epochs_per_trial", "grace_period", "reduction_factor", "retrain_epochs"):
        if getattr(args, key) is not None:
            budget[key] = getattr(args, key)
    _check_budget_flags(args, space, budget)
    if args.metric == "val_acc" and not space.fixed.get("val_size"):
        fixed["val_size"] = DEFAULT_VAL_SIZE
    if fixed or params or budget:
        space = with_overrides(space, fixed=fixed, params=params, budget=budget)
    return space


def _check_budget_flags(args: argparse.Namespace, space: SearchSpace, budget: dict[str, int]) -> None:
    """`grace_period <= epochs_per_trial` when a flag set either: the message names where each value came from."""
    if args.grace_period is None and args.epochs_per_trial is None:
        return  # the space file's own budget: its checks name the file
    effective = {**space.budget.__dict__, **budget}
    if effective["grace_period"] <= effective["epochs_per_trial"]:
        return

    def source(key: str) -> str:
        if getattr(args, key) is not None:
            return f"--{key.replace('_', '-')} {getattr(args, key)}"
        if key in budget:
            return f"--preset {args.preset}'s {key} {budget[key]}"
        return f"{space.path}'s budget.{key} {effective[key]}"

    raise InputError(f"`grace_period <= epochs_per_trial` must hold, got {source('grace_period')} > "
                     f"{source('epochs_per_trial')}")


def _settings_from_args(args: argparse.Namespace, space: SearchSpace) -> Settings:
    if args.retrain_seeds is None:
        args.retrain_seeds = 1 if args.preset == "smoke" else 3
    seed_trial = not args.no_seed_trial
    outside = space.seed_point()[1]
    if seed_trial and outside:
        print(f"note: the seed's configuration lies outside this space ({', '.join(outside)}), so it is not "
              f"trial 0; widen the ranges to include it", file=sys.stderr)
        seed_trial = False
    for flag in ("retrain_seeds", "max_failures", "max_concurrent"):
        value = getattr(args, flag)
        if value < (1 if flag == "retrain_seeds" else 0):
            raise ResourceError(f"--{flag.replace('_', '-')} must be >= {1 if flag == 'retrain_seeds' else 0}, got {value}")
    return Settings(model=args.model, metric=args.metric, seed=args.seed, cpus_per_trial=args.cpus_per_trial,
                    gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                    max_failures=args.max_failures, retrain_seeds=args.retrain_seeds, retrain=not args.no_retrain,
                    device=args.device, seed_trial=seed_trial, sampler=args.sampler, time_budget_s=args.time_budget,
                    loggers=tuple(dict.fromkeys(args.logger)), cost=args.objective, select=args.select)


def _create_experiment(experiment: Path, space: SearchSpace, settings: Settings) -> None:
    """The experiment folder with its search.json, whole or not at all (a kill in between leaves no folder
    that neither a new search nor --resume could use): made under a hidden name, then renamed."""
    experiment.parent.mkdir(parents=True, exist_ok=True)
    staging = experiment.parent / f".{experiment.name}.{os.urandom(4).hex()}.new"
    staging.mkdir()
    _save_state(staging, space, settings)
    os.rename(staging, experiment)  # fails if the name was taken meanwhile, rather than mixing two searches


def _save_state(experiment: Path, space: SearchSpace, settings: Settings) -> None:
    raw = {"model": space.model, "search": space.describe(), "fixed": space.fixed, "budget": space.budget.__dict__}
    write_json(experiment / files.STATE, {"space": raw, "space_file": str(space.path), "settings": settings.__dict__})


def _load_state(experiment: Path, args: argparse.Namespace) -> tuple[SearchSpace, Settings]:
    """The space and settings of the search to resume, once its folder is known to be safe to unpickle from."""
    from .trust import UntrustedExperiment, check_resumable

    state_file = experiment / files.STATE
    if not state_file.exists():
        raise SpaceError(f"--resume: {experiment} holds no search to resume (no {files.STATE})")
    try:
        check_resumable(experiment)
    except UntrustedExperiment as e:
        raise InputError(str(e)) from None
    try:
        state = json.loads(state_file.read_bytes())
        space = parse_space(state["space"], Path(state["space_file"]), args.model)
        settings = Settings(**state["settings"])
    except (ValueError, KeyError, TypeError) as e:  # not JSON, not UTF-8, keys missing or unknown, a bad space
        raise InputError(f"--resume: {state_file} is damaged ({type(e).__name__}: {e}); "
                         f"it is written by the search that started the experiment") from None
    if not (experiment / files.TUNE / TUNER_STATE).is_file() and _study_has_trials(experiment):
        raise InputError(f"--resume: {experiment / files.TUNE / TUNER_STATE} is missing: the Ray Tune experiment "
                         f"cannot be restored (python -m tuning.report {experiment} still reports what is there)")
    return space, settings  # without tune/ nor trials the search never began: --resume begins it


def _study_has_trials(experiment: Path) -> bool:
    import optuna

    if not (experiment / files.STUDY).exists():
        return False
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(experiment / files.STUDY)))
    return any(s.n_trials for s in optuna.get_all_study_summaries(storage, include_best_trial=False))


if __name__ == "__main__":
    raise SystemExit(main())
