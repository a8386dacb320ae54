"""The state a --resume continues from: search.json, written with the experiment folder, and its checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

from snn.io import write_csv, write_json

from .. import experiment as files
from .settings import InputError, Settings
from .space import SearchSpace, SpaceError, parse_space

MAX_STATE_BYTES = 1 << 20  # search.json holds a space and settings: a few kB
TUNER_STATE = "tuner.pkl"  # what Tuner.restore reads first in tune/ (ray.tune.impl.tuner_internal._TUNER_PKL)


def create_experiment(experiment: Path, space: SearchSpace, settings: Settings) -> None:
    """The experiment folder with its search.json, whole or not at all (a kill in between leaves no folder
    that neither a new search nor --resume could use): made under a hidden name, then renamed."""
    experiment.parent.mkdir(parents=True, exist_ok=True)
    staging = experiment.parent / f".{experiment.name}.{os.urandom(4).hex()}.new"
    staging.mkdir()
    _save_state(staging, space, settings)
    # the trial tables' headers from the start: a report of a search stopped before its first epoch reads them
    write_csv(staging / files.TRIALS, [], columns=["trial_id", "status", "epochs"])
    write_csv(staging / files.TRIAL_METRICS, [], columns=["trial_id", files.EPOCH])
    os.rename(staging, experiment)  # fails if the name was taken meanwhile, rather than mixing two searches


def _save_state(experiment: Path, space: SearchSpace, settings: Settings) -> None:
    raw = {
        "model": space.model,
        "data": space.data,
        "search": space.describe(),
        "fixed": space.fixed,
        "budget": space.budget.__dict__,
    }
    write_json(experiment / files.STATE, {"space": raw, "space_file": str(space.path), "settings": settings.__dict__})


def load_state(experiment: Path, model: str | None, network=None) -> tuple[SearchSpace, Settings]:
    """The space and settings of the search to resume, once its folder is known to be safe to unpickle from.

    Its model's factory is imported by the reference search.json names (``network``: the callable
    passed from Python instead)."""
    from .digests import UntrustedPickle, verify_experiment
    from .trust import UntrustedExperiment, check_resumable

    state_file = experiment / files.STATE
    if not state_file.exists():
        raise SpaceError(f"--resume: {experiment} holds no search to resume (no {files.STATE})")
    try:
        check_resumable(experiment)
    except UntrustedExperiment as e:
        raise InputError(str(e)) from None
    try:
        space, settings = _read_state(state_file, model, network)
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # not JSON, too deep, keys missing, a bad space
        raise InputError(
            f"--resume: {state_file} is damaged ({_reason(e)}); it is written by the search that started the experiment"
        ) from None
    if not (experiment / files.TUNE / TUNER_STATE).is_file() and _study_has_trials(experiment):
        raise InputError(
            f"--resume: {experiment / files.TUNE / TUNER_STATE} is missing: the Ray Tune experiment "
            f"cannot be restored (python -m tuning.report {experiment} still reports what is there)"
        )
    try:
        verify_experiment(experiment)  # every pickle Ray Tune would read, signed by this user's searches
    except UntrustedPickle as e:
        raise InputError(f"--resume refused: {e}; resume only experiments you ran (see docs/security.md)") from None
    return space, settings  # without tune/ nor trials the search never began: --resume begins it


def _read_state(state_file: Path, model: str | None, network=None) -> tuple[SearchSpace, Settings]:
    """search.json's space and settings, held to the rules a new search's flags and space file are held to."""
    if state_file.stat().st_size > MAX_STATE_BYTES:
        raise ValueError(
            f"it is {state_file.stat().st_size:,} bytes, more than any search writes ({MAX_STATE_BYTES:,})"
        )
    state = json.loads(state_file.read_bytes())
    if not isinstance(state, dict):
        raise TypeError(f"it holds a {type(state).__name__}, not a mapping with the keys space, space_file, settings")
    missing = [key for key in ("space", "space_file", "settings") if key not in state]
    if missing:
        raise KeyError(missing[0])
    if not isinstance(state["settings"], dict) or not isinstance(state["space_file"], str):
        raise TypeError("settings must be a mapping and space_file a path")
    space = parse_space(state["space"], Path(state["space_file"]), model, network)  # SpaceError: the file's rules
    settings = Settings(**state["settings"])  # InputError: the flags' rules (settings.py)
    if model is not None and settings.model != model:
        raise ValueError(f"its settings are for {settings.model!r} but the command resumes {model!r}")
    if settings.model != space.model:
        raise ValueError(f"its settings are for {settings.model!r} but its space for {space.model!r}")
    return space, settings


def _reason(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "RecursionError: nested deeper than Python can read"
    if isinstance(error, (SpaceError, InputError)):
        return str(error)
    return f"{type(error).__name__}: {str(error)[:300]}"


def _study_has_trials(experiment: Path) -> bool:
    import optuna

    if not (experiment / files.STUDY).exists():
        return False
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(experiment / files.STUDY)))
    return any(s.n_trials for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
