"""``python -m snn.train``: result files, resume, --config files, and one-line errors with exit code 2."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import snn.training
from snn.config import RunConfig
from snn.train import main
from tests.bad_input import REPO
from tests.idx_files import write_synthetic_dataset

TINY = ["--T", "3", "--epochs", "1", "--limit-train", "300", "--limit-test", "200", "--device", "cpu", "--quiet"]
METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "train_images_per_s"]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Each test runs in its own folder: a default --out (results/runs/...) or a default data folder (./data) that
    a broken check let through lands there, not in the repository."""
    monkeypatch.chdir(tmp_path)


def snn_train(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "SNN_DATA_DIR"}, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "snn.train", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or Path.cwd(),
        timeout=300,
    )


def read_metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_a_run_writes_config_metrics_and_checkpoint_then_resumes(data_root, tmp_path):
    out = tmp_path / "run"
    result = snn_train("fc", *TINY, "--data-dir", data_root, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "epoch   1/1" in result.stdout and "best test acc" in result.stdout

    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["net"], config["epochs"], config["limit_train"]) == ("fc", {"T": 3}, 1, 300)
    assert RunConfig.from_dict(config) == RunConfig(
        model="fc", net={"T": 3}, epochs=1, limit_train=300, limit_test=200, device="cpu"
    )
    rows = read_metrics(out)
    assert len(rows) == 1
    assert list(rows[0])[:3] == ["epoch", "train_loss", "train_acc"]
    assert set(METRIC_COLUMNS) <= set(rows[0])
    assert rows[0]["epoch"] == "1" and 0 <= float(rows[0]["test_acc"]) <= 1
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["config"] == config
    assert saved["data"] == {"input_shape": [1, 28, 28], "classes": 10}
    first_row = (out / "metrics.csv").read_text().splitlines()[1]

    result = snn_train(
        "--out", out, "--resume", "--epochs", "2", "--quiet", "--data-dir", data_root
    )  # the model is saved
    assert result.returncode == 0, result.stderr
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert (out / "metrics.csv").read_text().splitlines()[1] == first_row, "epoch 1 is kept as it was"
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_an_unknown_flag_is_one_line_and_exit_2(tmp_path):
    result = snn_train("fc", "--learning-rate", "0.1", "--out", tmp_path / "run")
    assert_one_line_error(result, "unrecognized arguments: --learning-rate")
    assert not (tmp_path / "run").exists()


def test_a_bad_value_is_one_line_and_exit_2(tmp_path):
    result = snn_train("fc", "--tau", "0.5", "--out", tmp_path / "run")
    assert_one_line_error(result, "tau: must be > 1", "0.5")
    assert not (tmp_path / "run").exists()


def test_missing_data_is_one_line_naming_folder_and_files_and_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = snn_train("fc", *TINY, "--data-dir", empty, "--no-download", "--out", tmp_path / "run")
    assert_one_line_error(
        result,
        str(empty / "MNIST" / "raw"),
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    assert not (tmp_path / "run").exists(), "nothing is written before the data is read"


def test_an_existing_out_without_resume_is_refused_and_left_untouched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("epoch,test_acc\n1,0.5\n")
    (out / "config.json").write_text("{}\n")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    result = snn_train("fc", *TINY, "--out", out)
    assert_one_line_error(result, str(out), "--resume")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before


# In-process (same code path as the command, without paying the import of torch again).


def run_main(capsys, *args: str | Path) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_resume_without_a_checkpoint_is_exit_2(capsys, tmp_path):
    code, _, err = run_main(capsys, "fc", "--out", tmp_path / "none", "--resume")
    assert code == 2 and "no checkpoint at" in err and len(err.splitlines()) == 1


def test_resume_refuses_a_changed_config_field(capsys, tmp_path, data_root):
    out = tmp_path / "run"
    assert main(["fc", *TINY, "--data-dir", str(data_root), "--out", str(out)]) == 0
    code, _, err = run_main(capsys, "fc", "--out", out, "--resume", "--lr", "0.5", "--data-dir", data_root)
    assert code == 2 and "only --epochs may change" in err and "lr=0.001" in err
    code, _, err = run_main(capsys, "csnn", "--out", out, "--resume", "--data-dir", data_root)
    assert code == 2 and "model='fc'" in err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads((out / "config.json").read_text()), "net": {"T": 5}}))
    code, _, err = run_main(capsys, "--config", other, "--out", out, "--resume", "--data-dir", data_root)
    assert code == 2 and "it has net={'T': 3} (only --epochs may change)" in err
    code, _, err = run_main(capsys, "--out", out, "--resume", "--T", "4", "--data-dir", data_root)
    assert code == 2 and "it has net={'T': 3} (only --epochs may change)" in err
    assert len(read_metrics(out)) == 1


def test_a_diverged_run_exits_1_with_one_line(capsys, tmp_path, data_root, monkeypatch):
    monkeypatch.setattr(snn.training, "make_optimizer", lambda config, params: torch.optim.SGD(params, lr=float("inf")))
    code, _, err = run_main(capsys, "fc", *TINY, "--data-dir", data_root, "--out", tmp_path / "run")
    assert code == 1 and err.strip().startswith("diverged at epoch 1") and len(err.splitlines()) == 1
    assert len(read_metrics(tmp_path / "run")) == 1, "the diverged epoch is recorded"


def test_a_silent_run_exits_1_with_one_line_naming_the_rule(capsys, tmp_path, data_root):
    code, out, err = run_main(
        capsys,
        "fc",
        "--data-dir",
        data_root,
        "--lr",
        "1e-9",
        "--T",
        "8",
        "--limit-train",
        "12800",
        "--limit-test",
        "100",
        "--epochs",
        "2",
        "--out",
        tmp_path / "quiet",
        "--quiet",
    )
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("silent: after 80 batches the output layer emitted fewer than") and "Firmin" in err
    assert len(read_metrics(tmp_path / "quiet")) == 1  # stopped in the first epoch
    assert err.strip().endswith("(--no-silence-stop trains on regardless)")


def test_no_silence_stop_trains_a_silent_network_every_epoch(capsys, tmp_path, data_root):
    args = ("fc", "--data-dir", data_root, "--lr", "1e-9", "--T", "8", "--limit-train", "12800", "--limit-test", "100")
    assert main([*map(str, args), "--epochs", "2", "--out", str(tmp_path / "on"), "--quiet", "--no-silence-stop"]) == 0
    metrics = read_metrics(tmp_path / "on")
    assert len(metrics) == 2 and [row["silent"] for row in metrics] == ["False", "False"]
    assert all(0 <= float(row["test_acc"]) <= 1 for row in metrics)  # evaluated, as every epoch of an unstopped run


def test_fashion_mnist_is_read_from_its_own_folder(capsys, tmp_path):
    write_synthetic_dataset(tmp_path / "data", folder="FashionMNIST")
    out = tmp_path / "run"
    assert (
        main(["fc", "--dataset", "fashion-mnist", *TINY, "--data-dir", str(tmp_path / "data"), "--out", str(out)]) == 0
    )
    assert "fc on fashion-mnist: 300 train / 200 test images" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["dataset"] == "fashion-mnist"
    code, _, err = run_main(
        capsys, "fc", *TINY, "--data-dir", tmp_path / "data", "--no-download", "--out", tmp_path / "mnist-run"
    )  # MNIST is not there
    assert code == 2 and str(tmp_path / "data" / "MNIST" / "raw") in err


def test_missing_fashion_mnist_names_its_folder(capsys, tmp_path):
    code, _, err = run_main(
        capsys, "fc", "--dataset", "fashion-mnist", "--data-dir", tmp_path, "--no-download", "--out", tmp_path / "run"
    )
    assert code == 2 and str(tmp_path / "FashionMNIST" / "raw") in err and "t10k-images-idx3-ubyte" in err


# --config FILE: a saved RunConfig (best_config.json, OUT/config.json), flags on top.


def config_file(path: Path, **changes) -> Path:
    """A config JSON as a search's best_config.json holds it: every field of a tiny CPU run."""
    values = RunConfig(
        model="fc", net={"T": 3}, epochs=1, limit_train=300, limit_test=200, device="cpu", lr=2e-3
    ).to_dict()
    path.write_text(json.dumps({**values, **changes}))
    return path


def test_a_config_file_is_the_run_and_flags_beside_it_override_its_fields(capsys, tmp_path, data_root):
    best = config_file(tmp_path / "best_config.json")
    out = tmp_path / "run"
    assert main(["--config", str(best), "--T", "4", "--quiet", "--data-dir", str(data_root), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text()) == {**json.loads(best.read_text()), "net": {"T": 4}}
    # a run's own config.json reruns it; the model may be given when it is the file's
    again = tmp_path / "again"
    assert (
        main(["fc", "--config", str(out / "config.json"), "--quiet", "--data-dir", str(data_root), "--out", str(again)])
        == 0
    )
    assert (again / "config.json").read_text() == (out / "config.json").read_text()


def test_a_config_file_without_some_fields_takes_their_defaults(capsys, tmp_path, data_root):
    partial = tmp_path / "partial.json"
    partial.write_text(
        '{"model": "csnn", "T": 2, "channels": 4, "epochs": 1, "batch_size": 32, "limit_train": 64, "limit_test": 32}'
    )
    out = tmp_path / "run"
    assert (
        main(["--config", str(partial), "--device", "cpu", "--quiet", "--data-dir", str(data_root), "--out", str(out)])
        == 0
    )
    saved = json.loads((out / "config.json").read_text())
    assert (saved["net"], saved["optimizer"], saved["lr"]) == ({"T": 2, "channels": 4}, "sgd", 0.1)  # the CSNN seed's


def test_a_model_other_than_the_files_is_one_line_and_exit_2(capsys, tmp_path):
    best = config_file(tmp_path / "best_config.json")
    code, _, err = run_main(capsys, "csnn", "--config", best, "--out", tmp_path / "run")
    assert code == 2 and len(err.splitlines()) == 1
    assert f"model csnn does not match {best}, which has model 'fc'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot be read (No such file or directory)"),
        ('{"model": "fc", "T": 3,', "not JSON (Expecting"),
        ("[1, 2]", "holds an array, expected a JSON object of config fields"),
        (
            '{"model": "fc", "learning_rate": 0.1}',
            "learning_rate: is neither a trainer setting (a RunConfig field: "
            "python -m snn.train --help) nor a parameter of fc(T, tau, neuron, ",
        ),
        ('{"model": "fc", "tau": 0.5}', "tau: must be > 1 (spikingjelly's LIF rule), got 0.5"),
        ('{"model": "fc", "net": {"tau": 0.5}}', "tau: must be > 1 (spikingjelly's LIF rule), got 0.5"),
        ('{"model": "fc", "T": "20"}', "T: must be an integer, got '20'"),
        ('{"model": "fc", "net": {"channels": 4}}', "channels: is not a parameter of fc(T, tau, "),
        ('{"model": "fc", "net": [3]}', "net: must be an object of the network's parameters, got [3]"),
        (
            '{"model": "fc", "input_shape": [1, 28, 28]}',
            "input_shape: comes from the data (the images' shape and the labels), not from a config",
        ),
        ('{"model": "fc", "lr": 0}', "lr: must be > 0, got 0"),
        ('{"model": "resnet"}', "model 'resnet': must be one of fc, csnn or package.module:function"),
        ('{"T": 20}', "has no model field"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_it_and_exit_2(capsys, tmp_path, content, fragment):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run_main(capsys, "--config", path, "--out", tmp_path / "run")
    assert code == 2 and len(err.splitlines()) == 1 and out == ""
    assert err.startswith(f"python -m snn.train: error: {path}: ") and fragment in err, err
    assert not (tmp_path / "run").exists(), "nothing is written"


def test_a_bad_config_file_from_the_command_line_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "best_config.json").write_text("not json")
    result = snn_train("--config", tmp_path / "best_config.json", "--out", tmp_path / "run")
    assert_one_line_error(result, f"{tmp_path / 'best_config.json'}: not JSON")
    assert not (tmp_path / "run").exists()


def test_a_bad_flag_beside_a_good_file_names_the_flags_field(capsys, tmp_path):
    code, _, err = run_main(
        capsys, "--config", config_file(tmp_path / "c.json"), "--tau", "0.5", "--out", tmp_path / "run"
    )
    assert code == 2 and "tau: must be > 1 (spikingjelly's LIF rule), got 0.5" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_neither_model_nor_config_is_one_line_and_exit_2(capsys, tmp_path):
    code, _, err = run_main(capsys, "--out", tmp_path / "run")
    assert code == 2 and "give a model (fc, csnn or package.module:function) or --config FILE" in err
    assert len(err.splitlines()) == 1


# The network's flags come from its factory's signature.


@pytest.mark.parametrize(
    ("model", "flags", "absent"),
    [
        ("fc", ["--T", "--tau", "--neuron", "--encoding", "--hidden-layers", "--width-1", "--width-3"], "--blocks"),
        (
            "csnn",
            ["--T", "--channels", "--channels-1", "--blocks", "--kernel-size", "--fc-width", "--dropout"],
            "--hidden-layers",
        ),
    ],
)
def test_help_lists_the_factorys_parameters_as_flags(capsys, model, flags, absent):
    code, out, _ = run_main(capsys, model, "--help")
    assert code == 0
    for flag in (*flags, "--lr", "--batch-size", "--output-layer"):
        assert f"  {flag} " in out, flag
    assert absent not in out
    assert "--input-shape" not in out and "--classes" not in out, "the data gives them"


def test_network_flags_reach_the_saved_config(capsys, tmp_path, data_root):
    out = tmp_path / "run"
    assert (
        main(
            [
                "fc",
                *TINY,
                "--hidden-layers",
                "1",
                "--width-1",
                "7",
                "--encoding",
                "direct",
                "--data-dir",
                str(data_root),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["net"] == {"T": 3, "hidden_layers": 1, "width_1": 7, "encoding": "direct"}
    weights = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert tuple(weights["fc1.weight"].shape) == (7, 784) and tuple(weights["fc.weight"].shape) == (10, 7)


def test_a_config_file_takes_net_and_flat_network_parameters_side_by_side(capsys, tmp_path, data_root):
    both = tmp_path / "both.json"
    both.write_text(
        '{"model": "fc", "net": {"T": 2}, "tau": 3.0, "epochs": 1, "batch_size": 32, "limit_train": 64, "limit_test": 32}'
    )
    out = tmp_path / "run"
    assert (
        main(["--config", str(both), "--device", "cpu", "--quiet", "--data-dir", str(data_root), "--out", str(out)])
        == 0
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["net"] == {"T": 2, "tau": 3.0} and saved["epochs"] == 1


def test_a_bad_network_flag_is_one_line_and_writes_nothing(capsys, tmp_path):
    code, out, err = run_main(capsys, "csnn", "--kernel-size", "4", "--out", tmp_path / "run")
    assert (code, out) == (2, "") and len(err.splitlines()) == 1
    assert err == "python -m snn.train: error: kernel_size: must be one of 3, 5, got 4\n"
    assert not (tmp_path / "run").exists()
