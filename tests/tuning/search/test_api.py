"""A network of your own through the search: the Python API (callable factories, tensors, typed errors, two
searches in one process) and the command line (the examples), with SynOps held against spikingjelly's counter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
import torch

from snn.data import DataError, read_dataset
from snn.errors import SnnTuneError
from snn.networks import NetworkError
from tests.snn.factories import tiny
from tests.snn.test_accounting import assert_agrees_with_spikingjelly
from tests.tuning.helpers import REPO
from tuning import load_network
from tuning.search import InputError, SpaceError, run

SPACE = {
    "search": {"width": {"type": "int", "low": 1, "high": 3}},
    "fixed": {"T": 2, "lr": 0.01},
    "budget": {"trials": 2, "epochs_per_trial": 1, "grace_period": 1, "reduction_factor": 2, "retrain_epochs": 1},
}


def small_tensors(dataset, n_train=600, n_test=200):
    return (
        (dataset.train.images[:n_train], dataset.train.labels[:n_train]),
        (dataset.test.images[:n_test], dataset.test.labels[:n_test]),
    )


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"model": tiny, "space": {**SPACE, "search": {"widht": {"type": "int", "low": 1, "high": 2}}}},
            SpaceError,
            "search.widht: is neither a trainer setting",
        ),
        ({"model": "nowhere.at_all:net", "space": SPACE}, SpaceError, "cannot import nowhere.at_all"),
        (
            {"model": lambda input_shape, classes, width=1, T=2: "no network", "space": SPACE},
            NetworkError,
            "the factory returned a str, not a torch.nn.Module",
        ),
        (
            {
                "model": tiny,
                "space": SPACE,
                "data": (
                    (torch.zeros(5, 1, 4, 4), torch.zeros(4, dtype=torch.long)),
                    (torch.zeros(5, 1, 4, 4), torch.zeros(5, dtype=torch.long)),
                ),
            },
            DataError,
            "5 train images but 4 labels",
        ),
        ({"model": tiny, "space": {**SPACE, "fixed": {"loss": "nll"}}}, SpaceError, "loss: must be one of mse, ce"),
        ({"model": tiny, "space": SPACE, "objective": "accuracy,joules"}, InputError, "use accuracy, accuracy,synops"),
        ({"model": tiny, "space": SPACE, "trials": 0}, InputError, "--trials must be an integer >= 1"),
    ],
)
def test_bad_input_from_python_raises_a_typed_error_before_anything_is_written(
    tmp_path, dataset, kwargs, error, message
):
    kwargs.setdefault("data", small_tensors(dataset))
    with pytest.raises(error, match=message) as raised:
        run(results_dir=tmp_path / "results", name="bad", **kwargs)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "results").exists()
    assert issubclass(error, SnnTuneError)  # the one base class of bad input


def test_two_searches_of_a_callable_on_tensors_run_one_after_the_other_in_one_process(tmp_path, dataset):
    results, environment = [], dict(os.environ)
    for objective in ("accuracy", "accuracy,synops"):
        results.append(
            run(
                SPACE,
                model=tiny,
                data=small_tensors(dataset),
                objective=objective,
                retrain_seeds=1,
                results_dir=tmp_path,
                report=False,
                name=f"search-{objective.replace(',', '-')}",
            )
        )
    assert (
        dict(os.environ) == environment
    )  # PYTHONPATH (the factory's folder), RAY_TMPDIR, Ray Tune's switches: the search's own
    first, second = results
    for result in results:
        assert result.summary["status"] == "complete" and len(result.trials) == 2
        assert result.best_config["model"] == "tests.snn.factories:tiny"
        assert set(result.best_config["net"]) == {"T", "width"}
        assert 0 <= result.retrain["final_test_acc_mean"] <= 1
        assert result.summary["data"] == {
            "name": "data",
            "input_shape": [1, 28, 28],
            "classes": 10,
            "train_images": 600,
            "test_images": 200,
        }
    assert first.pareto is None and len(second.pareto) >= 1
    model, config = load_network(second.folder)
    assert config.net == second.best_config["net"] and model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_a_learning_rate_per_optimizer_reaches_the_trials_the_study_and_the_report(tmp_path, dataset):
    """lr by optimizer: each trial's lr lies in its optimizer's case, Optuna's study knows each case as its own
    parameter, the seed's Adam 1e-3 is trial 0 (enqueued under lr[optimizer=adam]), the report says the cases."""
    space = {
        "search": {
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "lr": {
                "by": "optimizer",
                "cases": {
                    "adam": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "sgd": {"type": "float", "low": 0.05, "high": 0.3, "log": True},
                },
            },
        },
        "fixed": {"T": 2, "width": 2},
        "budget": {**SPACE["budget"], "trials": 4},
    }
    result = run(space, model=tiny, data=small_tensors(dataset), results_dir=tmp_path, name="cases", retrain_seeds=1)
    trials = result.trials
    assert len(trials) == 4
    cases = {"adam": (1e-4, 1e-2), "sgd": (0.05, 0.3)}
    for optimizer, lr in zip(trials["config/optimizer"], trials["config/lr"], strict=True):
        assert cases[optimizer][0] <= lr <= cases[optimizer][1]
    seed = trials[trials["seed_trial"]].iloc[0]
    assert (seed["config/optimizer"], seed["config/lr"]) == ("adam", 1e-3)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(result.folder / "optuna.journal"))
    )
    study = optuna.load_study(study_name="cases", storage=storage)
    names = {name for trial in study.trials for name in trial.params}
    assert "lr[optimizer=adam]" in names and names <= {"optimizer", "lr[optimizer=adam]", "lr[optimizer=sgd]"}
    assert study.trials[0].params["lr[optimizer=adam]"] == 1e-3
    page = (result.folder / "report.html").read_text(encoding="utf-8")
    assert "by optimizer: adam: float in [0.0001, 0.01], log scale; sgd: float in [0.05, 0.3], log scale" in page


def command(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=timeout,
    )


@pytest.mark.parametrize("example, integer_fed", [("deep_fc", ()), ("sew_resnet", ("fc",))])
def test_an_example_network_searched_from_the_command_line_counts_as_spikingjelly_does(
    tmp_path, data_root, example, integer_fed
):
    """The examples' searches on the synthetic digits (or MNIST) through the command line; the retrained network's
    SynOps on test images agree with spikingjelly's counter (a SEW block's summed spike trains: an all-ones conv)."""
    searched = command(
        "-m",
        "tuning.search",
        f"examples.{example}.net:build",
        "--space",
        f"examples/{example}/space.yaml",
        "--preset",
        "smoke",
        "--trials",
        "2",
        "--epochs-per-trial",
        "1",
        "--retrain-epochs",
        "1",
        "--results-dir",
        tmp_path,
        "--name",
        example,
        "--no-dashboard",
        "--no-report",
        env={"SNN_DATA_DIR": str(data_root)},
    )
    assert searched.returncode == 0, searched.stdout[-2000:] + searched.stderr[-2000:]
    summary = json.loads((tmp_path / example / "summary.json").read_text())
    assert summary["model"] == f"examples.{example}.net:build" and summary["status"] == "complete"
    model, _ = load_network(tmp_path / example)
    with torch.no_grad():  # the retrained network barely fires after one epoch: wake it for the comparison
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    images = read_dataset(data_root, download=False).test.float_images(slice(0, 4))
    assert_agrees_with_spikingjelly(model, images, integer_fed=integer_fed)


def test_the_python_example_script_runs_two_searches(tmp_path, data_root):
    ran = command("examples/search_from_python.py", "--results-dir", tmp_path, env={"SNN_DATA_DIR": str(data_root)})
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert ran.stdout.count("retrained test accuracy") == 2 and len(list(tmp_path.iterdir())) == 2
