"""Command-line plumbing shared by ``snn.train`` and ``tuning.search``: config flags, config files, one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from .config import TRAINER_FIELDS, ConfigError, RunConfig
from .errors import SnnTuneError

_TYPES = {"int": int, "float": float, "str": str}
_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class ConfigFileError(SnnTuneError, ValueError):
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


# --- flags ----------------------------------------------------------------------------------------


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per trainer field of RunConfig (``lr_schedule`` -> ``--lr-schedule``), default unset."""
    group = parser.add_argument_group("training (unset flags keep the seed's defaults for fc and csnn)")
    for f in dataclasses.fields(RunConfig):
        if f.name in skip or f.name not in TRAINER_FIELDS:
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f.metadata.get("help")}
        if f.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _TYPES[str(f.type).split(" ")[0]]
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        group.add_argument(flag_name(f.name), **kwargs)


def add_network_flags(parser: argparse.ArgumentParser, network) -> None:
    """One ``--flag`` per parameter of the network factory (``width_1`` -> ``--width-1``), default unset."""
    group = parser.add_argument_group(f"the network: {network.name} (unset flags keep the factory's defaults)")
    for name in network.parameters:
        if name in TRAINER_FIELDS:
            continue  # the trainer's flag gives it to both
        default = network.defaults.get(name, "(required)")
        group.add_argument(
            flag_name(name),
            dest=f"net.{name}",
            metavar=name.upper(),
            default=argparse.SUPPRESS,
            type=_parameter_parser(network.factory, name, default),
            help=f"{name} (default {default!r})",
        )


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parameter_parser(factory, name: str, default: Any):
    """How to read a factory parameter's value from text: its annotation's type, else its default's, else YAML."""
    kind = None
    try:
        hints = typing.get_type_hints(factory)
        kind = _plain_type(hints.get(name))
    except Exception:  # annotations that cannot be resolved here
        kind = None
    if kind is None and default is not None and not isinstance(default, str) and type(default) in (int, float, bool):
        kind = type(default)
    if kind is bool:
        return _boolean
    if kind in (int, float):
        return _number_or_none(kind)
    if kind is str:
        return _text_or_none
    return _yaml_value


def _plain_type(hint: Any) -> type | None:
    """int, float, str or bool from an annotation (``int | None`` counts as int)."""
    if hint in (int, float, str, bool):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and args[0] in (int, float, str, bool) else None


def _number_or_none(kind: type):
    def parse(text: str):
        if text.lower() in ("none", "null"):
            return None
        try:
            value = float(text) if kind is float else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a number' if kind is float else 'an integer'}"
            ) from None
        return value

    parse.__name__ = kind.__name__
    return parse


def _text_or_none(text: str):
    return None if text.lower() in ("none", "null") else text


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _yaml_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The trainer fields the user set as flags (the positional model is not one)."""
    return {k: v for k, v in vars(args).items() if k in TRAINER_FIELDS}


def network_overrides(args: argparse.Namespace, network) -> dict[str, Any]:
    """The network parameters the user set as flags (a trainer flag the factory also takes counts too)."""
    values = {k.removeprefix("net."): v for k, v in vars(args).items() if k.startswith("net.")}
    values.update({k: v for k, v in vars(args).items() if k in TRAINER_FIELDS and network.takes(k)})
    return values


# --- config files ---------------------------------------------------------------------------------


def read_config_file(path: Path) -> dict[str, Any]:
    """The JSON object a --config file holds; ConfigFileError, one line naming the file, when it is not one."""
    try:
        values = json.loads(Path(path).read_bytes())
    except OSError as e:
        raise ConfigFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bytes that are no text, nesting too deep
        raise ConfigFileError(f"{path}: not JSON ({str(e)[:200] or type(e).__name__})") from None
    if not isinstance(values, dict):
        raise ConfigFileError(
            f"{path}: holds {_JSON_KINDS.get(type(values), 'a value')}, expected a JSON object of config fields"
        ) from None
    return values


def config_from_values(
    values: Mapping[str, Any], path: Path | str, model: str | None = None, network=None
) -> RunConfig:
    """A RunConfig from a config file's object: RunConfig fields, the network's parameters under ``net`` or
    beside the fields (routed by the factory's signature). ConfigFileError names the file and the fault."""
    from .networks import NetworkError, resolve, route

    values = dict(values)
    if "model" not in values:
        if model is None:
            raise ConfigFileError(f"{path}: has no model field; name the model on the command line (fc or csnn)")
        values["model"] = model
    try:
        network = network or resolve(values["model"])
        net = values.pop("net", {}) or {}
        if not isinstance(net, Mapping):
            raise ConfigError("net", "must be an object of the network's parameters", net)
        rest = {k: v for k, v in values.items() if k != "model"}
        trainer, flat_net = route(rest, network)
        config = RunConfig.from_dict({"model": values["model"], **trainer, "net": {**net, **flat_net}})
        network.check(config.net)
        return config
    except (ConfigError, NetworkError) as e:
        raise ConfigFileError(f"{path}: {e}") from None
    except TypeError as e:
        raise ConfigFileError(f"{path}: {e}") from None


def load_config_file(path: Path, model: str | None = None) -> RunConfig:
    """The RunConfig a JSON file holds (a search's best_config.json, a run's config.json).

    Fields the file leaves out take their defaults; ``model`` names the network when the file
    does not. Raises ConfigFileError, one line naming the file, when it is missing, not JSON, not
    an object, or has an unknown key or an invalid value.
    """
    return config_from_values(read_config_file(path), path, model)
