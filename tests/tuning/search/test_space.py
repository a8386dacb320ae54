"""Search spaces: the shipped files load, every bad file is refused with file, key and rule."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import torch

from tuning.search.space import SpaceError, default_space_path, load_space, shipped_spaces, with_overrides

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


@pytest.mark.parametrize("path", sorted(shipped_spaces().values()), ids=lambda p: p.name)
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
    assert (config.model, config.net, config.lr, config.batch_size) == ("csnn", {"T": 3, "channels": 16}, 0.01, 128)


BAD = {
    "yaml syntax": ("search: {lr: [1, 2\n", "YAML syntax error"),
    "unknown top key": (GOOD + "extras: 1\n", "extras: unknown key"),
    "not a config field": (
        GOOD.replace("T: {", "Tee: {"),
        "search.Tee: is neither a trainer setting (a RunConfig "
        "field: python -m snn.train --help) nor a parameter of "
        "csnn(T, channels, channels_1",
    ),
    "data from the data": (GOOD.replace("T: {", "classes: {"), "search.classes: comes from the data"),
    "a run's name": (GOOD.replace("batch_size: 128", "seed: 3"), "fixed.seed: names the run, not a hyperparameter"),
    "dataset in fixed": (
        GOOD.replace("batch_size: 128", "dataset: kmnist"),
        "fixed.dataset: the dataset is the top-level data: key",
    ),
    "unknown data": (
        GOOD + "data: imagenet\n",
        "data: must be one of mnist, fashion-mnist, kmnist, cifar10 or package.module:function, got 'imagenet'",
    ),
    "unimportable model": (
        GOOD.replace("model: csnn", "model: nowhere.to_be:found"),
        "model: model nowhere.to_be:found: cannot import nowhere.to_be",
    ),
    "kernel size": (
        GOOD.replace("T: {type: int, low: 2, high: 8}", "kernel_size: {type: categorical, choices: [3, 4]}"),
        "search.kernel_size: impossible value: kernel_size: must be one of 3, 5, got 4",
    ),
    "too many blocks": (
        GOOD.replace("T: {type: int, low: 2, high: 8}", "blocks: {type: int, low: 1, high: 4}"),
        "search.blocks: impossible value: blocks: must be <= 3, got 4",
    ),
    "low > high": (
        GOOD.replace("low: 1.0e-3, high: 0.3", "low: 0.1, high: 0.01"),
        "search.lr: `low <= high` must hold, got low=0.1, high=0.01",
    ),
    "log with low <= 0": (GOOD.replace("low: 1.0e-3", "low: 0.0"), "search.lr: log scale needs `low > 0`, got low=0.0"),
    "empty choices": (GOOD.replace("[16, 32]", "[]"), "search.channels.choices: must be a non-empty list"),
    "T <= 0": (GOOD.replace("low: 2, high: 8", "low: 0, high: 8"), "search.T: impossible value: T: must be >= 1"),
    "channels <= 0": (GOOD.replace("[16, 32]", "[0, 16]"), "search.channels: impossible value: channels: must be >= 1"),
    "fixed impossible": (GOOD.replace("batch_size: 128", "batch_size: -1"), "fixed.batch_size: impossible value"),
    "unknown param key": (GOOD.replace("high: 8}", "high: 8, step: 2}"), "search.T.step: unknown key"),
    "both searched and fixed": (GOOD.replace("batch_size: 128", "T: 4"), "search.T: is also in fixed"),
    "bad budget": (GOOD.replace("trials: 4", "trials: 0"), "budget.trials: must be an integer >= 1"),
    "wrong model": (
        GOOD.replace("model: csnn", "model: resnet"),
        "model: must be one of fc, csnn or package.module:function, got 'resnet'",
    ),
    "condition on an unknown parameter": (
        GOOD.replace("high: 8}", "high: 8, when: {neuron: [lif]}}"),
        "search.T.when.neuron: names no searched parameter",
    ),
    "condition on a float parameter": (
        GOOD.replace("high: 8}", "high: 8, when: {lr: [0.01]}}"),
        "search.T.when.lr: a condition must name a categorical or integer parameter",
    ),
    "condition on a value outside an integer's range": (
        GOOD.replace(
            "channels: {type: categorical, choices: [16, 32]}",
            "channels: {type: categorical, choices: [16, 32], when: {T: [9]}}",
        ),
        "search.channels.when.T: values must be among T's range [2, 8], got [9]",
    ),
    "condition on a value not among the choices": (
        GOOD.replace("high: 8}", "high: 8, when: {channels: [99]}}"),
        "search.T.when.channels: values must be among",
    ),
    "condition that is not a mapping": (
        GOOD.replace("high: 8}", "high: 8, when: channels}"),
        "search.T.when: must be a mapping",
    ),
    "cases by an unknown parameter": (
        GOOD.replace("T: {type: int, low: 2, high: 8}", "T: {by: neuron, cases: {if: {type: int, low: 2, high: 4}}}"),
        "search.T.by: must name a searched parameter (one of lr, channels), got 'neuron'",
    ),
    "cases by a float parameter": (
        GOOD.replace("T: {type: int, low: 2, high: 8}", "T: {by: lr, cases: {0.1: {type: int, low: 2, high: 4}}}"),
        "search.T.by: must name a categorical or integer parameter",
    ),
    "a case that is not a value of by": (
        GOOD.replace("T: {type: int, low: 2, high: 8}", "T: {by: channels, cases: {24: {type: int, low: 2, high: 4}}}"),
        "search.T.cases.24: is not a value of channels ([16, 32])",
    ),
    "a case outside an integer's range": (
        GOOD.replace(
            "channels: {type: categorical, choices: [16, 32]}",
            "channels: {by: T, cases: {9: {type: categorical, choices: [16, 32]}}}",
        ),
        "search.channels.cases.9: is not a value of T ([2, 8])",
    ),
    "a case with a bad range": (
        GOOD.replace("T: {type: int, low: 2, high: 8}", "T: {by: channels, cases: {16: {type: int, low: 4, high: 2}}}"),
        "search.T.cases.16: `low <= high` must hold",
    ),
    "cases by choices that read the same as text": (
        GOOD.replace("[16, 32]", "['1', 1]").replace(
            "T: {type: int, low: 2, high: 8}", "T: {by: channels, cases: {1: {type: int, low: 2, high: 4}}}"
        ),
        "search.T.by: channels's choices ['1', 1] read the same as text",
    ),
    "a case with a condition": (
        GOOD.replace(
            "T: {type: int, low: 2, high: 8}",
            "T: {by: channels, cases: {16: {type: int, low: 2, high: 4, when: {channels: [16]}}}}",
        ),
        "search.T.cases.16.when: a case is a range: type and its bounds or choices",
    ),
    "cases of two types": (
        GOOD.replace(
            "T: {type: int, low: 2, high: 8}",
            "T: {by: channels, cases: {16: {type: int, low: 2, high: 4}, 32: {type: categorical, choices: [2]}}}",
        ),
        "search.T.cases: every case must have the same type",
    ),
    "cases with a when of their own": (
        GOOD.replace(
            "T: {type: int, low: 2, high: 8}",
            "T: {by: channels, cases: {16: {type: int, low: 2, high: 4}}, when: {channels: [32]}}",
        ),
        "search.T.when: follows from the cases ({'channels': [16]}), got {'channels': [32]}; leave it out",
    ),
    "a case with an impossible value": (
        GOOD.replace("T: {type: int, low: 2, high: 8}", "T: {by: channels, cases: {16: {type: int, low: 0, high: 4}}}"),
        "search.T: impossible value: T: must be >= 1",
    ),
    "a condition on a parameter with cases": (
        GOOD.replace(
            "T: {type: int, low: 2, high: 8}", "T: {by: channels, cases: {16: {type: int, low: 2, high: 4}}}"
        ).replace("fixed:", "  dropout: {type: float, low: 0.0, high: 0.5, when: {T: [2]}}\nfixed:"),
        "search.dropout.when.T: a condition must name a parameter without a condition of its own",
    ),
    "silence key unknown": (GOOD + "  silence: {spikes: 5}\n", "budget.silence.spikes: unknown key"),
    "silence fraction above 1": (
        GOOD + "  silence: {max_fraction: 1.5}\n",
        "budget.silence.max_fraction: must be a number in [0, 1]",
    ),
    "silence not a mapping": (GOOD + "  silence: 5\n", "budget.silence: must be a mapping"),
    "silence accuracy above 1": (
        GOOD + "  silence: {max_accuracy: 1.5}\n",
        "budget.silence.max_accuracy: must be a number in [0, 1]",
    ),
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
    smaller = with_overrides(
        space,
        fixed={"channels": 8, "limit_train": 100},
        params={"T": {"type": "int", "low": 2, "high": 3}},
        budget={"trials": 2},
    )
    assert "channels" not in smaller.params and smaller.fixed["channels"] == 8
    assert smaller.params["T"] == optuna.distributions.IntDistribution(2, 3)
    assert smaller.budget.trials == 2


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--space", "{bad}"], "search.lr: `low <= high` must hold"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial must be a number > 0"),
        (["--gpus-per-trial", "1.5"], "--gpus-per-trial above 1 must be a whole number"),
        (["--gpus-per-trial", "64"], "--gpus-per-trial 64 cannot be met"),
        (["--metric", "loss"], "argument --metric: invalid choice"),
        pytest.param(
            ["--device", "cuda"],
            "--device cuda cannot be met: this machine has no GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
    ],
)
def test_the_cli_refuses_bad_input_in_one_line_before_ray_starts(tmp_path, flags, expected):
    bad = write(tmp_path, GOOD.replace("low: 1.0e-3, high: 0.3", "low: 0.1, high: 0.01"))
    flags = [str(bad) if f == "{bad}" else f for f in flags]
    run = subprocess.run(
        [sys.executable, "-m", "tuning.search", "csnn", "--results-dir", str(tmp_path / "r"), *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
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


CASES = """
model: csnn
search:
  optimizer: {type: categorical, choices: [sgd, adam, adamw]}
  lr:
    by: optimizer
    cases:
      sgd: {type: float, low: 0.01, high: 0.3, log: true}
      adam: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  blocks: {type: int, low: 2, high: 3}
  fc_width:
    by: blocks
    cases:
      2: {type: categorical, choices: [512, 1024]}
      3: {type: categorical, choices: [256]}
"""


def test_a_parameter_by_another_takes_its_cases_range_each_its_own_optuna_parameter(tmp_path):
    """lr per optimizer: TPE models each case apart (lr[optimizer=sgd]); no case (adamw) leaves lr at its default."""
    space = load_space(write(tmp_path, CASES))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    samples = []
    for _ in range(60):
        trial = study.ask()
        values = space.sample(trial)
        samples.append((values, dict(trial.distributions)))
    assert {v["optimizer"] for v, _ in samples} == {"sgd", "adam", "adamw"}
    for values, distributions in samples:
        if values["optimizer"] == "adamw":
            assert "lr" not in values and not any(name.startswith("lr") for name in distributions)
        else:
            name = f"lr[optimizer={values['optimizer']}]"
            low, high = {"sgd": (0.01, 0.3), "adam": (1e-4, 1e-2)}[values["optimizer"]]
            assert low <= values["lr"] <= high and distributions[name].low == low and distributions[name].log
        width = distributions[f"fc_width[blocks={values['blocks']}]"]
        assert list(width.choices) == ([512, 1024] if values["blocks"] == 2 else [256])
        assert values["fc_width"] in width.choices
        assert "lr" not in distributions and "fc_width" not in distributions
    assert space.config_for(samples[0][0]).net["fc_width"] == samples[0][0]["fc_width"]


def test_a_parameter_by_another_keeps_the_seed_point_and_its_description_loads_back(tmp_path):
    """The seed's SGD 0.1 sits in the sgd case and is enqueued under the case's name; describe() (summary.json,
    a resume's state) loads back to the same space, its int keys read back from JSON's strings."""
    space = load_space(write(tmp_path, CASES))
    point, outside = space.seed_point()
    assert outside == [] and point["lr"] == 0.1 and point["fc_width"] == 1024
    enqueued = space.optuna_point(point)
    assert enqueued["lr[optimizer=sgd]"] == 0.1 and enqueued["fc_width[blocks=2]"] == 1024 and "lr" not in enqueued
    described = json.loads(json.dumps(space.describe()))
    assert described["lr"]["low"] == 1e-4 and described["lr"]["high"] == 0.3  # the hull, for one-range readers
    assert described["lr"]["when"] == {"optimizer": ["sgd", "adam"]} and set(described["fc_width"]["cases"]) == {
        "2",
        "3",
    }
    again = with_overrides(space, budget={"trials": 2})
    assert again.cases == space.cases and again.conditions == space.conditions
    study = optuna.create_study()
    study.enqueue_trial(enqueued)
    assert space.sample(study.ask()) == point
    assert space.corner(max)["fc_width"] == 256  # the largest trial: 3 blocks, whose only width is 256


def test_a_plain_override_of_a_parameter_with_cases_narrows_each_case(tmp_path):
    """--preset smoke gives fc's lr one range: each optimizer keeps its own Optuna parameter, with that range."""
    space = load_space(write(tmp_path, CASES))
    smoke = with_overrides(space, params={"lr": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True}})
    other, cases = smoke.cases["lr"]
    assert other == "optimizer" and set(cases) == {"sgd", "adam"}
    assert all((d.low, d.high, d.log) == (1e-3, 2e-2, True) for d in cases.values())
    assert smoke.cases["fc_width"] == space.cases["fc_width"]


def test_a_space_pickled_before_cases_existed_still_samples(tmp_path):
    """A search's searcher is pickled with its space (its sample method); one pickled by an older version has no
    cases field, and a resume must still sample from it."""
    space = load_space(write(tmp_path, CONDITIONAL))
    state = dict(space.__dict__)
    del state["cases"]
    old = object.__new__(type(space))
    old.__dict__.update(state)
    restored = pickle.loads(pickle.dumps(old))
    values = restored.sample(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask())
    assert restored.cases == {} and set(values) >= {"lr", "optimizer", "neuron"}


FAMILY = """
model: csnn
search:
  blocks: {type: int, low: 1, high: 3}
  channels_1: {type: categorical, choices: [16, 64]}
  channels_2: {type: categorical, choices: [16, 64], when: {blocks: [2, 3]}}
  channels_3: {type: categorical, choices: [16, 64], when: {blocks: [3]}}
  fc_width: {type: categorical, choices: [256, 1024]}
"""


def test_a_width_is_sampled_only_for_the_blocks_that_exist(tmp_path):
    """Conditions on an integer depth, define-by-run: TPE never sees a block's channels that were not used."""
    space = load_space(write(tmp_path, FAMILY))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    samples = [space.sample(study.ask()) for _ in range(60)]
    assert {v["blocks"] for v in samples} == {1, 2, 3}
    for values in samples:
        assert ("channels_2" in values) == (values["blocks"] >= 2)
        assert ("channels_3" in values) == (values["blocks"] == 3)
        config = space.config_for(values)
        assert config.net["blocks"] == values["blocks"] and "channels_3" not in config.net or values["blocks"] == 3


def test_the_seed_point_of_a_family_is_the_seed_network_with_its_defaults_spelled_out(tmp_path):
    """The seed CSNN's channels_1/channels_2 (unset: channels, 64) and fc_width (unset: 16 x 64) are its values."""
    point, outside = load_space(write(tmp_path, FAMILY)).seed_point()
    assert point == {"blocks": 2, "channels_1": 64, "channels_2": 64, "fc_width": 1024} and outside == []


def test_a_factory_of_your_own_takes_its_signatures_parameters(tmp_path, monkeypatch):
    module = tmp_path / "my_nets.py"
    module.write_text("def tiny(input_shape, classes, width=32, T=2):\n    raise NotImplementedError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    space = load_space(
        write(
            tmp_path,
            """
        model: my_nets:tiny
        search:
          width: {type: int, low: 8, high: 64}
          lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
        fixed:
          T: 3
        """,
        )
    )
    config = space.config_for({"width": 16, "lr": 0.002})
    assert (config.model, config.net, config.lr, config.optimizer) == (
        "my_nets:tiny",
        {"T": 3, "width": 16},
        0.002,
        "adam",
    )
    assert space.seed_point() == ({"width": 32, "lr": 1e-3}, [])  # the factory's defaults, the trainer's
    with pytest.raises(
        SpaceError,
        match=r"search.depth: is neither a trainer setting .* nor a parameter of "
        r"my_nets:tiny\(width, T\)",
    ):
        load_space(write(tmp_path, "model: my_nets:tiny\nsearch:\n  depth: {type: int, low: 1, high: 2}\n"))


EVIDENCE_SPACES = sorted((Path(__file__).parents[3] / "benchmarks").glob("*.yaml"))  # docs/evidence.md's


@pytest.mark.parametrize("path", sorted(shipped_spaces().values()) + EVIDENCE_SPACES, ids=lambda p: p.name)
def test_every_shipped_space_holds_the_seed_configuration(path):
    assert load_space(path).seed_point()[1] == []


def test_the_silence_rule_is_firmins_by_default_configurable_and_can_be_turned_off(tmp_path):
    assert load_space(write(tmp_path, GOOD)).budget.silence == {}
    tuned = load_space(write(tmp_path, GOOD + "  silence: {min_spikes: 2, max_fraction: 0.1, max_accuracy: 1}\n"))
    assert tuned.budget.silence == {"min_spikes": 2, "max_fraction": 0.1, "max_accuracy": 1}
    assert load_space(write(tmp_path, GOOD + "  silence: off\n")).budget.silence is None
