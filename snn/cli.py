"""Command-line plumbing shared by ``snn.train`` and ``tuning.search``: config flags, one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from .config import ConfigError, RunConfig

_TYPES = {"int": int, "float": float, "str": str}
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


class ConfigFileError(ValueError):
    """A --config file that does not hold a valid RunConfig; the message names the file and the fault."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: error: {message} (see --help)")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit; the single way bad input leaves a command."""
    print(message, file=sys.stderr)
    raise SystemExit(code)


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
