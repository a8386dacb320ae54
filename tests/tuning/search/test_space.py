"""Search spaces: the shipped files load, every bad file is refused with file, key and rule."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import torch

from tuning.search.space import SPACES_DIR, SpaceError, default_space_path, load_space, with_overrides

GOOD = """
model: csnn
search:
  lr: {type: float, low: 1.0e-3, high: 0.3, log: true}
  T: {type: int, low: 2, high: 8}
  channels: {type: categorical, choices: [16, 32]}
fixed:
  batch_size: 128
budget:
  trials: 4
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("model", ["fc", "csnn"])
def test_shipped_spaces_load_into_optuna_distributions(model):
    space = load_space(default_space_path(model), model)
    assert space.model == model
    assert isinstance(space.params["lr"], optuna.distributions.FloatDistribution) and space.params["lr"].log
    assert space.budget.retrain_epochs == {"fc": 100, "csnn": 64}[model]
    assert not set(space.params) & set(space.fixed)


@pytest.mark.parametrize("path", sorted(SPACES_DIR.glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_space_file_is_valid(path):
    space = load_space(path)
    assert space.params and space.budget.trials >= 1


def test_a_good_space_gives_distributions_fixed_values_and_budget(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    assert space.params["T"] == optuna.distributions.IntDistribution(2, 8)
    assert space.params["channels"] == optuna.distributions.CategoricalDistribution([16, 32])
    assert space.fixed == {"batch_size": 128}
    assert space.budget.trials == 4 and space.budget.epochs_per_trial == 4  # the default
    config = space.config_for({"lr": 0.01, "T": 3, "channels": 16})
    assert (config.model, config.T, config.channels, config.batch_size) == ("csnn", 3, 16, 128)


BAD = {
    "yaml syntax": ("search: {lr: [1, 2\n", "YAML syntax error"),
    "unknown top key": (GOOD + "extras: 1\n", "extras: unknown key"),
    "not a config field": (GOOD.replace("T: {", "Tee: {"), "search.Tee: is not a searchable config field"),
    "low > high": (GOOD.replace("low: 1.0e-3, high: 0.3", "low: 0.1, high: 0.01"),
                   "search.lr: `low <= high` must hold, got low=0.1, high=0.01"),
    "log with low <= 0": (GOOD.replace("low: 1.0e-3", "low: 0.0"), "search.lr: log scale needs `low > 0`, got low=0.0"),
    "empty choices": (GOOD.replace("[16, 32]", "[]"), "search.channels.choices: must be a non-empty list"),
    "T <= 0": (GOOD.replace("low: 2, high: 8", "low: 0, high: 8"), "search.T: impossible value: T: must be >= 1"),
    "channels <= 0": (GOOD.replace("[16, 32]", "[0, 16]"), "search.channels: impossible value: channels: must be >= 1"),
    "fixed impossible": (GOOD.replace("batch_size: 128", "batch_size: -1"), "fixed.batch_size: impossible value"),
    "unknown param key": (GOOD.replace("high: 8}", "high: 8, step: 2}"), "search.T.step: unknown key"),
    "both searched and fixed": (GOOD.replace("batch_size: 128", "T: 4"), "search.T: is also in fixed"),
    "bad budget": (GOOD.replace("trials: 4", "trials: 0"), "budget.trials: must be an integer >= 1"),
    "wrong model": (GOOD.replace("model: csnn", "model: resnet"), "model: must be one of fc, csnn"),
    "condition on an unknown parameter": (GOOD.replace("high: 8}", "high: 8, when: {neuron: [lif]}}"),
                                          "search.T.when.neuron: names no searched parameter"),
    "condition on a numeric parameter": (GOOD.replace("high: 8}", "high: 8, when: {lr: [0.01]}}"),
                                         "search.T.when.lr: a condition must name a categorical parameter"),
    "condition on a value not among the choices": (GOOD.replace("high: 8}", "high: 8, when: {channels: [99]}}"),
                                                   "search.T.when.channels: values must be among"),
    "condition that is not a mapping": (GOOD.replace("high: 8}", "high: 8, when: channels}"),
                                        "search.T.when: must be a mapping"),
    "silence key unknown": (GOOD + "  silence: {spikes: 5}\n", "budget.silence.spikes: unknown key"),
    "silence fraction above 1": (GOOD + "  silence: {max_fraction: 1.5}\n",
                                 "budget.silence.max_fraction: must be a number in [0, 1]"),
    "silence not a mapping": (GOOD + "  silence: 5\n", "budget.silence: must be a mapping"),
    "silence accuracy above 1": (GOOD + "  silence: {max_accuracy: 1.5}\n",
                                 "budget.silence.max_accuracy: must be a number in [0, 1]"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spaces_name_the_file_the_key_and_the_rule(tmp_path, case):
    text, expected = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as error:
        load_space(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_a_space_for_another_model_is_refused(tmp_path):
    with pytest.raises(SpaceError, match="the file is for 'csnn' but the command searches 'fc'"):
        load_space(write(tmp_path, GOOD), "fc")


def test_overrides_replace_fixed_params_and_budget(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    smaller = with_overrides(space, fixed={"channels": 8, "limit_train": 100},
                             params={"T": {"type": "int", "low": 2, "high": 3}}, budget={"trials": 2})
    assert "channels" not in smaller.params and smaller.fixed["channels"] == 8
    assert smaller.params["T"] == optuna.distributions.IntDistribution(2, 3)
    assert smaller.budget.trials == 2


@pytest.mark.parametrize("flags, expected", [
    (["--space", "{bad}"], "search.lr: `low <= high` must hold"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial must be a number > 0"),
    (["--gpus-per-trial", "1.5"], "--gpus-per-trial above 1 must be a whole number"),
    (["--gpus-per-trial", "64"], "--gpus-per-trial 64 cannot be met"),
    (["--metric", "loss"], "argument --metric: invalid choice"),
    pytest.param(["--device", "cuda"], "--device cuda cannot be met: this machine has no GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_the_cli_refuses_bad_input_in_one_line_before_ray_starts(tmp_path, flags, expected):
    bad = write(tmp_path, GOOD.replace("low: 1.0e-3, high: 0.3", "low: 0.1, high: 0.01"))
    flags = [str(bad) if f == "{bad}" else f for f in flags]
    run = subprocess.run([sys.executable, "-m", "tuning.search", "csnn", "--results-dir", str(tmp_path / "r"), *flags],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "r").exists()  # nothing started, nothing written


CONDITIONAL = """
model: fc
search:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  optimizer: {type: categorical, choices: [adam, sgd]}
  momentum: {type: float, low: 0.5, high: 0.99, when: {optimizer: [sgd]}}
  neuron: {type: categorical, choices: [if, lif]}
  tau: {type: float, low: 1.2, high: 8.0, log: true, when: {neuron: [lif]}}
"""


def test_a_conditional_parameter_is_sampled_only_where_its_condition_holds(tmp_path):
    space = load_space(write(tmp_path, CONDITIONAL))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    samples = [space.sample(study.ask()) for _ in range(40)]
    for values in samples:
        assert ("momentum" in values) == (values["optimizer"] == "sgd")
        assert ("tau" in values) == (values["neuron"] == "lif")
    assert {v["optimizer"] for v in samples} == {"adam", "sgd"} and {v["neuron"] for v in samples} == {"if", "lif"}
    assert space.describe()["tau"]["when"] == {"neuron": ["lif"]}
    assert load_space(write(tmp_path, CONDITIONAL)).conditions == with_overrides(space, budget={"trials": 2}).conditions


def test_the_seed_point_holds_the_seeds_values_of_the_parameters_it_uses(tmp_path):
    point, outside = load_space(write(tmp_path, CONDITIONAL)).seed_point()
    assert point == {"lr": 1e-3, "optimizer": "adam", "neuron": "lif", "tau": 2.0} and outside == []
    assert load_space(write(tmp_path, GOOD)).seed_point()[1] == ["channels=64"]  # C 64 is not among [16, 32]


@pytest.mark.parametrize("path", sorted(SPACES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_holds_the_seed_configuration(path):
    assert load_space(path).seed_point()[1] == []


def test_the_silence_rule_is_firmins_by_default_configurable_and_can_be_turned_off(tmp_path):
    assert load_space(write(tmp_path, GOOD)).budget.silence == {}
    tuned = load_space(write(tmp_path, GOOD + "  silence: {min_spikes: 2, max_fraction: 0.1, max_accuracy: 1}\n"))
    assert tuned.budget.silence == {"min_spikes": 2, "max_fraction": 0.1, "max_accuracy": 1}
    assert load_space(write(tmp_path, GOOD + "  silence: off\n")).budget.silence is None
