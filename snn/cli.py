"""Command-line plumbing shared by ``snn.train`` and ``tuning.search``: config flags, one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, NoReturn

from .config import RunConfig

_TYPES = {"int": int, "float": float, "str": str}


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
