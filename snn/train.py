"""Train one network: ``python -m snn.train MODEL [flags]`` or ``python -m snn.train --config FILE [flags]``.

MODEL is fc, csnn or ``package.module:function`` (a network factory of your own); its parameters
are flags (``--T``, ``--hidden-layers``, ``--width-1``; ``python -m snn.train MODEL --help`` lists
them) beside the trainer's. Writes OUT/config.json, OUT/metrics.csv (one row per epoch) and
OUT/checkpoint.pt after every epoch; ``--resume`` continues OUT from its checkpoint. ``--config``
starts from a saved RunConfig (a search's best_config.json, a run's config.json); flags beside it
override its fields. Every check (flags, config file, data, the network's probe, memory) passes
before anything is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from .allocator import keep_freed_memory
from .checkpoint import CheckpointError, read_checkpoint
from .cli import (
    ConfigFileError,
    Parser,
    add_config_flags,
    add_network_flags,
    config_from_values,
    config_overrides,
    device_memory,
    fail,
    network_overrides,
    read_config_file,
    unwritable,
)
from .config import MODELS, ConfigError, ConfigTooLarge, RunConfig, is_reference
from .data import DataError, default_data_dir, make_splits, read_dataset, resolve_device
from .io import write_json
from .networks import NetworkError, check_batch, check_fits, probe, probe_images, resolve
from .run_folder import RunFolder
from .training import FIRMIN_SILENCE, EpochRecord, RunState, check_backend, train

PROG = "python -m snn.train"


def build_parser(network=None, add_help: bool = True) -> Parser:
    parser = Parser(
        prog=PROG,
        add_help=add_help,
        description="Train a spiking network: the seed's FC-SNN or CSNN, their families, or a factory of your own.",
    )
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="fc (FC-SNN), csnn, or package.module:function (a network factory of your own); "
        "may be left out with --config or --resume",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="start from the RunConfig in this JSON file (results/NAME/best_config.json, "
        "OUT/config.json); flags given beside it override its fields",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding the dataset's files (default: $SNN_DATA_DIR, else ./data)",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="never download missing files (default: fetch them from torchvision's mirrors)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default results/runs/MODEL-TIME)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-silence-stop",
        action="store_true",
        help="train every epoch even when the first epoch finds the output silent (Firmin et al.'s rule, "
        "which otherwise stops the run with exit code 1); a search's retrain trains so",
    )
    add_config_flags(parser)
    if network is not None:
        add_network_flags(parser, network)
    return parser


def format_epoch(record: EpochRecord, epochs: int) -> str:
    """One summary line per epoch."""
    parts = [
        f"epoch {record['epoch']:>3}/{epochs}",
        f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.2%}",
    ]
    for split in ("val", "test"):
        if f"{split}_acc" in record:
            parts.append(f"{split} loss {record[f'{split}_loss']:.4f} acc {record[f'{split}_acc']:.2%}")
    parts.append(f"{record['train_images_per_s']:.0f} img/s, {record['epoch_seconds']:.1f} s")
    return " | ".join(parts)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, dict | None]:
    """The flags, parsed once the model is known (its factory's parameters are flags), and the --config file's
    values. The model comes from the positional argument, else the --config file, else the resumed checkpoint."""
    first, _ = build_parser(add_help=False).parse_known_args(argv)  # --help waits for the network's flags
    file_values = read_config_file(first.config) if first.config is not None else None
    # a network flag's value may have been taken for the positional model: the file's or the checkpoint's decides
    model = (file_values or {}).get("model")
    if model is None and first.resume and first.out is not None and (first.out / "checkpoint.pt").is_file():
        model = read_checkpoint(first.out / "checkpoint.pt")["config"].get("model")
    from_file = model is not None and file_values is not None
    model = model or first.model
    if model is not None and not (model in MODELS or is_reference(model)):
        # options before the model (--T 4 fc): the first argument that names a model is the model
        model = next((a for a in (argv if argv is not None else sys.argv[1:]) if a in MODELS or is_reference(a)), model)
    try:
        network = resolve(model) if isinstance(model, str) else None
    except NetworkError as e:
        if from_file:
            raise ConfigFileError(f"{first.config}: {e}") from None
        raise
    return build_parser(network).parse_args(argv), file_values


def _new_config(args, file_values: dict | None) -> RunConfig:
    """A new run's config: the --config file (else the model's defaults) with the flags on top."""
    if file_values is not None:
        base = config_from_values(file_values, args.config, model=args.model)
        if args.model is not None and base.model != args.model:
            fail(
                f"{PROG}: error: model {args.model} does not match {args.config}, which has model {base.model!r}; "
                f"leave the model out or give {base.model}"
            )
    elif args.model is None:
        fail(f"{PROG}: error: give a model (fc, csnn or package.module:function) or --config FILE (see --help)")
    else:
        base = RunConfig(model=args.model)
    network = resolve(base.model)
    config = base.replace(**config_overrides(args)).with_net(**network_overrides(args, network))
    network.check(config.net)
    return config


def _resumed_config(args, file_values: dict | None, out: Path) -> RunConfig:
    """The saved config of the run in ``out``; what the command asks for must match it, except epochs."""
    saved = RunConfig.from_dict(read_checkpoint(RunFolder(out).checkpoint)["config"])
    asked = saved.to_dict()
    if file_values is not None:
        asked = config_from_values(file_values, args.config, model=args.model or saved.model).to_dict()
    asked.update(config_overrides(args))
    asked["net"] = {**asked["net"], **network_overrides(args, resolve(saved.model))}
    if args.model is not None:
        asked["model"] = args.model
    ours = saved.to_dict()
    changed = [k for k, v in asked.items() if k != "epochs" and ours[k] != v]
    if changed:
        fail(
            f"{PROG}: error: --resume keeps the saved config; it has {changed[0]}={ours[changed[0]]!r} (only "
            f"--epochs may change)"
        )
    return saved.replace(epochs=asked.get("epochs", saved.epochs))


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        fail(f"{PROG}: error: --out {out} is a file, not a folder")
    if resume and RunFolder(out).resume_point() is None:
        fail(f"{PROG}: error: --resume: no checkpoint at {RunFolder(out).checkpoint}")
    if not resume and out.exists() and any(out.iterdir()):
        fail(f"{PROG}: error: {out} already holds a run; pass --resume to continue it or choose another --out")
    reason = unwritable(out)
    if reason:
        fail(f"{PROG}: error: --out {out}: {reason}")


def run(args, file_values: dict | None) -> int:
    if args.resume:
        if args.out is None:
            fail(f"{PROG}: error: --resume needs --out, the folder of the run to continue")
        out = args.out
        _check_out(out, resume=True)
        config = _resumed_config(args, file_values, out)
    else:
        config = _new_config(args, file_values)  # every check of the config comes before anything is written
        out = (
            args.out or Path("results") / "runs" / f"{config.model.rpartition(':')[2]}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        _check_out(out, resume=False)
    device = resolve_device(config.device)
    if device.type == "cuda" and not __import__("torch").cuda.is_available():
        fail(f"{PROG}: error: --device cuda but no CUDA device is available")
    check_backend(config.backend, device)
    dataset = read_dataset(
        args.data_dir or default_data_dir(), config.dataset, download=not args.no_download, scale=config.scale_data
    )
    available, where = device_memory(config.device)
    network = resolve(config.model)
    data = make_splits(dataset, config)  # its validation split and limits checked against the data
    check_batch(config, len(data.train))
    found = probe(config, probe_images(dataset), dataset.classes, network, available, where)
    check_fits(config, found, available, where, len(data.train))
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

    print(
        f"{config.model} on {config.dataset}: {len(data.train)} train / {len(data.test)} test images "
        f"{'x'.join(map(str, data.input_shape))}, {data.classes} classes, device {device}, writing {out}"
    )
    try:
        history = train(
            config,
            data,
            on_epoch=on_epoch,
            on_batch=on_batch,
            resume_from=folder.checkpoint if args.resume else None,
            silence=None if args.no_silence_stop else FIRMIN_SILENCE,
            network=network,
        )
    except KeyboardInterrupt:
        fail(f"interrupted; continue with: {PROG} --out {out} --resume", 130)
    if history.status == "diverged":
        fail(
            f"diverged at epoch {len(history.epochs)}: the training loss or the weights are no longer finite; "
            f"try a smaller --lr",
            1,
        )
    if history.status == "silent":
        record = history.epochs[-1]
        fail(
            f"silent: after {record['train_batches']} batches the output layer emitted fewer than "
            f"{record['silence_min_spikes']:g} spikes for {record['silence_fraction']:.0%} of the training images"
            + (f" and classified {record['silence_accuracy']:.0%} of them" if "silence_accuracy" in record else "")
            + " (Firmin et al.'s rule); the network does not learn: try another --lr, --neuron or --tau "
            "(--no-silence-stop trains on regardless)",
            1,
        )
    print(f"best test acc {history.best():.2%}, final {history.last():.2%} ({len(history.epochs)} epochs) -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # the command's choice, not train()'s: large CPU tensors reused without page faults
    try:
        args, file_values = parse(argv)
        return run(args, file_values)
    except (ConfigError, ConfigFileError, ConfigTooLarge, DataError, CheckpointError, NetworkError) as e:
        fail(f"{PROG}: error: {e}")


if __name__ == "__main__":
    raise SystemExit(main())
