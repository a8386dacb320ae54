"""Search a network's hyperparameters: ``python -m tuning.search fc|csnn|package.module:function [flags]``.

A thin layer over ``tuning.search.api.search``: the flags become ``Options``; bad input is one
line on stderr with exit code 2, an interrupted search exit code 130 with the line that resumes it.
"""

from __future__ import annotations

from snn.allocator import keep_freed_memory
from snn.cli import fail
from snn.errors import SnnTuneError

from .api import SearchInterrupted, search
from .inputs import Options, build_parser

PROG = "python -m tuning.search"


def main(argv: list[str] | None = None, *, trainable=None) -> int:
    """The command line; ``trainable`` replaces the trial function (tests inject faults through it)."""
    keep_freed_memory()  # the command's choice (snn/allocator.py), as each trial's: its estimate and retrain train
    options = Options.from_flags(build_parser().parse_args(argv))
    try:
        search(options, trainable=trainable)
    except SnnTuneError as e:
        fail(f"{PROG}: error: {e}")
    except SearchInterrupted as e:
        fail(str(e), 130)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
