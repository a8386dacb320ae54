"""``snn-tune``: one console command for the tool's commands, beside ``python -m``.

snn-tune search ...   = python -m tuning.search ...   (search, retrain, report)
snn-tune report ...   = python -m tuning.report ...   (rebuild an experiment's report)
snn-tune train ...    = python -m snn.train ...       (train one network)
snn-tune export ...   = python -m snn.export ...      (write a trained network as NIR)
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "search": ("tuning.search.cli", "search a network's hyperparameters and shape, retrain the best, report"),
    "report": ("tuning.report.build", "rebuild an experiment folder's report.html from its files"),
    "train": ("snn.train", "train one network (a shipped one, its family, or a factory of your own)"),
    "export": ("snn.export", "write a trained network (a run or an experiment's best) as NIR"),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        lines = [f"  {name:<7} {text}" for name, (_, text) in COMMANDS.items()]
        usage = "usage: snn-tune {search,report,train,export} [--help] ...\n\n" + "\n".join(lines)
        if args and args[0] not in ("-h", "--help"):
            print(f"snn-tune: error: unknown command {args[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        print(usage)
        return 0 if args else 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return module.main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
