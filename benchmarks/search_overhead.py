"""What a search costs beyond training its trials: a fixed part per search and a marginal part per trial.

    python -m benchmarks.search_overhead [--trials 3 9] [--json]

Runs ``tuning.search`` twice in one process (FC-SNN, T=8, 2,000 training images, 2 epochs
per trial, no ASHA stopping, one trial at a time), with a few and with more trials, and
measures for each the command's wall time and its trials' own epoch time (the trainer's
training + evaluation). Overhead = command time - trial time: Ray's start and stop, the cost
estimate, the Tuner's start and end, scheduling, starting or reusing the trial actor, shipping
the dataset, building the model, checkpointing and reporting each epoch. The two searches
split it into a marginal cost per trial (the difference per added trial inside ``Tuner.fit``)
and a fixed cost per search (the rest of the command's overhead). The "outside Tuner" column is the part before and after ``Tuner.fit``
(Ray's start and stop, the estimate).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
import time
from pathlib import Path

from tuning.search import cli

SPACE = """
model: fc
search:
  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
fixed:
  T: 8
  limit_train: 2000
  limit_test: 1000
budget:
  trials: %d
  epochs_per_trial: 2
  grace_period: 2
  reduction_factor: 2
  retrain_epochs: 1
"""


def measure(trials: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        space = Path(folder) / "space.yaml"
        space.write_text(textwrap.dedent(SPACE % trials))
        start = time.time()
        cli.main(
            [
                "fc",
                "--space",
                str(space),
                "--results-dir",
                folder,
                "--name",
                "overhead",
                "--no-retrain",
                "--no-report",
                "--no-dashboard",
                "--max-concurrent",
                "1",
            ]
        )
        total = time.time() - start
        summary = json.loads((Path(folder) / "overhead" / "summary.json").read_text())
    n = summary["trials"]["total"]
    searching, training = summary["search_seconds"], summary["trial_training_seconds"]
    return {
        "trials": n,
        "command_seconds": total,
        "outside_tuner_seconds": total - searching,  # Ray's start and stop, the estimate
        "search_seconds": searching,
        "trial_training_seconds": training,
        "overhead_per_trial_seconds": (searching - training) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs=2, default=[3, 9], metavar=("FEW", "MORE"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    few, more = (measure(n) for n in args.trials)
    overhead = [f["command_seconds"] - f["trial_training_seconds"] for f in (few, more)]
    # the marginal cost from inside the Tuner (Ray's start varies by a second or more between runs)
    tuner_overhead = [f["search_seconds"] - f["trial_training_seconds"] for f in (few, more)]
    per_trial = (tuner_overhead[1] - tuner_overhead[0]) / (more["trials"] - few["trials"])
    fixed = [o - per_trial * f["trials"] for o, f in zip(overhead, (few, more))]
    figures = {
        "searches": [few, more],
        "marginal_overhead_per_trial_seconds": per_trial,
        "fixed_overhead_per_search_seconds": fixed[0],
        "fixed_overhead_second_search_seconds": fixed[1],
    }
    if args.json:
        print(json.dumps(figures))
        return
    print("\nSearch overhead (one trial at a time):")
    print(
        f"  {'trials':>6} {'command s':>10} {'training s':>11} {'overhead s':>11} {'outside Tuner s':>16} "
        f"{'Tuner s':>8}"
    )
    for f, o in zip((few, more), overhead):
        print(
            f"  {f['trials']:>6} {f['command_seconds']:>10.1f} {f['trial_training_seconds']:>11.1f} {o:>11.1f} "
            f"{f['outside_tuner_seconds']:>16.1f} {f['search_seconds']:>8.1f}"
        )
    print(
        f"  marginal overhead per trial: {per_trial:.2f} s; fixed per search: {fixed[0]:.1f} s "
        f"(the first search of the process; the second: {fixed[1]:.1f} s)"
    )


if __name__ == "__main__":
    main()
