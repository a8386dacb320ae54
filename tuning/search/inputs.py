"""The search's input: its flags, the space and settings they make, and every check made before Ray starts.

``checked_input(args)`` reads and checks everything a search needs without writing anything:
a bad flag, space file, data folder, saved search or resource request is one ``InputError``
(or the error of the module that found it), which the command line prints as one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snn.cli import Parser, device_memory, unwritable
from snn.config import MAX_SEED, MODELS, ConfigTooLarge
from snn.data import DataError, as_dataset, check_shift, default_data_dir, read_dataset
from snn.networks import Network, check_batch, check_fits, probe, probe_images, training_images

from .. import experiment as files
from .settings import (
    DEVICES,
    LOGGERS,
    METRICS,
    SAMPLERS,
    InputError,
    ResourceError,
    Settings,
    check_local_gpus,
    check_resource_request,
)
from .space import SearchSpace, SpaceError, default_space_path, load_space, parse_space, with_overrides
from .state import load_state

DEFAULT_VAL_SIZE = 5000  # held out for --metric val_acc when the space sets no val_size
SMOKE = {  # --preset smoke: the whole path on a small real-MNIST subset in about two minutes
    "fixed": {"limit_train": 2000, "limit_test": 1000},
    "budget": {"trials": 6, "epochs_per_trial": 3, "grace_period": 1, "reduction_factor": 2, "retrain_epochs": 3},
    "params": {
        "fc": {
            "T": {"type": "int", "low": 8, "high": 100, "log": True},  # holds the seed's 100
            "lr": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True},
            **{f"width_{k}": {"type": "int", "low": 16, "high": 64, "log": True} for k in (1, 2, 3)},
        },
        "csnn": {
            "T": {"type": "int", "low": 2, "high": 3},
            "channels": {"type": "categorical", "choices": [4, 8]},
            **{f"channels_{k}": {"type": "categorical", "choices": [4, 8]} for k in (1, 2, 3)},
            "fc_width": {"type": "categorical", "choices": [32, 64]},
        },
    },
}


def build_parser() -> Parser:
    p = Parser(prog="python -m tuning.search", description=__doc__.splitlines()[0])
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="fc, csnn, or package.module:function (your network factory); may be left out with --space",
    )
    p.add_argument(
        "--space",
        type=Path,
        help="a search-space YAML file, or a shipped space's name: fc, fc-cpu, csnn, "
        "csnn-cpu (default: the model's, for fc and csnn)",
    )
    p.add_argument("--preset", choices=("smoke",), help="smoke: 6 trials of up to 3 epochs on a 2,000-image subset")
    p.add_argument(
        "--metric",
        choices=METRICS,
        default="test_acc",
        help="test_acc (as the seed reports) or val_acc (a held-out training split; keeps test unbiased)",
    )
    p.add_argument("--trials", type=int, help="number of trials (default: the space's budget)")
    p.add_argument("--epochs-per-trial", type=int, help="ASHA's max_t")
    p.add_argument("--grace-period", type=int)
    p.add_argument("--reduction-factor", type=int)
    p.add_argument("--retrain-epochs", type=int)
    p.add_argument(
        "--retrain-seeds", type=int, help="retrain the best config with K seeds (default 3; 1 with --preset smoke)"
    )
    p.add_argument("--no-retrain", action="store_true")
    p.add_argument(
        "--time-budget",
        type=parse_duration,
        metavar="DURATION",
        help="stop starting trials after this long (e.g. 90s, 30m, 2h, 1h30m), stop the running ones, "
        "then retrain and report as usual",
    )
    p.add_argument("--no-seed-trial", action="store_true", help="do not run the seed's configuration as trial 0")
    p.add_argument(
        "--sampler", choices=SAMPLERS, default="tpe", help="Optuna's TPE (default) or random search (a baseline)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of Optuna's sampler")
    p.add_argument(
        "--objective",
        type=parse_objective,
        default=None,
        metavar="accuracy[,synops|,spikes]",
        help="accuracy (default), or accuracy and the spikes' cost: accuracy,synops (synaptic operations "
        "per image) or accuracy,spikes (spikes per image), searched by multi-objective TPE",
    )
    p.add_argument(
        "--retrain-pareto",
        type=int,
        default=0,
        metavar="K",
        help="with two objectives, also retrain K points spread along the Pareto front "
        "(into retrain-pareto/<trial>/), each with --retrain-seeds seeds",
    )
    p.add_argument(
        "--select",
        type=parse_select,
        default="max-accuracy",
        help="with two objectives, the point of the Pareto front to retrain: max-accuracy (default), "
        "knee, 'synops<=N', 'spikes<=N' or 'accuracy>=X' (the cheapest at least that accurate)",
    )
    p.add_argument(
        "--logger",
        action="append",
        choices=LOGGERS,
        default=[],
        help="also track the trials with MLflow (a file store in the experiment folder: "
        "pip install 'snn-tune[mlflow]') or TensorBoard; may be given twice",
    )
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractional: 0.25 runs four trials per GPU")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default: as resources allow)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its checkpoint")
    p.add_argument("--device", choices=DEVICES, default="auto", help="device of trials and retrain")
    p.add_argument("--data-dir", type=Path, help="folder holding MNIST/raw (default $SNN_DATA_DIR, else ./data)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--name", help="experiment name (default MODEL-YYYYmmdd-HHMMSS)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment --name")
    p.add_argument("--address", help="join an existing Ray cluster (e.g. 10.0.0.1:6379 or auto)")
    p.add_argument(
        "--join-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up on --address's cluster if it does not answer within this (default 30)",
    )
    p.add_argument("--dashboard-host", default="127.0.0.1")
    p.add_argument("--dashboard-port", type=int, help="default 8265, or the next free port when it is taken")
    p.add_argument("--no-dashboard", action="store_true")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    return p


@dataclass(frozen=True)
class Options:
    """A search's request, flag for flag (``python -m tuning.search --help``); ``tuning.search.run`` fills it
    from keywords. ``space`` is a file, or a mapping of the file's content; ``logger`` the trackers to use."""

    model: str | None = None
    space: Path | Mapping | None = None
    preset: str | None = None
    metric: str = "test_acc"
    trials: int | None = None
    epochs_per_trial: int | None = None
    grace_period: int | None = None
    reduction_factor: int | None = None
    retrain_epochs: int | None = None
    retrain_seeds: int | None = None
    no_retrain: bool = False
    time_budget: float | None = None
    no_seed_trial: bool = False
    sampler: str = "tpe"
    seed: int = 0
    objective: str | None = None
    retrain_pareto: int = 0
    select: str = "max-accuracy"
    logger: tuple[str, ...] = ()
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0
    max_failures: int = 2
    device: str = "auto"
    data_dir: Path | None = None
    results_dir: Path = Path("results")
    name: str | None = None
    resume: bool = False
    address: str | None = None
    join_timeout: float = 30.0
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int | None = None
    no_dashboard: bool = False
    no_report: bool = False

    @classmethod
    def from_flags(cls, args: argparse.Namespace) -> Options:
        values = vars(args)
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


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


def checked_input(args: Options, network: Network | None = None, data: Any = None):
    """Every check of the input that needs no Ray; (experiment folder, space, settings, dataset). Writes nothing.

    ``network``: the model's factory resolved from a callable (the Python API); ``data``: the dataset
    passed from Python (tensors, a Dataset), else the space's ``data`` is read from ``args.data_dir``.
    """
    _check_flags(args)
    if args.model is None and args.space is None and not args.resume and network is None:
        raise InputError("give a model (fc, csnn or package.module:function) or --space FILE (see --help)")
    model = network.name if network is not None else args.model
    default_name = f"{model_label(model or 'search')}-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment = (Path(args.results_dir) / (args.name or default_name)).resolve()
    if args.resume:
        space, settings = load_state(experiment, model, network)
        _refuse_changes_on_resume(args, space, settings)
    else:
        if experiment.exists():
            raise SpaceError(f"{experiment} already exists; pass --resume to continue it or choose another --name")
        space = _space_from_args(args, network)
        settings = _settings_from_args(args, space)
    check_resource_request(settings.cpus_per_trial, settings.gpus_per_trial)
    _check_loggers(settings.loggers)
    if not args.address:
        check_local_gpus(settings.gpus_per_trial, settings.device)
    scale = bool(space.fixed.get("scale_data", False))
    if data is not None:
        dataset = as_dataset(data, scale, where="data")
    else:
        dataset = read_dataset(args.data_dir or default_data_dir(), space.data, scale=scale)
    check_network(space, settings, dataset)
    return experiment, space, settings, dataset


BUDGET_FLAGS = {"trials": 1, "epochs_per_trial": 1, "grace_period": 1, "reduction_factor": 2, "retrain_epochs": 1}


def _check_flags(args: Options) -> None:
    """The flags' own rules, before any file is read; InputError names the flag."""
    if args.name is not None:
        problem = _not_a_folder_name(str(args.name))
        if problem:
            raise InputError(f"--name {args.name!r}: {problem}; a name is one folder name inside --results-dir")
    if not 0 <= args.seed <= MAX_SEED:
        raise InputError(f"--seed must be in [0, 2**32 - 1] (numpy's seeds), got {args.seed}")
    for key, least in BUDGET_FLAGS.items():
        value = getattr(args, key)
        if value is not None and value < least:
            raise InputError(f"--{key.replace('_', '-')} must be an integer >= {least}, got {value}")
    if args.retrain_pareto < 0 or (args.retrain_pareto and not args.objective):
        raise InputError(
            f"--retrain-pareto {args.retrain_pareto}: needs two objectives (--objective "
            f"accuracy,synops or accuracy,spikes) and K >= 1"
        )
    if not (math.isfinite(args.join_timeout) and args.join_timeout > 0):
        raise InputError(f"--join-timeout must be a number of seconds > 0, got {args.join_timeout:g}")
    if not args.no_dashboard and args.dashboard_port is not None and not 1 <= args.dashboard_port <= 65535:
        raise InputError(f"--dashboard-port must be a port number in [1, 65535], got {args.dashboard_port}")
    if args.address and args.address != "auto" and "://" not in args.address:
        host, _, port = args.address.rpartition(":")
        if not host or not port.isdigit() or not 1024 <= int(port) <= 65535:
            raise InputError(
                f"--address must be HOST:PORT with a port in [1024, 65535] (Ray's rule), or auto; got {args.address!r}"
            )
    reason = unwritable(Path(args.results_dir))
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


def check_network(space: SearchSpace, settings: Settings, data) -> None:
    """Build the space's network for the data and run it once on two images (``snn.networks.probe``): at the
    seed's point (or the factory's defaults), and at the largest trial (every number at its highest), which
    must fit in one device's memory. A factory that fails, or builds what cannot be trained, is one line."""
    available, where = device_memory(settings.device)
    images = probe_images(data)
    points = [("the first trial", space.first_point()), ("the largest trial", space.corner(max))]
    for label, point in points:
        config = space.config_for(point, device="cpu")
        try:
            check_shift(config.augment_shift, data.input_shape)
            check_batch(config, training_images(config, len(data.train)))
            found = probe(config, images, data.classes, space.net, available, where)
            check_fits(config, found, available, where, training_images(config, len(data.train)))
        except (ConfigTooLarge, DataError) as e:
            raise type(e)(f"{space.path}: {label} of this space: {e}") from None


def _check_loggers(loggers: tuple[str, ...]) -> None:
    """A logger whose package is missing is one line naming the extra that installs it."""
    for logger, module, extra in (
        ("mlflow", "mlflow", "pip install 'snn-tune[mlflow]'"),
        ("tensorboard", "tensorboardX", "pip install tensorboardX"),
    ):
        if logger in loggers and importlib.util.find_spec(module) is None:
            raise ResourceError(f"--logger {logger} needs the {module} package: {extra}")


def model_label(model: str) -> str:
    """A model's name as a folder name: fc, csnn, or the function of package.module:function."""
    return model.rpartition(":")[2].rpartition(".")[2] or "search"


def _space_from_args(args: Options, network: Network | None = None) -> SearchSpace:
    model = network.name if network is not None else args.model
    if args.space is None and model not in MODELS:
        raise InputError(
            f"{model}: a network of your own needs --space FILE, a search space naming what to "
            f"search (python -m tuning.search --help lists the shipped ones to start from)"
        )
    if isinstance(args.space, Mapping):
        space = parse_space(dict(args.space), "<space from Python>", model, network)
    else:
        space = load_space(args.space or default_space_path(model), model, network)
    fixed: dict[str, Any] = {}
    params: dict[str, Any] = {}
    budget: dict[str, int] = {}
    if args.preset == "smoke":
        fixed.update(SMOKE["fixed"])
        budget.update(SMOKE["budget"])
        params.update({k: v for k, v in SMOKE["params"].get(space.model, {}).items() if k in space.params})
    for key in ("trials", "epochs_per_trial", "grace_period", "reduction_factor", "retrain_epochs"):
        if getattr(args, key) is not None:
            budget[key] = getattr(args, key)
    _check_budget_flags(args, space, budget)
    if args.metric == "val_acc" and not space.fixed.get("val_size"):
        fixed["val_size"] = DEFAULT_VAL_SIZE
    if fixed or params or budget:
        space = with_overrides(space, fixed=fixed, params=params, budget=budget)
    return space


def _refuse_changes_on_resume(args: Options, space: SearchSpace, settings: Settings) -> None:
    """--resume continues a search with the settings it was started with (search.json), as Ray Tune's restore
    does: a flag that asks for another value is refused in one line rather than ignored. Flags left at their
    defaults are not compared (they cannot be told from flags not given)."""
    saved = {
        **{
            key: getattr(space.budget, key)
            for key in ("trials", "epochs_per_trial", "grace_period", "reduction_factor", "retrain_epochs")
        },
        "retrain_seeds": settings.retrain_seeds,
        "time_budget": settings.time_budget_s,
        "objective": settings.cost,
        "metric": settings.metric,
        "sampler": settings.sampler,
        "seed": settings.seed,
        "select": settings.select,
        "retrain_pareto": settings.retrain_pareto,
        "no_retrain": not settings.retrain,
    }
    defaults = {f.name: f.default for f in dataclasses.fields(Options)}
    for key, value in saved.items():
        given = getattr(args, key)
        if given is not None and given != defaults[key] and given != value:
            raise InputError(
                f"--{key.replace('_', '-')} {given}: --resume continues the search as it was started "
                f"({key} {value}); drop the flag, or start a new search under another --name"
            )


def _check_budget_flags(args: Options, space: SearchSpace, budget: dict[str, int]) -> None:
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

    raise InputError(
        f"`grace_period <= epochs_per_trial` must hold, got {source('grace_period')} > {source('epochs_per_trial')}"
    )


def _settings_from_args(args: Options, space: SearchSpace) -> Settings:
    retrain_seeds = args.retrain_seeds if args.retrain_seeds is not None else 1 if args.preset == "smoke" else 3
    seed_trial = not args.no_seed_trial
    outside = space.seed_point()[1]
    if seed_trial and outside:
        print(
            f"note: the seed's configuration lies outside this space ({', '.join(outside)}), so it is not "
            f"trial 0; widen the ranges to include it",
            file=sys.stderr,
        )
        seed_trial = False
    check_resource_request(args.cpus_per_trial, args.gpus_per_trial)  # the flags' messages, before Settings' own
    for flag, value in (
        ("retrain_seeds", retrain_seeds),
        ("max_failures", args.max_failures),
        ("max_concurrent", args.max_concurrent),
    ):
        if value < (1 if flag == "retrain_seeds" else 0):
            raise ResourceError(
                f"--{flag.replace('_', '-')} must be >= {1 if flag == 'retrain_seeds' else 0}, got {value}"
            )
    return Settings(
        model=space.model,
        metric=args.metric,
        seed=args.seed,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures,
        retrain_seeds=retrain_seeds,
        retrain=not args.no_retrain,
        device=args.device,
        seed_trial=seed_trial,
        sampler=args.sampler,
        time_budget_s=args.time_budget,
        loggers=tuple(dict.fromkeys(args.logger)),
        cost=args.objective,
        select=args.select,
        retrain_pareto=args.retrain_pareto,
    )
