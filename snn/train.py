"""Train one network: ``python -m snn.train fc|csnn [flags]`` or ``python -m snn.train --config FILE [flags]``.

Writes OUT/config.json, OUT/metrics.csv (one row per epoch) and OUT/checkpoint.pt after
every epoch; ``--resume`` continues OUT from its checkpoint. ``--config`` starts from a saved
RunConfig (a search's best_config.json, a run's config.json); flags beside it override its fields.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from .allocator import keep_freed_memory
from .checkpoint import CheckpointError, read_checkpoint
from .cli import (ConfigFileError, Parser, add_config_flags, check_memory, config_overrides, fail, load_config_file,
                  unwritable)
from .config import MODELS, ConfigError, ConfigTooLarge, RunConfig
from .data import DataError, default_data_dir, make_splits, read_dataset, resolve_device
from .io import write_json
from .run_folder import RunFolder
from .training import EpochRecord, RunState, train


def build_parser() -> Parser:
    parser = Parser(prog="python -m snn.train", description="Train the seed's FC-SNN or CSNN on MNIST.")
    parser.add_argument("model", nargs="?", choices=MODELS, default=None,
                        help="fc (FC-SNN) or csnn; may be left out with --config or --resume")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="start from the RunConfig in this JSON file (results/NAME/best_config.json, "
                             "OUT/config.json); flags given beside it override its fields")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding MNIST/raw (default: $SNN_DATA_DIR, else ./data)")
    parser.add_argument("--no-download", action="store_true",
                        help="never download missing files (default: fetch them from torchvision's mirrors)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default results/runs/MODEL-TIME)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(parser, skip=("model",))
    return parser


def format_epoch(record: EpochRecord, epochs: int) -> str:
    """One summary line per epoch."""
    parts = [f"epoch {record['epoch']:>3}/{epochs}",
             f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.2%}"]
    for split in ("val", "test"):
        if f"{split}_acc" in record:
            parts.append(f"{split} loss {record[f'{split}_loss']:.4f} acc {record[f'{split}_acc']:.2%}")
    parts.append(f"{record['train_images_per_s']:.0f} img/s, {record['epoch_seconds']:.1f} s")
    return " | ".join(parts)


def _file_config(args) -> RunConfig | None:
    """The --config file's RunConfig, its model checked against the positional one; None without --config."""
    if args.config is None:
        return None
    config = load_config_file(args.config, model=args.model)
    if args.model is not None and config.model != args.model:
        fail(f"python -m snn.train: error: model {args.model} does not match {args.config}, which has "
             f"model {config.model!r}; leave the model out or give {config.model}")
    return config


def _new_config(args) -> RunConfig:
    """A new run's config: the --config file (else the model's seed defaults) with the flags on top."""
    base = _file_config(args)
    if base is not None:
        return base.replace(**config_overrides(args))
    if args.model is None:
        fail("python -m snn.train: error: give a model (fc or csnn) or --config FILE (see --help)")
    return RunConfig(model=args.model, **config_overrides(args))


def _resumed_config(args, out: Path) -> RunConfig:
    """The saved config of the run in ``out``; what the command asks for must match it, except epochs."""
    saved = RunConfig.from_dict(read_checkpoint(RunFolder(out).checkpoint)["config"])
    base = _file_config(args)
    asked = {**(base.to_dict() if base is not None else {}), **config_overrides(args)}
    if args.model is not None:
        asked["model"] = args.model
    changed = [k for k, v in asked.items() if k != "epochs" and getattr(saved, k) != v]
    if changed:
        fail(f"python -m snn.train: error: --resume keeps the saved config; it has "
             f"{changed[0]}={getattr(saved, changed[0])!r} (only --epochs may change)")
    return saved.replace(epochs=asked.get("epochs", saved.epochs))


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        fail(f"python -m snn.train: error: --out {out} is a file, not a folder")
    if resume and RunFolder(out).resume_point() is None:
        fail(f"python -m snn.train: error: --resume: no checkpoint at {RunFolder(out).checkpoint}")
    if not resume and out.exists() and any(out.iterdir()):
        fail(f"python -m snn.train: error: {out} already holds a run; pass --resume to continue it "
             f"or choose another --out")
    reason = unwritable(out)
    if reason:
        fail(f"python -m snn.train: error: --out {out}: {reason}")


def run(args) -> int:
    if args.resume:
        if args.out is None:
            fail("python -m snn.train: error: --resume needs --out, the folder of the run to continue")
        out = args.out
        _check_out(out, resume=True)
        config = _resumed_config(args, out)
    else:
        config = _new_config(args)  # every check of the config comes before anything is written
        out = args.out or Path("results") / "runs" / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        _check_out(out, resume=False)
    device = resolve_device(config.device)
    if device.type == "cuda" and not __import__("torch").cuda.is_available():
        fail("python -m snn.train: error: --device cuda but no CUDA device is available")
    check_memory(config)
    data = make_splits(read_dataset(args.data_dir or default_data_dir(), config.dataset, download=not args.no_download),
                       config)
    folder = RunFolder(out)
    write_json(folder.config, config.to_dict())
    bar = None

    def on_batch(i: int, n: int, loss: float) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=n, desc="training", unit="batch", leave=False, dynamic_ncols=True)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def on_epoch(record: EpochRecord, state: RunState) -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        folder.on_epoch(record, state)
        tqdm.write(format_epoch(record, config.epochs))

    print(f"{config.model} on {config.dataset}: {len(data.train)} train / {len(data.test)} test images, "
          f"device {device}, writing {out}")
    try:
        history = train(config, data, on_epoch=on_epoch, on_batch=on_batch,
                        resume_from=folder.checkpoint if args.resume else None)
    except KeyboardInterrupt:
        fail(f"interrupted; continue with: python -m snn.train {config.model} --out {out} --resume", 130)
    if history.status == "diverged":
        fail(f"diverged at epoch {len(history.epochs)}: the training loss or the weights are no longer finite; "
             f"try a smaller --lr", 1)
    if history.status == "silent":
        record = history.epochs[-1]
        fail(f"silent: after {record['train_batches']} batches the output layer emitted fewer than "
             f"{record['silence_min_spikes']:g} spikes for {record['silence_fraction']:.0%} of the training images"
             + (f" and classified {record['silence_accuracy']:.0%} of them" if "silence_accuracy" in record else "")
             + " (Firmin et al.'s rule); the network does not learn: try another --lr, --neuron or --tau", 1)
    print(f"best test acc {history.best():.2%}, final {history.last():.2%} ({len(history.epochs)} epochs) -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # the command's choice, not train()'s: large CPU tensors reused without page faults
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ConfigError, ConfigFileError, ConfigTooLarge, DataError, CheckpointError) as e:
        fail(f"python -m snn.train: error: {e}")


if __name__ == "__main__":
    raise SystemExit(main())
