"""Does the search find a better network than the seed's? One command, three arms, one table.

    python -m benchmarks.search_quality fc --trials 16 --epochs-per-trial 4 --retrain-epochs 20 --seeds 3
    python -m benchmarks.search_quality csnn --space csnn-cpu --seeds 3

For one model, space and budget it runs, each in its own experiment folder under --out:

1. ``tpe``: the search (Optuna's TPE with ASHA, selection on ``val_acc``) and the retrain of the
   configuration it picked, over ``--seeds`` seeds;
2. ``random``: the same search with Optuna's ``RandomSampler`` (same trials, same ASHA) and its retrain;
3. ``seed``: the seed's own configuration retrained with exactly the same epochs, data (the same
   validation split and subset) and seeds; when a search chose exactly that configuration, its
   retrain is the seed arm's (the same run, not repeated).

Selection is on the validation split, so every test figure is unbiased. It prints and writes
(``--out``/quality.json and quality.md) one table: final-epoch test accuracy mean ± std over
seeds, the maximum over epochs, SynOps per image when the trainer reports them, and wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from snn.cli import Parser, fail
from snn.config import RunConfig
from snn.data import default_data_dir, read_dataset
from snn.io import write_json, write_text
from snn.networks import flat_values, resolve
from tuning import experiment as files
from tuning.search.inputs import DEFAULT_VAL_SIZE
from tuning.search.retrain import retrain
from tuning.search.space import SpaceError, default_space_path, load_space

DATA_FIELDS = ("limit_train", "limit_test", "val_size", "scale_data")  # what the seed arm takes from the space
SYNOPS = "test_synops_per_image"


def build_parser() -> Parser:
    p = Parser(prog="python -m benchmarks.search_quality", description=__doc__.splitlines()[0])
    p.add_argument("model", help="fc, csnn or package.module:function")
    p.add_argument("--space", type=Path, help="search-space YAML, or a shipped space's name (default: the model's)")
    p.add_argument("--trials", type=int, help="trials per search (default: the space's)")
    p.add_argument("--epochs-per-trial", type=int, help="ASHA's max_t (default: the space's)")
    p.add_argument("--retrain-epochs", type=int, help="epochs of every retrain (default: the space's)")
    p.add_argument("--seeds", type=int, default=3, help="retrain seeds per arm")
    p.add_argument("--arms", default="tpe,random,seed", help="which arms to run, comma-separated")
    p.add_argument("--objective", help="passed to the searches (e.g. accuracy,synops)")
    p.add_argument("--select", help="passed to the searches (e.g. knee)")
    p.add_argument("--retrain-pareto", type=int, help="passed to the searches: also retrain K points of the front")
    p.add_argument("--out", type=Path, default=Path("results/search-quality"))
    p.add_argument("--data-dir", type=Path, help="folder holding MNIST/raw (default $SNN_DATA_DIR, else ./data)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    arms = args.arms.split(",")
    if unknown := set(arms) - {"tpe", "random", "seed"}:
        fail(f"python -m benchmarks.search_quality: error: --arms: unknown arm(s) {', '.join(sorted(unknown))}")
    try:
        space = load_space(args.space or default_space_path(args.model), args.model)
    except SpaceError as e:
        fail(f"python -m benchmarks.search_quality: error: {e}")
    epochs = args.retrain_epochs or space.budget.retrain_epochs
    args.out.mkdir(parents=True, exist_ok=True)
    rows, searched = [], {}
    for arm in arms:
        start = time.time()
        folder = args.out / arm
        if arm == "seed":
            seed_config = _seed_configuration(args, space, epochs)
            same = next(
                (
                    name
                    for name, summary in searched.items()
                    if summary.get("retrain")
                    and (summary.get("best_trial") or {}).get("config")
                    and _same_network(summary["best_trial"]["config"], seed_config)
                ),
                None,
            )
            if same is not None:  # the search chose the seed's configuration: its retrain is this arm's too
                print(f"the {same} search chose the seed's configuration: its retrain is the seed arm's", flush=True)
                folder, summary = (
                    args.out / same,
                    {"retrain": searched[same]["retrain"], "best_trial": searched[same]["best_trial"]},
                )
                arm = f"seed (= {same})"
            else:
                summary = _retrain_seed_configuration(args, space, epochs, folder)
        else:
            summary = searched[arm] = _search(args, arm, epochs, space)
            folder = Path(summary.pop("retrain_folder", folder))
        rows.append(_row(arm, folder, summary, time.time() - start, space))
        _write_table(args.out, rows, args, epochs)
    return 0


def _search(args, sampler: str, epochs: int, space) -> dict[str, Any]:
    """One search arm through the real CLI, selecting on val_acc; its summary.json.

    An arm whose folder holds a finished search is not run again; one that was cut short is resumed
    (``--resume``), so the whole command can be run again after a kill. A finished search whose trials
    all ran but whose retrain is missing or of other epochs or seeds than asked (a budget cut to fit
    a machine) keeps its trials: its chosen configuration is retrained into ``retrain-<E>x<K>/`` (the
    summary names that folder as ``retrain_folder``)."""
    experiment = args.out / sampler
    summary_file = experiment / files.SUMMARY
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    if summary.get("status") == "complete" and _retrained_as_asked(summary.get("retrain"), epochs, args.seeds):
        print(f"the {sampler} search in {experiment} is finished: its results are used", flush=True)
        return summary
    chosen = _chosen_by_finished_search(experiment, args.trials or space.budget.trials)
    if chosen is not None:
        return _retrain_chosen(args, sampler, chosen, epochs, summary.get("search_seconds"))
    command = [
        sys.executable, "-m", "tuning.search", args.model, "--metric", "val_acc", "--sampler", sampler,
        "--results-dir", str(args.out), "--name", sampler, "--retrain-epochs", str(epochs),
        "--retrain-seeds", str(args.seeds), "--no-dashboard", "--no-report",
    ]  # fmt: skip
    if experiment.exists():
        command.append("--resume")
    for flag in ("space", "trials", "epochs_per_trial", "data_dir", "objective", "select", "retrain_pareto"):
        if getattr(args, flag) is not None:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    print("$", " ".join(command), flush=True)
    if subprocess.run(command).returncode != 0:
        fail(f"python -m benchmarks.search_quality: error: the {sampler} search failed (its output is above)", 1)
    return json.loads(summary_file.read_text())


def _retrained_as_asked(result: dict | None, epochs: int, seeds: int) -> bool:
    return bool(result) and result.get("epochs") == epochs and len(result.get("seeds", [])) == seeds


def _chosen_by_finished_search(experiment: Path, trials: int) -> dict[str, Any] | None:
    """The configuration a search chose once all its trials have finished (whatever became of its retrain)."""
    table_file, best_file = experiment / files.TRIALS, experiment / files.BEST_CONFIG
    if not (table_file.exists() and best_file.exists()):
        return None
    import pandas as pd

    table = pd.read_csv(table_file, dtype={"trial_id": str})
    if len(table) < trials or not table["status"].isin(files.FINISHED).all():
        return None
    return json.loads(best_file.read_text())


def _retrain_chosen(args, sampler: str, config: dict[str, Any], epochs: int, search_seconds) -> dict[str, Any]:
    """A finished search's chosen configuration retrained ``epochs`` x ``--seeds`` into its own folder."""
    folder = args.out / sampler / f"retrain-{epochs}x{args.seeds}"
    done = folder / files.SUMMARY
    if done.exists():
        summary = json.loads(done.read_text())
        if _retrained_as_asked(summary.get("retrain"), epochs, args.seeds):
            return {**summary, "retrain_folder": str(folder)}
    print(f"the {sampler} search's trials are finished: retraining its choice {epochs} epochs x {args.seeds} "
          f"seeds in {folder}", flush=True)  # fmt: skip
    summary = {**_retrain_into(folder, args, config, epochs), "search_seconds": search_seconds}
    write_json(done, summary)
    return {**summary, "retrain_folder": str(folder)}


def _seed_configuration(args, space, epochs: int) -> RunConfig:
    """The seed's configuration on the searches' data (same subset, same validation split)."""
    data_fields = {k: v for k, v in space.fixed.items() if k in DATA_FIELDS}
    data_fields.setdefault("val_size", DEFAULT_VAL_SIZE)
    return RunConfig(model=args.model, dataset=space.data, **data_fields, epochs=epochs)


def _same_network(chosen: dict[str, Any], seed: RunConfig) -> bool:
    """Whether a search's chosen configuration trains exactly what the seed's does, from the same seeds
    (the retrain runs seeds ``seed``, ``seed`` + 1, ...); only the device may differ. The network's
    parameters are compared as built (a factory's defaults filled in)."""

    def effective(config: RunConfig) -> dict[str, Any]:
        values = {**flat_values(config), **resolve(config.model).defaults_for(config.net)}
        values.pop("device")
        return values

    return effective(RunConfig.from_dict(chosen)) == effective(seed)


def _retrain_seed_configuration(args, space, epochs: int, folder: Path) -> dict[str, Any]:
    """The seed's configuration on the searches' data (same subset, same validation split), ``--seeds`` seeds."""
    config = _seed_configuration(args, space, epochs).to_dict()
    print(f"retraining the seed's configuration: {config}", flush=True)
    summary = _retrain_into(folder, args, config, epochs)
    write_json(folder / files.SUMMARY, summary)
    return summary


def _retrain_into(folder: Path, args, config: dict[str, Any], epochs: int) -> dict[str, Any]:
    """``config`` retrained ``epochs`` x ``--seeds`` into ``folder`` (each seed resumes from its checkpoint there)."""
    chosen = RunConfig.from_dict(config)
    data = read_dataset(args.data_dir or default_data_dir(), chosen.dataset, scale=chosen.scale_data)
    result = retrain(folder, {**config, "epochs": epochs}, epochs, args.seeds, data)
    return {"retrain": result, "best_trial": {"config": config}}


def _row(arm: str, folder: Path, summary: dict[str, Any], seconds: float, space) -> dict[str, Any]:
    retrained = summary["retrain"]
    best = summary.get("best_trial") or {}
    nested = best.get("config", {})
    config = files.flat_config(nested) or {}
    shown = [name for name in space.params if name in config and space.applies(name, config)]
    synops = _final_synops(folder)
    network = best.get("network") or (
        resolve(nested["model"]).describe(nested.get("net", {})) if nested.get("model") else None
    )
    return {
        "arm": arm,
        "network": network,
        "config": {k: config[k] for k in shown},
        "final_test_acc_mean": retrained["final_test_acc_mean"],
        "final_test_acc_std": retrained["final_test_acc_std"],
        "max_test_acc_mean": retrained["max_test_acc_mean"],
        "max_test_acc_std": retrained["max_test_acc_std"],
        "seeds": retrained["seeds"],
        "epochs": retrained["epochs"],
        "synops_per_image": synops,
        "search_seconds": summary.get("search_seconds"),
        "wall_seconds": seconds,
    }


def _final_synops(folder: Path) -> float | None:
    """Mean over seeds of the last epoch's SynOps per image, when the trainer recorded them."""
    path = folder / files.RETRAIN_METRICS
    if not path.exists():
        return None
    import pandas as pd

    table = pd.read_csv(path)
    if SYNOPS not in table.columns:
        return None
    return float(table.sort_values(files.EPOCH).groupby("seed").tail(1)[SYNOPS].mean())


def _write_table(out: Path, rows: list[dict[str, Any]], args, epochs: int) -> None:
    lines = [
        f"{args.model}: retrain {epochs} epochs x {args.seeds} seeds; selection on val_acc (test figures unbiased)",
        "",
        "| arm | network | final-epoch test acc (mean ± std) | max over epochs (mean ± std) | SynOps/image | "
        "search s | arm wall s | configuration |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        synops = f"{r['synops_per_image']:,.0f}" if r["synops_per_image"] is not None else "n/a"
        search = f"{r['search_seconds']:.0f}" if r["search_seconds"] is not None else "-"
        lines.append(
            f"| {r['arm']} | {r.get('network') or '-'} | {r['final_test_acc_mean']:.2%} ± "
            f"{r['final_test_acc_std']:.2%} | "
            f"{r['max_test_acc_mean']:.2%} ± {r['max_test_acc_std']:.2%} | {synops} | {search} | "
            f"{r['wall_seconds']:.0f} | {_short(r['config'])} |"
        )
    table = "\n".join(lines)
    print(table, flush=True)
    write_text(out / "quality.md", table + "\n")
    write_json(out / "quality.json", rows)


def _short(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


if __name__ == "__main__":
    raise SystemExit(main())
