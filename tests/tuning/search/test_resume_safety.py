"""--resume works on the experiment folder alone, and never unpickles what someone else could have written.

* A copy of an interrupted experiment resumes into itself: the original's files stay byte for byte
  as they were (Ray's OptunaSearch used to pickle the journal's absolute path).
* A tune/tuner.pkl that would run code when unpickled is refused, before anything is unpickled,
  when the folder or the file could have been written by anyone but the user.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.bad_input import Case, RunsCodeWhenUnpickled, assert_refused, run_cases
from tests.tuning.helpers import FAULTY_SEARCH, search_command, start_search
from tests.tuning.search.faulty_search import SLOW_ENV
from tests.tuning.search.kill import kill_search
from tests.tuning.search.test_resume_and_failures import QUICK, finished_in_study
from tuning import experiment as files


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_copied_experiment_resumes_into_the_copy_and_leaves_the_original_as_it_was(tmp_path, data_root):
    trials = 4
    # the trial function of faulty_search (Ray resumes only with the same one), its first trials at least
    # 3 s long (1 s more an epoch), so the kill lands before the search can finish
    process = start_search(search_command("fc", tmp_path, "orig", *QUICK, "--trials", str(trials),
                                          module=FAULTY_SEARCH), data_root, tmp_path / "first.log", **{SLOW_ENV: "1"})
    deadline = time.time() + 300
    while len(finished_in_study(tmp_path / "orig", "orig")) < 2 and time.time() < deadline:
        assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.5)
    kill_search(process)  # the command, its Ray and the trial workers (in groups of their own)
    before = {t.number: t for t in finished_in_study(tmp_path / "orig", "orig")}
    assert 2 <= len(before) < trials
    shutil.copytree(tmp_path / "orig", tmp_path / "copy", symlinks=True)
    original = digests(tmp_path / "orig")

    resumed = start_search(search_command("fc", tmp_path, "copy", *QUICK, "--trials", str(trials), "--resume",
                                          module=FAULTY_SEARCH), data_root, tmp_path / "second.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]

    assert digests(tmp_path / "orig") == original  # not a byte written to the original
    after = {t.number: t for t in finished_in_study(tmp_path / "copy", "orig")}  # the study keeps its first name
    assert len(after) == trials  # every trial is in the copy's own journal
    for number, trial in before.items():
        assert after[number].state == trial.state and after[number].value == trial.value
        assert after[number].intermediate_values == trial.intermediate_values
    table = pd.read_csv(tmp_path / "copy" / "trials.csv")
    assert len(table) == trials and set(table["status"]) == {"TERMINATED"}


def test_the_searchers_pickles_hold_no_journal_path_and_reopen_the_resumed_experiments_journal(tmp_path):
    """No Ray cluster: the searcher's state is saved in one folder and restored into a copy."""
    import optuna

    from tests.tuning.search.test_searcher import new_searcher, run_trial
    from tuning.search.searcher import resuming_into

    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    journal = optuna.storages.journal.JournalFileBackend(str(original / files.STUDY))
    searcher = new_searcher(storage=optuna.storages.JournalStorage(journal), study_name="original")
    run_trial(searcher, "a", epochs=4)
    searcher.suggest("b")  # a trial still running when the search stopped
    searcher.on_trial_result("b", {"epoch": 1, "training_iteration": 1, "test_acc": 0.5})
    searcher.save(str(original / "searcher-state.pkl"))
    state = (original / "searcher-state.pkl").read_bytes()
    assert str(original).encode() not in state and str(original).encode() not in pickle.dumps(searcher)
    shutil.copytree(original, copy)
    before = digests(original)

    restored = pickle.loads(pickle.dumps(searcher))  # as Tuner.restore reads tune/tuner.pkl, outside resuming_into
    assert restored.study is None  # the study stays closed rather than open the original's journal
    with resuming_into(copy):
        restored = pickle.loads(pickle.dumps(searcher))
        restored.restore(str(copy / "searcher-state.pkl"))
    restored.on_trial_result("b", {"epoch": 2, "training_iteration": 2, "test_acc": 0.6})
    restored.on_trial_complete("b", {"epoch": 2, "training_iteration": 2, "test_acc": 0.6})
    run_trial(restored, "c", epochs=4)

    assert digests(original) == before
    study = optuna.load_study(study_name="original", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(copy / files.STUDY))))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert study.trials[1].intermediate_values == {1: 0.5, 2: 0.6}  # the running trial went on where it was


# --- a crafted tuner.pkl -------------------------------------------------------------------------

def crafted_experiment(folder: Path) -> Path:
    """results/exp: a valid search.json and a tune/tuner.pkl whose unpickling creates folder/marker."""
    from tuning.search.inputs import _settings_from_args, _space_from_args, build_parser
    from tuning.search.state import _save_state

    experiment = folder / "results" / "exp"
    (experiment / files.TUNE).mkdir(parents=True)
    args = build_parser().parse_args(["fc", "--preset", "smoke"])
    space = _space_from_args(args)
    _save_state(experiment, space, _settings_from_args(args, space))
    (experiment / files.TUNE / "tuner.pkl").write_bytes(pickle.dumps(RunsCodeWhenUnpickled(folder / "marker")))
    return experiment


def writable_by_others(folder: Path) -> None:
    crafted_experiment(folder).joinpath(files.TUNE, "tuner.pkl").chmod(0o666)


def folder_writable_by_others(folder: Path) -> None:
    crafted_experiment(folder).joinpath(files.TUNE).chmod(0o777)


def group_writable(folder: Path) -> None:
    import grp

    experiment = crafted_experiment(folder)
    os.chown(experiment / files.TUNE / "tuner.pkl", -1, grp.getgrnam("nogroup").gr_gid)
    (experiment / files.TUNE / "tuner.pkl").chmod(0o664)


def owned_by_someone_else(folder: Path) -> None:
    os.chown(crafted_experiment(folder) / files.TUNE / "tuner.pkl", 65534, -1)


def a_symbolic_link(folder: Path) -> None:
    experiment = crafted_experiment(folder)
    (experiment / files.TUNE / "tuner.pkl").rename(folder / "elsewhere.pkl")
    (experiment / files.TUNE / "tuner.pkl").symlink_to(folder / "elsewhere.pkl")


def parent_writable_by_others(folder: Path) -> None:
    crafted_experiment(folder)
    (folder / "results").chmod(0o777)  # without the sticky bit: anyone could swap exp for another folder


def parent_writable_by_a_group(folder: Path) -> None:
    import grp

    crafted_experiment(folder)
    os.chown(folder / "results", -1, grp.getgrnam("nogroup").gr_gid)
    (folder / "results").chmod(0o775)


RESUME = ("fc", "--results-dir", "{case}/results", "--name", "exp", "--resume", "--no-dashboard")
CRAFTED = {
    "file-writable-by-others": Case("tuning.search", RESUME, "tuner.pkl is writable by others", writable_by_others),
    "folder-writable-by-others": Case("tuning.search", RESUME, "tune is writable by others",
                                      folder_writable_by_others),
    "a-symbolic-link": Case("tuning.search", RESUME, "tuner.pkl is a symbolic link", a_symbolic_link),
    "parent-writable-by-others": Case("tuning.search", RESUME, "is writable by others and has no sticky bit",
                                      parent_writable_by_others),
}
if os.geteuid() == 0:  # only root can give a file to another user or group
    CRAFTED["owned-by-someone-else"] = Case("tuning.search", RESUME, "tuner.pkl belongs to user",
                                            owned_by_someone_else)
    CRAFTED["group-writable"] = Case("tuning.search", RESUME, "tuner.pkl is writable by the group nogroup",
                                     group_writable)
    CRAFTED["parent-writable-by-a-group"] = Case("tuning.search", RESUME, "is writable by the group nogroup and",
                                                 parent_writable_by_a_group)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory, data_root):
    return run_cases(CRAFTED, tmp_path_factory.mktemp("crafted"), {"SNN_DATA_DIR": str(data_root)})


@pytest.mark.parametrize("cause", sorted(CRAFTED))
def test_a_crafted_tuner_pickle_is_refused_and_never_unpickled(crafted, cause):
    assert_refused(crafted[cause], CRAFTED[cause].fragment)
    assert "marker" not in crafted[cause].after  # the payload did not run


def test_the_crafted_pickle_does_run_code_when_unpickled(tmp_path):
    """The payload the refusals are tested with is live: plain unpickling runs it."""
    pickle.loads(pickle.dumps(RunsCodeWhenUnpickled(tmp_path / "marker")))
    assert (tmp_path / "marker").exists()
