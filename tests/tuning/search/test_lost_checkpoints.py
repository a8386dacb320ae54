"""A search killed between Ray Tune deleting a trial's older checkpoint and saving the state that names the newer
one: --resume continues the trial from its newest checkpoint and reports the epochs Ray never saw, once."""

from __future__ import annotations

import json
import shutil

import pytest

from snn.config import RunConfig
from snn.data import make_splits
from snn.run_folder import CHECKPOINT_FILE
from snn.training import train
from tuning.search import trial
from tuning.search.trial import RAY_EPOCHS_FILE, recover_lost_checkpoints


@pytest.fixture(scope="module")
def epochs(dataset, tmp_path_factory):
    """A tiny run's checkpoint after each of its 3 epochs."""
    folder = tmp_path_factory.mktemp("epochs")
    config = RunConfig(model="fc", net={"T": 4}, epochs=3, limit_train=128, limit_test=64, device="cpu")
    data = make_splits(dataset, limit_train=128, limit_test=64, device="cpu")
    train(config, data, silence=None, on_epoch=lambda record, state: state.save(folder / f"{record['epoch']}.pt"))
    return folder


def ray_trial(tune, trial_id: str, status: str, epoch: int, checkpoint: str) -> list[str]:
    (tune / f"trainable_{trial_id}").mkdir()
    return [
        json.dumps({"trial_id": trial_id, "status": status, "relative_logdir": f"trainable_{trial_id}"}),
        json.dumps({"last_result": {"epoch": epoch, "checkpoint_dir_name": checkpoint}}),
    ]


def put(tune, trial_id: str, name: str, content) -> None:
    (tune / f"trainable_{trial_id}" / name).mkdir()
    target = tune / f"trainable_{trial_id}" / name / CHECKPOINT_FILE
    shutil.copyfile(content, target) if not isinstance(content, bytes) else target.write_bytes(content)


def test_a_trial_whose_named_checkpoint_is_gone_gets_its_newest_readable_one_under_that_name(tmp_path, epochs):
    tune = tmp_path / "tune"
    tune.mkdir()
    trials = [
        ray_trial(tune, "lost", "RUNNING", 1, "checkpoint_000000"),  # Ray saw epoch 1; epoch 2's checkpoint is there
        ray_trial(tune, "fine", "PENDING", 2, "checkpoint_000001"),
        ray_trial(tune, "done", "TERMINATED", 1, "checkpoint_000000"),
    ]
    put(tune, "lost", "checkpoint_000001", epochs / "2.pt")
    put(tune, "lost", "checkpoint_000002", b"half a checkpoint")  # an upload the kill cut short
    put(tune, "fine", "checkpoint_000001", epochs / "2.pt")
    put(tune, "done", "checkpoint_000001", epochs / "3.pt")
    (tune / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": []}))  # older
    (tune / "experiment_state-2026-01-01_00-00-09.json").write_text(json.dumps({"trial_data": trials}))

    assert recover_lost_checkpoints(tune) == ["lost"]
    lost = tune / "trainable_lost"
    assert sorted(p.name for p in lost.iterdir()) == ["checkpoint_000000"]
    assert (lost / "checkpoint_000000" / CHECKPOINT_FILE).read_bytes() == (epochs / "2.pt").read_bytes()
    assert json.loads((lost / "checkpoint_000000" / RAY_EPOCHS_FILE).read_text()) == {"epochs": 1}
    assert sorted(p.name for p in (tune / "trainable_fine").iterdir()) == ["checkpoint_000001"]
    assert sorted(p.name for p in (tune / "trainable_done").iterdir()) == ["checkpoint_000001"]  # never restored
    assert recover_lost_checkpoints(tune) == []  # once


def test_the_epochs_ray_never_saw_are_reported_again_in_order_the_last_with_the_checkpoint(
    tmp_path, epochs, monkeypatch
):
    reported = []
    monkeypatch.setattr(
        trial.tune,
        "report",
        lambda metrics, checkpoint=None: reported.append(
            (
                metrics["epoch"],
                metrics["node_id"],
                checkpoint and (checkpoint.path, open(f"{checkpoint.path}/{CHECKPOINT_FILE}", "rb").read()),
            )
        ),
    )
    folder = tmp_path / "checkpoint_000000"
    folder.mkdir()
    shutil.copyfile(epochs / "3.pt", folder / CHECKPOINT_FILE)
    saved = trial.read_checkpoint(folder / CHECKPOINT_FILE)
    trial._report_what_ray_lost(saved, folder / CHECKPOINT_FILE, "node")
    assert reported == []  # no marker: Ray saw every epoch the checkpoint holds
    (folder / RAY_EPOCHS_FILE).write_text(json.dumps({"epochs": 1}))
    trial._report_what_ray_lost(saved, folder / CHECKPOINT_FILE, "node")
    assert [(epoch, node) for epoch, node, _ in reported] == [(2, "node"), (3, "node")]
    assert reported[0][2] is None and reported[1][2][1] == (epochs / "3.pt").read_bytes()


def test_the_installed_ray_saves_its_trials_as_the_recovery_reads_them(tmp_path):
    """Ray Tune's experiment_state-*.json (checked with Ray 2.60): ``trial_data`` holds each trial's
    ``get_json_state()``, whose fields the recovery reads; a result names its checkpoint by CHECKPOINT_DIR_NAME."""
    import ray
    from ray.train.constants import CHECKPOINT_DIR_NAME
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

    moved = f"the installed Ray ({ray.__version__}) saves its trials otherwise than {trial.RAY_STATE_CHECKED}: update tuning/search/trial.py"
    assert TuneController.CKPT_FILE_TMPL == "experiment_state-{}.json", moved
    assert CHECKPOINT_DIR_NAME == trial.CHECKPOINT_DIR_NAME, moved
    ray_trial = Trial("trainable", stub=True, trial_id="abc")
    ray_trial.run_metadata.last_result = {"epoch": 2, CHECKPOINT_DIR_NAME: "checkpoint_000001"}
    entry = ray_trial.get_json_state()
    assert trial._named_checkpoint(tmp_path, *entry) == ("abc", "PENDING", None, "checkpoint_000001", 2), moved
    (tmp_path / "experiment_state-x.json").write_text(json.dumps({"trial_data": [list(entry)]}))
    assert recover_lost_checkpoints(tmp_path) == []  # a trial not started yet has no folder: nothing to recover


def test_a_state_of_another_layout_is_one_warning_and_ray_left_to_restore_as_it_does(tmp_path, capsys):
    (tmp_path / "experiment_state-x.json").write_text(json.dumps({"trial_data": [["{}", "{}"]]}))
    assert recover_lost_checkpoints(tmp_path) == []
    (line,) = capsys.readouterr().err.splitlines()
    assert "no longer has the layout checked against Ray 2.60" in line
