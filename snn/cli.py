"""Command-line plumbing shared by ``snn.train`` and ``tuning.search``: config flags, one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from .config import ConfigError, RunConfig, check_fits

_TYPES = {"int": int, "float": float, "str": str}
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


class ConfigFileError(ValueError):
    """A --config file that does not hold a valid RunConfig; the message names the file and the fault."""


# A negative number is a value, never an option. argparse before Python 3.13 knows only -1 and
# -.5 as numbers, so "--lr -1e-3" read as a missing value; now it parses and meets the rule.
_NEGATIVE_NUMBER = re.compile(r"^-(\.?\d|inf$|infinity$|nan$)", re.IGNORECASE)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2, and that reads -1e-3 as a number."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: error: {message} (see --help)")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit; the single way bad input leaves a command."""
    print(message, file=sys.stderr)
    raise SystemExit(code)


def check_memory(config: RunConfig) -> None:
    """Refuse a config whose training batch cannot fit in the memory of the device it runs on (ConfigTooLarge)."""
    available, where = device_memory(config.device)
    check_fits(config, available, where)


def device_memory(device: str) -> tuple[int, str]:
    """The memory a run on ``device`` has, in bytes, and what it is: one GPU's, else this machine's RAM."""
    from .data import resolve_device  # torch, only once a command is past its argument parsing

    if resolve_device(device).type == "cuda":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory, f"GPU 0 ({torch.cuda.get_device_name(0)})"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:  # a container's limit (cgroup v2), when lower
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        total = min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        pass
    return total, "this machine's memory"


def unwritable(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (made if missing), or None when they can; leaves nothing behind.

    Looks at the deepest part of the path that exists: a file there, or a folder in which no file
    can be made (permissions, a read-only file system, /proc), is the reason.
    """
    try:
        existing = next(p for p in (folder, *folder.parents) if p.exists())
    except OSError as e:  # a parent that cannot be searched
        return f"{folder} cannot be reached ({e.strerror or e})"
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):  # unnamed or unlinked at once: nothing stays
            pass
    except OSError as e:
        return f"no file can be written in {existing} ({e.strerror or e})"
    return None


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per RunConfig field (``lr_schedule`` -> ``--lr-schedule``), default unset."""
    group = parser.add_argument_group("run configuration (unset flags keep the seed's defaults)")
    for f in dataclasses.fields(RunConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f.metadata.get("help")}
        if f.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _TYPES[str(f.type).split(" ")[0]]
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        group.add_argument(flag, **kwargs)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the user set as flags (the positional model is not one)."""
    names = {f.name for f in dataclasses.fields(RunConfig)} - {"model"}
    return {k: v for k, v in vars(args).items() if k in names}


def load_config_file(path: Path, model: str | None = None) -> RunConfig:
    """The RunConfig a JSON file holds (a search's best_config.json, a run's config.json).

    Fields the file leaves out take their defaults; ``model`` names the network when the file
    does not. Raises ConfigFileError, one line naming the file, when it is missing, not JSON, not
    an object, or has an unknown key or an invalid value.
    """
    try:
        values = json.loads(Path(path).read_bytes())
    except OSError as e:
        raise ConfigFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    except ValueError as e:  # JSONDecodeError, or bytes that are no text
        raise ConfigFileError(f"{path}: not JSON ({e})") from None
    if not isinstance(values, dict):
        raise ConfigFileError(f"{path}: holds {_JSON_KINDS.get(type(values), 'a value')}, "
                              f"expected a JSON object of config fields") from None
    if "model" not in values:
        if model is None:
            raise ConfigFileError(f"{path}: has no model field; name the model on the command line (fc or csnn)")
        values = {**values, "model": model}
    try:
        return RunConfig.from_dict(values)
    except ConfigError as e:
        raise ConfigFileError(f"{path}: {e}") from None
