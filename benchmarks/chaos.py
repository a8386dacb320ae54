"""Chaos: kill a search again and again at random moments, resume it each time, check that nothing was lost.

    SNN_DATA_DIR=DIR python -m benchmarks.chaos --kills 5 --trials 10

Each kill is SIGKILL to the search command, its local Ray and its trial workers, the way a
crash or ``kill -9`` ends it: during the search (at a random moment), during the retrain and
while the report is being written. After each kill the search is resumed with ``--resume``.
Meanwhile trials fail on their own: each trial raises once at a random epoch and has its worker
SIGKILLed once at another (``tests.tuning.search.faulty_search``), so several crash at once and
Ray retries them from their checkpoints.

At the end it checks, and prints: the trial count is what was asked and every trial is
TERMINATED; every trial the Optuna study had finished at some kill is still there, unchanged
(state, value, intermediate values, parameters); the retrain and the report are complete. And
it counts the trial-epochs trained twice because a kill lost them (each reported epoch is
logged by the trial; the count is the log's lines less the epochs in trial_metrics.csv).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd

from snn.data import default_data_dir
from tests.tuning.search.faulty_search import CRASH_ENV, EPOCH_LOG_ENV, KILL_ENV, SLOW_RETRAIN_ENV
from tests.tuning.search.kill import kill_search
from tuning import experiment as files

REPO = Path(__file__).resolve().parents[1]
PHASES = ("search", "retrain", "report")
NAME = "chaos"


@dataclass
class Chaos:
    """What happened: the kills and where they landed, the study's finished trials seen at each kill."""

    kills: list[str] = field(default_factory=list)  # the phase each kill landed in
    resumes: int = 0
    seen: dict[int, tuple] = field(default_factory=dict)  # Optuna trial number -> its finished record
    changed: set[int] = field(default_factory=set)  # finished trials that later differed or vanished
    failures: list[str] = field(default_factory=list)  # checks that did not hold
    figures: dict[str, int] = field(default_factory=dict)


def study_records(experiment: Path) -> dict[int, tuple]:
    """The finished trials of the experiment's study: number -> (state, value, intermediate values, params)."""
    journal = experiment / files.STUDY
    if not journal.exists():
        return {}
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    names = optuna.get_all_study_names(storage)
    if not names:
        return {}
    study = optuna.load_study(study_name=names[0], storage=storage)
    return {
        t.number: (t.state.name, t.value, dict(t.intermediate_values), dict(t.params))
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished()
    }


def phase_of(experiment: Path, log: Path) -> str:
    """Where a search is now: search, retrain or report (summary.json complete, report.html to come)."""
    summary = experiment / files.SUMMARY
    if summary.exists():
        try:
            if json.loads(summary.read_text()).get("status") == "complete":
                return "report"
        except ValueError:
            pass
    return "retrain" if "retraining the best config" in log.read_text(errors="replace") else "search"


def run_chaos(
    folder: Path,
    *,
    kills: int,
    trials: int,
    seed: int,
    data_root: Path,
    flags: list[str],
    search_delay: tuple[float, float] = (8.0, 40.0),
    say=print,
) -> Chaos:
    """Search into ``folder``/chaos with ``kills`` SIGKILLs at random moments and a resume after each."""
    rng = random.Random(seed)
    experiment = folder / NAME
    markers = folder / "faults"
    markers.mkdir(parents=True, exist_ok=True)
    epoch_log = folder / "epochs.log"
    plan = _plan(kills)
    command = [
        sys.executable,
        "-m",
        "tests.tuning.search.faulty_search",
        "fc",
        "--results-dir",
        str(folder),
        "--name",
        NAME,
        "--trials",
        str(trials),
        "--seed",
        str(seed),
        "--no-dashboard",
        *flags,
    ]
    env = {
        **os.environ,
        "SNN_DATA_DIR": str(data_root),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        CRASH_ENV: f"random:{markers}",
        KILL_ENV: f"random:{markers}",
        EPOCH_LOG_ENV: str(epoch_log),
        SLOW_RETRAIN_ENV: "1",
    }  # a retrain epoch lasts at least 1 s: the kill aimed at it finds it running
    chaos = Chaos()
    for run in range(kills + 1):
        log = folder / f"run-{run}.log"
        resume = (experiment / files.STATE).exists()  # a search killed before it wrote search.json starts anew
        process = subprocess.Popen(
            command + (["--resume"] if resume else []),
            cwd=REPO,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if run == kills:  # the last run goes to the end
            code = process.wait(timeout=3600)
            if code != 0:
                chaos.failures.append(f"the last resume exited {code}: {log.read_text()[-2000:]}")
            break
        target = plan[run]
        landed = _kill_at(process, target, experiment, log, rng, search_delay)
        if landed is None:
            chaos.failures.append(
                f"run {run} ended (code {process.returncode}) before its kill in the {target}: "
                f"{log.read_text()[-2000:]}"
            )
            break
        chaos.kills.append(landed)
        chaos.resumes += 1
        _compare(chaos, study_records(experiment))
        say(
            f"kill {run + 1}/{kills}: in the {landed} (aimed at the {target}); "
            f"{len(chaos.seen)} trials finished in the study so far"
        )
    _final_checks(chaos, experiment, trials, epoch_log, markers)
    return chaos


def _plan(kills: int) -> list[str]:
    """Where each kill aims: the search first, then the retrain, then the report (the last two once each)."""
    tail = ["retrain", "report"][:kills]
    return ["search"] * (kills - len(tail)) + tail


def _kill_at(
    process: subprocess.Popen,
    target: str,
    experiment: Path,
    log: Path,
    rng: random.Random,
    search_delay: tuple[float, float],
) -> str | None:
    """Wait for ``target``'s moment, SIGKILL the whole search; the phase it landed in, or None if it ended first."""
    start = time.time()
    delay = rng.uniform(*search_delay)
    retrain_seen = None
    while process.poll() is None:
        phase = phase_of(experiment, log)
        if target == "search" and (time.time() - start >= delay or phase != "search"):
            break
        if target == "retrain" and phase == "retrain":
            retrain_seen = retrain_seen or time.time()
            if time.time() - retrain_seen >= rng.uniform(0.0, 1.0):  # somewhere in its first epoch
                break
        if target == "retrain" and phase == "report":
            break
        if target == "report" and phase == "report":
            break
        time.sleep(0.05)
    if process.poll() is not None:
        return None
    phase = phase_of(experiment, log)
    kill_search(process)
    if phase == "report" and (experiment / files.REPORT).exists():
        phase = "report (after it was written)"
    return phase


def _compare(chaos: Chaos, now: dict[int, tuple]) -> None:
    """Every finished trial seen before must be there, unchanged; remember the new ones."""
    for number, record in chaos.seen.items():
        if now.get(number) != record:
            chaos.changed.add(number)
    chaos.seen.update({n: r for n, r in now.items() if n not in chaos.changed})


def _final_checks(chaos: Chaos, experiment: Path, trials: int, epoch_log: Path, markers: Path) -> None:
    check = chaos.failures.append
    _compare(chaos, study_records(experiment))
    table = pd.read_csv(experiment / files.TRIALS) if (experiment / files.TRIALS).exists() else pd.DataFrame()
    if len(table) != trials:
        check(f"trials.csv holds {len(table)} trials, {trials} were asked")
    if len(table) and set(table["status"]) != {files.TERMINATED}:
        check(f"trial statuses {sorted(set(table['status']))}, expected all TERMINATED")
    finished = study_records(experiment)
    if len(finished) != trials:
        check(f"the Optuna study finished {len(finished)} trials, {trials} were asked")
    summary = json.loads((experiment / files.SUMMARY).read_text()) if (experiment / files.SUMMARY).exists() else {}
    if summary.get("status") != "complete":
        check(f"summary.json status {summary.get('status')!r}, expected complete")
    retrain = summary.get("retrain") or {}
    metrics = experiment / files.RETRAIN_METRICS
    rows = len(pd.read_csv(metrics)) if metrics.exists() else 0
    if not retrain or rows != retrain.get("epochs", -1) * len(retrain.get("seeds", [])):
        check(f"the retrain is incomplete: {rows} epoch rows in {files.RETRAIN_METRICS}")
    if not (experiment / files.REPORT).exists():
        check("report.html was not written")
    reported = len(epoch_log.read_text().splitlines()) if epoch_log.exists() else 0
    kept = len(pd.read_csv(experiment / files.TRIAL_METRICS)) if (experiment / files.TRIAL_METRICS).exists() else 0
    chaos.figures = {
        "kills": len(chaos.kills),
        "survived": len(chaos.kills) if not chaos.failures else chaos.resumes - 1,
        "trials_lost": len(chaos.changed) + max(0, trials - len(finished)),
        "epochs_trained": reported,
        "epochs_kept": kept,
        "extra_epochs": reported - kept,
        "crashes": len(list(markers.glob("crashed-*"))),
        "worker_kills": len(list(markers.glob("killed-*"))),
        "retrain_epochs": rows,
    }


def describe(chaos: Chaos, trials: int) -> str:
    f = chaos.figures
    where = ", ".join(f"{chaos.kills.count(p)} {p}" for p in dict.fromkeys(chaos.kills))
    lines = [
        f"kills survived: {f['survived']} of {f['kills']} ({where})",
        f"trials lost: {f['trials_lost']} ({trials} asked; {len(chaos.seen)} finished trials in the Optuna study, "
        f"{len(chaos.changed)} changed or lost across the kills)",
        f"extra trial-epochs re-run because of the kills: {f['extra_epochs']} ({f['epochs_trained']} trial-epochs "
        f"trained, {f['epochs_kept']} in trial_metrics.csv)",
        f"faults inside the trials: {f['crashes']} injected crashes, {f['worker_kills']} workers SIGKILLed; "
        f"retrain {f['retrain_epochs']} epoch rows; report {'built' if not chaos.failures else 'see failures'}",
    ]
    lines += [f"FAILED: {failure}" for failure in chaos.failures] or ["all checks held"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=5, help="SIGKILLs, each followed by --resume (default 5)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="seeds the kill moments and the search")
    p.add_argument("--out", type=Path, help="folder for the experiment (default: a new temporary folder)")
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST root (default $SNN_DATA_DIR)")
    p.add_argument(
        "--search-delay",
        type=float,
        nargs=2,
        default=(8.0, 40.0),
        metavar=("MIN", "MAX"),
        help="seconds after a (re)start before a kill during the search, drawn uniformly",
    )
    p.add_argument(
        "search_flags",
        nargs=argparse.REMAINDER,
        help="flags for python -m tuning.search after --, e.g. -- --preset smoke --max-concurrent 2",
    )
    args = p.parse_args(argv)
    flags = [f for f in args.search_flags if f != "--"] or [
        "--preset",
        "smoke",
        "--max-concurrent",
        "2",
        "--max-failures",
        "3",
    ]
    folder = args.out or Path(tempfile.mkdtemp(prefix="snn-chaos-"))
    start = time.time()
    print(f"chaos: {args.kills} kills, {args.trials} trials, search flags {' '.join(flags)}; in {folder}", flush=True)
    chaos = run_chaos(
        folder,
        kills=args.kills,
        trials=args.trials,
        seed=args.seed,
        data_root=(args.data_dir or default_data_dir()).resolve(),
        flags=flags,
        search_delay=tuple(args.search_delay),
        say=lambda s: print(s, flush=True),
    )
    print(describe(chaos, args.trials))
    print(f"wall time {time.time() - start:.0f} s")
    return 1 if chaos.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
