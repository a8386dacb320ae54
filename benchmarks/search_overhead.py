"""Ray's overhead per trial: a small search's wall time against its trials' own training time.

    python -m benchmarks.search_overhead [--trials 3 9] [--json]

Runs ``tuning.search`` twice in one process (FC-SNN, T=8, 2,000 training images, 2 epochs
per trial, no ASHA stopping, one trial at a time), with a few and with more trials, and prints
for each:  Ray time = search wall time - sum of the trials' epoch times  (an epoch's time is
the trainer's own training + evaluation). What remains is Ray's part: the Tuner's start and
end, scheduling, starting or reusing the trial actor, shipping the dataset, building the
model, checkpointing and reporting each epoch. The difference between the two searches
splits it into a fixed cost per search and a marginal cost per trial.
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
        cli.main(["fc", "--space", str(space), "--results-dir", folder, "--name", "overhead", "--no-retrain",
                     "--no-report", "--no-dashboard", "--max-concurrent", "1"])
        total = time.time() - start
        summary = json.loads((Path(folder) / "overhead" / "summary.json").read_text())
    n = summary["trials"]["total"]
    searching, training = summary["search_seconds"], summary["trial_training_seconds"]
    return {
        "trials": n,
        "command_seconds": total,
        "ray_start_and_setup_seconds": total - searching,
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
    ray_time = [f["search_seconds"] - f["trial_training_seconds"] for f in (few, more)]
    per_trial = (ray_time[1] - ray_time[0]) / (more["trials"] - few["trials"])
    figures = {"searches": [few, more], "marginal_overhead_per_trial_seconds": per_trial,
               "fixed_overhead_per_search_seconds": ray_time[0] - per_trial * few["trials"]}
    if args.json:
        print(json.dumps(figures))
        return
    print("\nRay overhead (one trial at a time):")
    print(f"  {'trials':>6} {'command s':>10} {'Ray start s':>12} {'search s':>9} {'training s':>11} {'Ray s/trial':>12}")
    for f in (few, more):
        print(f"  {f['trials']:>6} {f['command_seconds']:>10.1f} {f['ray_start_and_setup_seconds']:>12.1f} "
              f"{f['search_seconds']:>9.1f} {f['trial_training_seconds']:>11.1f} {f['overhead_per_trial_seconds']:>12.2f}")
    print(f"  marginal overhead per trial: {per_trial:.2f} s; fixed per search: "
          f"{figures['fixed_overhead_per_search_seconds']:.1f} s")


if __name__ == "__main__":
    main()
