"""Checkpoints: a weights-only round trip, and a resumed run that equals an unbroken one."""

from __future__ import annotations

import shutil

import pytest
import torch

from snn.checkpoint import CheckpointError, read_checkpoint
from snn.config import RunConfig
from snn.data import Dataset, make_splits
from snn.training import History, train

TIMING = {"epoch_seconds", "train_seconds", "eval_seconds", "train_images_per_s"}
SMALL = {
    "fc": dict(model="fc", net={"T": 5}, limit_train=500, limit_test=200, device="cpu"),
    "csnn": dict(model="csnn", net={"T": 2, "channels": 4}, limit_train=256, limit_test=100, device="cpu"),
    "csnn, shifted": dict(
        model="csnn", net={"T": 2, "channels": 4}, augment_shift=2, limit_train=256, limit_test=100, device="cpu"
    ),
}


def subset(dataset: Dataset, config: RunConfig) -> Dataset:
    return make_splits(dataset, limit_train=config.limit_train, limit_test=config.limit_test)


def without_timing(history: History) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history.epochs]


def save_every_epoch(folder):
    """on_epoch that keeps a copy of the checkpoint of every epoch: folder/epoch-N.pt."""

    def on_epoch(record, state):
        state.save(folder / "checkpoint.pt")
        shutil.copy(folder / "checkpoint.pt", folder / f"epoch-{record['epoch']}.pt")

    return on_epoch


@pytest.mark.parametrize("model", ["fc", "csnn", "csnn, shifted"])  # the shifts are drawn from the saved stream too
def test_resuming_after_one_epoch_matches_an_unbroken_run(dataset, tmp_path, model):
    config = RunConfig(**SMALL[model], epochs=2)
    data = subset(dataset, config)
    straight = train(config, data, on_epoch=save_every_epoch(tmp_path))
    torch.manual_seed(12345)  # whatever the process did in between does not leak into the resumed run
    weights = {}
    resumed = train(
        config,
        data,
        resume_from=tmp_path / "epoch-1.pt",
        on_epoch=lambda record, state: weights.update(state.model.state_dict()),
    )
    assert resumed.status == straight.status == "completed"
    assert without_timing(resumed) == without_timing(straight)
    for name, tensor in read_checkpoint(tmp_path / "epoch-2.pt")["model"].items():
        # and the same final weights, to float rounding: the FC-SNN's sparse Poisson matmul may round in
        # another order from one run to the next (measured: at most 7e-9 apart, metrics identical)
        assert torch.allclose(weights[name], tensor, rtol=0, atol=1e-6), name


def test_one_epoch_then_one_more_by_raising_epochs_matches_two_straight(dataset, tmp_path):
    config = RunConfig(**SMALL["fc"], epochs=2)
    data = subset(dataset, config)
    straight = train(config, data)
    first = train(config.replace(epochs=1), data, on_epoch=lambda record, state: state.save(tmp_path / "c.pt"))
    assert first.status == "completed" and len(first.epochs) == 1
    resumed = train(config, data, resume_from=tmp_path / "c.pt")
    assert resumed.status == "completed"
    assert without_timing(resumed) == without_timing(straight)


def test_checkpoint_loads_with_weights_only_and_holds_the_run(dataset, tmp_path):
    config = RunConfig(**SMALL["csnn"], epochs=1)
    history = train(config, subset(dataset, config), on_epoch=lambda record, state: state.save(tmp_path / "c.pt"))
    saved = torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1
    assert saved["config"] == config.to_dict()
    assert saved["config"]["net"] == {"T": 2, "channels": 4}
    assert RunConfig.from_dict(saved["config"]) == config
    assert saved["data"] == {"input_shape": [1, 28, 28], "classes": 10}
    assert saved["history"] == history.epochs
    assert saved["status"] == "completed"
    assert set(saved["model"]) >= {"encoder.0.weight", "encoder.1.running_mean", "fc1.weight", "fc2.weight"}
    assert saved["optimizer"]["state"], "SGD momentum buffers are saved"
    assert isinstance(saved["rng"]["shuffle"], torch.Tensor)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*")), "no temporary file left behind"


def test_resuming_a_finished_run_trains_no_more(dataset, tmp_path):
    config = RunConfig(**SMALL["fc"], epochs=1)
    data = subset(dataset, config)
    first = train(config, data, on_epoch=lambda record, state: state.save(tmp_path / "c.pt"))
    calls = []
    again = train(config, data, resume_from=tmp_path / "c.pt", on_batch=lambda *a: calls.append(a))
    assert calls == [] and again.status == "completed"
    assert again.epochs == first.epochs


def test_a_checkpoint_of_another_config_is_refused_by_field(dataset, tmp_path):
    config = RunConfig(**SMALL["fc"], epochs=1)
    train(config, subset(dataset, config), on_epoch=lambda record, state: state.save(tmp_path / "c.pt"))
    with pytest.raises(CheckpointError, match=r"saved for lr=0\.001, this run has lr=0\.01"):
        train(config.replace(lr=0.01), subset(dataset, config), resume_from=tmp_path / "c.pt")


def test_a_checkpoint_of_another_network_is_refused_by_net(dataset, tmp_path):
    config = RunConfig(**SMALL["fc"], epochs=1)
    train(config, subset(dataset, config), on_epoch=lambda record, state: state.save(tmp_path / "c.pt"))
    with pytest.raises(CheckpointError, match=r"saved for net=\{'T': 5\}, this run has net=\{'T': 6\}$"):
        train(config.with_net(T=6), subset(dataset, config), resume_from=tmp_path / "c.pt")


def test_unreadable_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint there"):
        read_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"x": torch.zeros(1), "code": print}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match=r"code\.pt: refused: it refers to print, more than tensors") as refused:
        read_checkpoint(tmp_path / "code.pt")  # weights_only refuses pickled code
    assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)  # one line, no torch advice


def a_checkpoint(**changes) -> dict:
    """The layout save_checkpoint writes (of an untrained FC-SNN), with ``changes``."""
    state = torch.get_rng_state()
    payload = {
        "model": {},
        "optimizer": {},
        "scheduler": None,
        "epoch": 1,
        "config": RunConfig(model="fc").to_dict(),
        "history": [{"epoch": 1, "test_acc": 0.5, "silent": False}],
        "status": "running",
        "data": {"input_shape": [1, 28, 28], "classes": 10},
        "rng": {"torch": state, "cuda": [], "shuffle": state.clone()},
    }
    return {**payload, **changes}


MALFORMED = {
    "history-a-number": (dict(history=5), "its history is of type int, not a list of epoch records"),
    "history-of-text": (dict(history=["epoch 1"], epoch=1), "its history's record 0 is of type str, not a mapping"),
    "record-holding-a-list": (
        dict(history=[{"epoch": 1, "test_acc": [0.5]}]),
        "its history's record 0 holds test_acc of type list, not a number, text or None",
    ),
    "epoch-not-the-history": (dict(epoch=7), "its epoch is 7 but its history holds 1 epochs"),
    "status-unknown": (dict(status="hacked"), "its status is 'hacked', not one of running, completed"),
    "rng-a-list": (dict(rng=[1, 2]), "its rng is of type list, not a mapping of generator states"),
    "data-a-list": (dict(data=[1, 28, 28]), "its data is of type list, not the image shape"),
    "data-classes-text": (dict(data={"input_shape": [1, 28, 28], "classes": "ten"}), "its data is of type dict, not"),
    "rng-state-a-float-tensor": (
        dict(rng={"torch": torch.zeros(3), "cuda": [], "shuffle": torch.get_rng_state()}),
        "its rng's torch state is a tensor of torch.float32, shape (3,), not",
    ),
    "rng-shuffle-missing": (
        dict(rng={"torch": torch.get_rng_state(), "cuda": []}),
        "its rng's shuffle state is of type NoneType",
    ),
    "rng-cuda-text": (
        dict(rng={"torch": torch.get_rng_state(), "cuda": "x", "shuffle": torch.get_rng_state()}),
        "its rng's cuda states are of type str, not a list of torch.ByteTensors",
    ),
    "config-a-list": (dict(config=[1]), "its config is of type list, not a mapping"),
    "scheduler-text": (dict(scheduler="cosine"), "its scheduler is of type str, not a mapping or None"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_checkpoint_of_the_wrong_layout_is_one_checkpoint_error(tmp_path, case):
    changes, message = MALFORMED[case]
    torch.save(a_checkpoint(**changes), tmp_path / "c.pt")
    with pytest.raises(CheckpointError) as refused:
        read_checkpoint(tmp_path / "c.pt")
    assert str(refused.value).startswith(f"{tmp_path / 'c.pt'}: not an snn-tune checkpoint: {message}")
    assert "\n" not in str(refused.value)


def test_the_layout_checked_is_the_one_a_run_writes(dataset, tmp_path):
    """A real checkpoint passes the checks, and a_checkpoint holds the same keys."""
    config = RunConfig(**SMALL["fc"], epochs=1)
    train(config, subset(dataset, config), on_epoch=lambda record, state: state.save(tmp_path / "c.pt"))
    saved = read_checkpoint(tmp_path / "c.pt")
    assert set(saved) == set(a_checkpoint()) and set(saved["rng"]) == set(a_checkpoint()["rng"])
    crafted = tmp_path / "crafted.pt"
    torch.save(a_checkpoint(), crafted)
    assert read_checkpoint(crafted)["history"] == [{"epoch": 1, "test_acc": 0.5, "silent": False}]
