"""`python -m tuning.search` on bad input: one line on stderr, exit code 2, nothing written or changed.

Every cause runs once, all of them in one module fixture, three at a time (most end before Ray
starts, within seconds); each test then checks its own cause.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from snn.data import FILES
from tests.bad_input import Case, assert_refused, run_cases
from tests.idx_files import write_bytes
from tuning import experiment as files

SEARCH = "tuning.search"
OUT = ("--results-dir", "{case}/results", "--no-dashboard")  # every case's own results folder


def results(folder: Path) -> None:
    (folder / "results").mkdir()


def space_file(text: bytes) -> callable:
    def setup(folder: Path) -> None:
        results(folder)
        (folder / "space.yaml").write_bytes(text)

    return setup


def an_experiment(*, state: bytes | None = None, settings: dict | None = None, tune: bool = True) -> callable:
    """results/exp as an interrupted search leaves it: search.json, tune/tuner.pkl (here a harmless pickle)
    and a study with a trial (without tune/ nor a trial the search never began, and --resume begins it).
    ``state`` replaces search.json; ``settings`` changes some of its settings."""

    def setup(folder: Path) -> None:
        from tuning.search.inputs import _settings_from_args, _space_from_args, build_parser
        from tuning.search.state import _save_state

        experiment = folder / "results" / "exp"
        experiment.mkdir(parents=True)
        args = build_parser().parse_args(["fc", "--preset", "smoke"])
        space = _space_from_args(args)
        _save_state(experiment, space, _settings_from_args(args, space))
        if state is not None:
            (experiment / files.STATE).write_bytes(state)
        if settings is not None:
            saved = json.loads((experiment / files.STATE).read_text())
            saved["settings"].update(settings)
            (experiment / files.STATE).write_text(json.dumps(saved))
        import optuna

        journal = optuna.storages.journal.JournalFileBackend(str(experiment / files.STUDY))
        optuna.create_study(study_name="exp", storage=optuna.storages.JournalStorage(journal)).ask()
        if tune:
            (experiment / files.TUNE).mkdir()
            (experiment / files.TUNE / "tuner.pkl").write_bytes(b"\x80\x04N.")  # pickle of None

    return setup


def a_file_named_results(folder: Path) -> None:
    (folder / "results").write_text("not a folder\n")


def images_of_32_by_32(folder: Path) -> None:
    """A data root whose training images' IDX header declares 60,000 images of 32x32."""
    results(folder)
    raw = folder / "data" / "MNIST" / "raw"
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (60_000, 32, 32))
    write_bytes(raw / FILES["train_images"], header + bytes(32 * 32))
    for key in ("train_labels", "test_images", "test_labels"):
        write_bytes(raw / FILES[key], b"")


class NotRay:
    """A TCP port that accepts connections and never answers (a GCS that hangs)."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.socket.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for connection in self.held:
            connection.close()
        self.socket.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, data_root):
    not_ray, busy = NotRay(), socket.create_server(("127.0.0.1", 0))
    cases = {
        "seed-negative": Case(SEARCH, ("fc", *OUT, "--seed", "-1"), "--seed must be in [0, 2**32 - 1]", results),
        "seed-too-large": Case(SEARCH, ("fc", *OUT, "--seed", str(2**32)), "--seed must be in [0, 2**32 - 1]", results),
        "gpus-nan": Case(SEARCH, ("fc", *OUT, "--gpus-per-trial", "nan"), "--gpus-per-trial must be", results),
        "cpus-nan": Case(SEARCH, ("fc", *OUT, "--cpus-per-trial", "nan"), "--cpus-per-trial must be", results),
        "trials-zero": Case(SEARCH, ("fc", *OUT, "--trials", "0"), "--trials must be an integer >= 1, got 0", results),
        "reduction-one": Case(SEARCH, ("fc", *OUT, "--reduction-factor", "1"), "--reduction-factor must be", results),
        "grace-beyond-epochs": Case(
            SEARCH,
            ("fc", *OUT, "--epochs-per-trial", "2", "--grace-period", "3"),
            "got --grace-period 3 > --epochs-per-trial 2",
            results,
        ),
        "grace-beyond-space": Case(
            SEARCH,
            ("fc", *OUT, "--preset", "smoke", "--grace-period", "4"),
            "got --grace-period 4 > --preset smoke's epochs_per_trial 3",
            results,
        ),
        "name-parent": Case(SEARCH, ("fc", *OUT, "--name", "../escape"), "--name '../escape': is a path", results),
        "name-nested": Case(SEARCH, ("fc", *OUT, "--name", "a/b"), "--name 'a/b': is a path", results),
        "name-absolute": Case(SEARCH, ("fc", *OUT, "--name", "{case}/abs"), "is a path", results),
        "name-dots": Case(SEARCH, ("fc", *OUT, "--name", ".."), "names no folder", results),
        "dashboard-port-range": Case(
            SEARCH,
            ("fc", "--results-dir", "{case}/results", "--dashboard-port", "99999"),
            "--dashboard-port must be a port number in [1, 65535]",
            results,
        ),
        "dashboard-port-taken": Case(
            SEARCH,
            (
                "fc",
                "--results-dir",
                "{case}/results",
                "--preset",
                "smoke",
                "--dashboard-port",
                str(busy.getsockname()[1]),
            ),
            "cannot listen on 127.0.0.1",
            results,
        ),
        "address-malformed": Case(
            SEARCH, ("fc", *OUT, "--address", "10.0.0.1:1"), "--address must be HOST:PORT", results
        ),
        "address-nobody": Case(
            SEARCH,
            ("fc", *OUT, "--preset", "smoke", "--address", f"127.0.0.1:{closed_port()}"),
            "no Ray cluster there (Connection refused)",
            results,
        ),
        "address-silent": Case(
            SEARCH,
            ("fc", *OUT, "--preset", "smoke", "--address", f"127.0.0.1:{not_ray.port}", "--join-timeout", "4"),
            "did not answer within 4 s",
            results,
        ),
        "results-dir-a-file": Case(
            SEARCH,
            ("fc", "--results-dir", "{case}/results", "--no-dashboard"),
            "results is a file, not a folder",
            a_file_named_results,
        ),
        "results-dir-under-a-file": Case(
            SEARCH,
            ("fc", "--results-dir", "{case}/results/deeper", "--no-dashboard"),
            "results is a file, not a folder",
            a_file_named_results,
        ),
        "results-dir-unwritable": Case(
            SEARCH,
            ("fc", "--results-dir", "/proc/snn-tune/results", "--no-dashboard"),
            "no file can be written in /proc",
            results,
        ),
        "space-not-utf8": Case(
            SEARCH,
            ("fc", *OUT, "--space", "{case}/space.yaml"),
            "not UTF-8 text",
            space_file(b"model: fc\nsearch:\n  lr: {type: float, low: 0.001, high: 0.1}\n# caf\xe9\n"),
        ),
        "space-nan-fixed": Case(
            SEARCH,
            ("fc", *OUT, "--space", "{case}/space.yaml"),
            "fixed.surrogate_alpha: impossible value: surrogate_alpha: must be a finite number",
            space_file(
                b"model: fc\nsearch:\n  lr: {type: float, low: 0.001, high: 0.1}\nfixed:\n  surrogate_alpha: .nan\n"
            ),
        ),
        "space-nan-bound": Case(
            SEARCH,
            ("fc", *OUT, "--space", "{case}/space.yaml"),
            "search.lr.high: must be a number",
            space_file(b"model: fc\nsearch:\n  lr: {type: float, low: 0.001, high: .nan}\n"),
        ),
        "space-nan-choice": Case(
            SEARCH,
            ("fc", *OUT, "--space", "{case}/space.yaml"),
            "must be a finite number",
            space_file(b"model: fc\nsearch:\n  lr: {type: categorical, choices: [0.01, .nan]}\n"),
        ),
        "space-warns-then-fails": Case(
            SEARCH,
            ("fc", *OUT, "--space", "{case}/space.yaml"),
            "search.lr: impossible value: lr: must be a number, got [1, 2]",
            space_file(b"model: fc\nsearch:\n  lr: {type: categorical, choices: [[1, 2], 0.1]}\n"),
        ),
        "space-T-too-large": Case(
            SEARCH,
            ("fc", *OUT, "--space", "{case}/space.yaml"),
            "the largest trial of this space: one training batch does not fit: 2 images of it "
            "(T=1000000000) already need more than the",
            space_file(b"model: fc\nsearch:\n  T: {type: int, low: 2, high: 1000000000}\n"),
        ),
        "space-shift-off-the-frame": Case(
            SEARCH,
            ("csnn", *OUT, "--space", "{case}/space.yaml"),
            "the largest trial of this space: augment_shift 28 moves a 28x28 image off its frame: it must be below 28",
            space_file(b"model: csnn\nsearch:\n  augment_shift: {type: int, low: 0, high: 28}\n"),
        ),
        "space-channels-too-large": Case(
            SEARCH,
            ("csnn", *OUT, "--space", "{case}/space.yaml"),
            "(channels=1000000) already need more than the",
            space_file(b"model: csnn\nsearch:\n  channels: {type: categorical, choices: [8, 1000000]}\n"),
        ),
        "idx-32x32": Case(
            SEARCH, ("fc", *OUT, "--data-dir", "{case}/data"), "images of 32x32, expected 28x28", images_of_32_by_32
        ),
        "resume-nothing": Case(SEARCH, ("fc", *OUT, "--name", "exp", "--resume"), "holds no search to resume", results),
        "resume-damaged-state": Case(
            SEARCH,
            ("fc", *OUT, "--name", "exp", "--resume"),
            "search.json is damaged",
            an_experiment(state=b'{"space": {"model": "fc", "sear'),
        ),
        "resume-state-missing-keys": Case(
            SEARCH,
            ("fc", *OUT, "--name", "exp", "--resume"),
            "search.json is damaged (KeyError",
            an_experiment(state=b'{"space": {}}'),
        ),
        "resume-state-nested-deep": Case(
            SEARCH,
            ("fc", *OUT, "--name", "exp", "--resume"),
            "search.json is damaged (RecursionError: nested deeper than Python can read)",
            an_experiment(state=b"[" * 100_000 + b"]" * 100_000),
        ),
        "resume-state-metric-a-path": Case(
            SEARCH,
            ("fc", *OUT, "--name", "exp", "--resume"),
            "search.json is damaged (metric: must be one of test_acc, val_acc, got '../../../tmp/evil')",
            an_experiment(settings={"metric": "../../../tmp/evil"}),
        ),
        "resume-state-seed-negative": Case(
            SEARCH,
            ("fc", *OUT, "--name", "exp", "--resume"),
            "search.json is damaged (seed: must be an integer in [0, 2**32 - 1], got -5)",
            an_experiment(settings={"seed": -5}),
        ),
        "resume-state-cpus-text": Case(
            SEARCH,
            ("fc", *OUT, "--name", "exp", "--resume"),
            "search.json is damaged (cpus_per_trial: must be a finite number > 0, got 'all')",
            an_experiment(settings={"cpus_per_trial": "all"}),
        ),
        "resume-state-other-model": Case(
            SEARCH,
            ("fc", *OUT, "--name", "exp", "--resume"),
            "search.json is damaged (ValueError: its settings are for 'csnn' but the command resumes 'fc')",
            an_experiment(settings={"model": "csnn"}),
        ),
        "resume-without-tune": Case(
            SEARCH, ("fc", *OUT, "--name", "exp", "--resume"), "tune/tuner.pkl is missing", an_experiment(tune=False)
        ),
    }
    try:
        yield cases, run_cases(cases, tmp_path_factory.mktemp("bad-input"), {"SNN_DATA_DIR": str(data_root)})
    finally:
        not_ray.close()
        busy.close()


CAUSES = [
    "seed-negative",
    "seed-too-large",
    "gpus-nan",
    "cpus-nan",
    "trials-zero",
    "reduction-one",
    "grace-beyond-epochs",
    "grace-beyond-space",
    "name-parent",
    "name-nested",
    "name-absolute",
    "name-dots",
    "dashboard-port-range",
    "dashboard-port-taken",
    "address-malformed",
    "address-nobody",
    "address-silent",
    "results-dir-a-file",
    "results-dir-under-a-file",
    "results-dir-unwritable",
    "space-not-utf8",
    "space-nan-fixed",
    "space-nan-bound",
    "space-nan-choice",
    "space-warns-then-fails",
    "space-T-too-large",
    "space-shift-off-the-frame",
    "space-channels-too-large",
    "idx-32x32",
    "resume-nothing",
    "resume-damaged-state",
    "resume-state-missing-keys",
    "resume-state-nested-deep",
    "resume-state-metric-a-path",
    "resume-state-seed-negative",
    "resume-state-cpus-text",
    "resume-state-other-model",
    "resume-without-tune",
]


def test_every_cause_is_listed(outcomes):
    cases, _ = outcomes
    assert sorted(cases) == sorted(CAUSES)


@pytest.mark.parametrize("cause", CAUSES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(outcomes, cause):
    cases, results_ = outcomes
    assert_refused(results_[cause], cases[cause].fragment)


def test_a_budget_flag_is_blamed_not_the_space_file(outcomes):
    _, results_ = outcomes
    assert ".yaml" not in results_["trials-zero"].stderr


def test_a_silent_cluster_is_given_up_within_the_join_timeout(outcomes):
    _, results_ = outcomes
    assert "Failed to connect" not in results_["address-silent"].stderr  # Ray's own retry log is held back
