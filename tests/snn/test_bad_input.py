"""`python -m snn.train` on bad input: one line on stderr, exit code 2, no OUT/config.json or anything else written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snn.config import RunConfig, format_bytes
from snn.data import FILES
from snn.networks import probe, probe_images
from tests.bad_input import Case, RunsCodeWhenUnpickled, assert_refused, run_cases
from tests.idx_files import write_bytes

TRAIN = "snn.train"
OUT = ("--out", "{case}/run", "--quiet")


def a_file_named_run(folder: Path) -> None:
    (folder / "run").write_text("not a folder\n")


def a_crafted_checkpoint(folder: Path) -> None:
    (folder / "run").mkdir()
    torch.save(
        {"model": RunsCodeWhenUnpickled(folder / "marker"), "optimizer": {}, "config": {}, "history": [], "rng": {}},
        folder / "run" / "checkpoint.pt",
    )


def a_checkpoint_whose(**changes):
    """A run folder whose checkpoint has save_checkpoint's layout but for ``changes`` (tests/snn/test_checkpoint.py)."""

    def setup(folder: Path) -> None:
        from tests.snn.test_checkpoint import a_checkpoint

        (folder / "run").mkdir()
        torch.save(a_checkpoint(**changes), folder / "run" / "checkpoint.pt")

    return setup


def images_of_32_by_32(folder: Path) -> None:
    raw = folder / "data" / "MNIST" / "raw"
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (60_000, 32, 32))
    write_bytes(raw / FILES["train_images"], header + bytes(32 * 32))
    for key in ("train_labels", "test_images", "test_labels"):
        write_bytes(raw / FILES[key], b"")


CASES = {
    "T-too-large": Case(
        TRAIN,
        ("fc", *OUT, "--T", "1000000000"),
        "one training batch does not fit: 2 images of it (T=1000000000) already need more than the",
    ),
    "channels-too-large": Case(
        TRAIN,
        ("csnn", *OUT, "--channels", "1000000"),
        "one training batch does not fit: 2 images of it (channels=1000000) already need more than the",
    ),
    "batch-too-large": Case(
        TRAIN,
        ("fc", *OUT, "--batch-size", "99999999999999999999"),
        "batch_size: must be at most the 60,000 training images the run has, got 99999999999999999999",
    ),
    "batch-memory": Case(
        TRAIN,
        (
            "fc",
            *OUT,
            "--batch-size",
            "60000",
            "--T",
            "2000",
            "--hidden-layers",
            "1",
            "--width-1",
            "4096",
            "--encoding",
            "direct",
        ),
        "(batch_size=60000, T=2000, encoding=direct, hidden_layers=1, width_1=4096), more than the",
    ),
    "batch-zero": Case(TRAIN, ("fc", *OUT, "--batch-size", "0"), "batch_size: must be >= 1, got 0"),
    "hidden-layers-too-many": Case(TRAIN, ("fc", *OUT, "--hidden-layers", "4"), "hidden_layers: must be <= 3, got 4"),
    "width-zero": Case(TRAIN, ("fc", *OUT, "--hidden-layers", "1", "--width-1", "0"), "width_1: must be >= 1, got 0"),
    "blocks-too-many": Case(TRAIN, ("csnn", *OUT, "--blocks", "4"), "blocks: must be <= 3, got 4"),
    "T-not-an-integer": Case(TRAIN, ("fc", *OUT, "--T", "2.5"), "argument --T: '2.5' is not an integer"),
    "model-unknown": Case(
        TRAIN, ("resnet", *OUT), "model 'resnet': must be one of fc, csnn or package.module:function"
    ),
    "val-size-all": Case(
        TRAIN, ("fc", *OUT, "--val-size", "60000"), "val_size 60000 leaves no training image of the 60,000"
    ),
    "shift-off-the-frame": Case(
        TRAIN, ("csnn", *OUT, "--augment-shift", "28"), "augment_shift 28 moves a 28x28 image off its frame"
    ),
    "shift-negative": Case(TRAIN, ("csnn", *OUT, "--augment-shift", "-1"), "augment_shift: must be >= 0, got -1"),
    "surrogate-alpha-nan": Case(
        TRAIN, ("fc", *OUT, "--surrogate-alpha", "nan"), "surrogate_alpha: must be a finite number, got nan"
    ),
    "lr-negative": Case(TRAIN, ("fc", *OUT, "--lr", "-1e-3"), "lr: must be > 0, got -0.001"),
    "lr-minus-infinity": Case(TRAIN, ("fc", *OUT, "--lr", "-inf"), "lr: must be a finite number"),
    "seed-negative": Case(TRAIN, ("fc", *OUT, "--seed", "-1"), "seed: must be in [0, 2**32 - 1], got -1"),
    "seed-too-large": Case(TRAIN, ("fc", *OUT, "--seed", str(2**64)), "seed: must be in [0, 2**32 - 1]"),
    "out-a-file": Case(TRAIN, ("fc", "--out", "{case}/run"), "is a file, not a folder", a_file_named_run),
    "out-under-a-file": Case(
        TRAIN, ("fc", "--out", "{case}/run/deeper"), "run is a file, not a folder", a_file_named_run
    ),
    "out-unwritable": Case(TRAIN, ("fc", "--out", "/proc/snn-tune/run"), "no file can be written in /proc"),
    "crafted-checkpoint": Case(
        TRAIN, ("fc", *OUT, "--resume"), "refused: it refers to posix.system", a_crafted_checkpoint
    ),
    "checkpoint-history-a-number": Case(
        TRAIN,
        ("fc", *OUT, "--resume"),
        "not an snn-tune checkpoint: its history is of type int, not a list of epoch records",
        a_checkpoint_whose(history=5),
    ),
    "checkpoint-rng-a-list": Case(
        TRAIN,
        ("fc", *OUT, "--resume"),
        "not an snn-tune checkpoint: its rng is of type list",
        a_checkpoint_whose(rng=[0]),
    ),
    "idx-32x32": Case(
        TRAIN,
        ("fc", *OUT, "--data-dir", "{case}/data", "--no-download"),
        "train-images-idx3-ubyte: its header declares images of 32x32, expected 28x28",
        images_of_32_by_32,
    ),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, data_root):
    return run_cases(CASES, tmp_path_factory.mktemp("bad-train-input"), {"SNN_DATA_DIR": str(data_root)})


@pytest.mark.parametrize("cause", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(outcomes, cause):
    assert_refused(outcomes[cause], CASES[cause].fragment)


def test_the_memory_check_names_what_one_batch_needs_as_the_probe_measured_it(outcomes, dataset):
    """The need is the probe's measure of the network on the first two training images, times the batch: a hidden
    layer of 4,096 neurons over 2,000 steps keeps about 65 MB an image for the backward pass."""
    config = RunConfig(
        model="fc", batch_size=60000, net={"T": 2000, "hidden_layers": 1, "width_1": 4096, "encoding": "direct"}
    )
    need = probe(config, probe_images(dataset), dataset.classes).training_bytes(config.batch_size)
    assert need > 60000 * 2000 * 4096 * 8  # at least a charge and a spike (4 bytes each) per neuron and step
    (line,) = outcomes["batch-memory"].stderr.splitlines()
    assert (
        f"one training batch needs about {format_bytes(need)} (batch_size=60000, T=2000, encoding=direct, "
        f"hidden_layers=1, width_1=4096), more than the " in line
    ), line


def test_a_crafted_checkpoint_is_refused_without_running_its_code(outcomes, tmp_path_factory):
    assert "marker" not in outcomes["crafted-checkpoint"].after  # nothing created it
    assert "weights_only" not in outcomes["crafted-checkpoint"].stderr  # torch's seven lines of advice, left out
