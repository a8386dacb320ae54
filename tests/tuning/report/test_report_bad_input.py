"""`python -m tuning.report` on crafted or broken folders: a note in the page where a file could not be read,
one line and exit 2 where no page can be written, and memory bounded by what the search writes."""

from __future__ import annotations

import html
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.tuning.helpers import REPO
from tuning.report.build import SECTIONS, build_report
from tuning.report.folder import MAX_PREDICTION_BYTES


def page_text(path: Path) -> str:
    """The page's text as a reader sees it (entities decoded)."""
    return html.unescape(path.read_text())


def missing_count(path: Path) -> int:
    return int(re.search(r'data-missing-count="(\d+)"', path.read_text()).group(1))


def figure_count(path: Path) -> int:
    return int(re.search(r'data-figure-count="(\d+)"', path.read_text()).group(1))


def edit_summary(folder: Path, **fields: object) -> None:
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(fields)
    (folder / "summary.json").write_text(json.dumps(summary))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def lr_by_optimizer(cases) -> dict:
    """summary.json's spec of an lr searched by optimizer, with the given cases."""
    return {"type": "float", "low": 0.1, "high": 1, "by": "optimizer", "cases": cases}


# summary.json: (the change, written as JSON text where JSON cannot say it, and the note it must leave)
SUMMARY_CASES = {
    "wall-seconds-text": (
        {"wall_seconds": "soon"},
        "summary.json: wall_seconds is 'soon', not a finite number of seconds; not shown",
    ),
    "wall-seconds-nan": ('"wall_seconds": NaN', "summary.json: wall_seconds is nan, not a finite number of seconds"),
    "wall-seconds-infinite": ('"wall_seconds": Infinity', "summary.json: wall_seconds is inf, not a finite number"),
    "wall-seconds-negative": ({"wall_seconds": -5}, "summary.json: wall_seconds is -5, not a finite number"),
    "accuracy-text": ("retrain-text", "summary.json: retrain is {'epochs': 2, 'seeds': [0, 1], 'max_test_acc': "),
    "space-a-list": ({"space": ["lr", "tau"]}, "summary.json: space is ['lr', 'tau'], not searched parameters"),
    "space-bounds-text": ({"space": {"lr": {"type": "float", "low": "a", "high": 1}}}, "summary.json: space is"),
    "space-cases-a-list": ({"space": {"lr": lr_by_optimizer([0.1])}}, "summary.json: space is"),
    "space-case-with-a-condition": (
        {"space": {"lr": lr_by_optimizer({"sgd": {"type": "float", "low": 0.1, "high": 1, "when": {"a": [1]}}})}},
        "summary.json: space is",
    ),
    "space-case-bounds-text": (
        {"space": {"lr": lr_by_optimizer({"sgd": {"type": "float", "low": "a", "high": 1}})}},
        "summary.json: space is",
    ),
    "trials-text": ({"trials": "eight"}, "summary.json: trials is 'eight', not counts of trials (numbers)"),
    "best-trial-a-list": ({"best_trial": ["t0003"]}, "summary.json: best_trial is ['t0003'], not a trial_id with"),
    "budget-a-number": ({"budget": 5}, "summary.json: budget is 5, not a budget of numbers"),
    "model-a-list": ({"model": ["fc"]}, "summary.json: model is ['fc'], not text"),
    "versions-nested": ({"versions": {"torch": {"x": 1}}}, "summary.json: versions is {'torch': {'x': 1}}"),
    "nested-100000-deep": ("nested", "summary.json is unreadable (nested deeper than Python can read)"),
}


def crafted_summary(folder: Path, case: str) -> None:
    change, _ = SUMMARY_CASES[case]
    if change == "nested":
        (folder / "summary.json").write_text(nested(100_000))
    elif change == "retrain-text":
        summary = json.loads((folder / "summary.json").read_text())
        summary["retrain"]["final_test_acc_mean"] = "99%"
        (folder / "summary.json").write_text(json.dumps(summary))
    elif isinstance(change, str):  # JSON's NaN and Infinity, which json.dumps writes too
        text = (folder / "summary.json").read_text()
        (folder / "summary.json").write_text(re.sub(r'"wall_seconds": [^,]+', change, text))
    else:
        edit_summary(folder, **change)


@pytest.mark.parametrize("case", sorted(SUMMARY_CASES))
def test_a_summary_field_of_the_wrong_type_is_a_note_and_the_rest_is_reported(finished_experiment, case, capsys):
    crafted_summary(finished_experiment, case)
    path = build_report(finished_experiment)
    text = page_text(path)
    assert SUMMARY_CASES[case][1] in text
    assert figure_count(path) == len(SECTIONS)  # every figure still drawn from the other files
    assert "Traceback" not in capsys.readouterr().err


def test_a_text_accuracy_in_summary_json_is_replaced_by_the_retrains_own_metrics(finished_experiment):
    crafted_summary(finished_experiment, "accuracy-text")
    card = re.search(r'<div class="card">(.*?)</div>', page_text(build_report(finished_experiment)), re.S).group(1)
    assert "2 seed(s) (0, 1)" in card and "99%" not in card


def test_the_header_shows_what_it_could_read_when_wall_seconds_is_broken(finished_experiment):
    crafted_summary(finished_experiment, "wall-seconds-nan")
    text = page_text(build_report(finished_experiment))
    assert "<th>Wall time</th><td>unknown</td>" in text and "t0003: test_acc 90.50%" in text


# --- retrain/predictions.npz --------------------------------------------------------------------


def npy(
    array: np.ndarray | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: str = "<i8",
    data: bytes | None = None,
) -> bytes:
    """An .npy file: ``array``'s, or a header declaring ``shape`` and ``dtype`` followed by ``data``."""
    buffer = io.BytesIO()
    if array is not None:
        np.lib.format.write_array(buffer, array, allow_pickle=False)
        return buffer.getvalue()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + (data or b"")


def write_npz(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(f"{name}.npy", content)


def with_members(folder: Path, **replaced: bytes) -> None:
    """predictions.npz with some of its arrays replaced by raw .npy bytes."""
    path = folder / "retrain" / "predictions.npz"
    with np.load(path) as saved:
        members = {name: npy(saved[name]) for name in saved.files}
    write_npz(path, {**members, **replaced})


NPZ_CASES = {
    "header-claims-10-to-the-12": (
        dict(labels=npy(shape=(10**12,), data=bytes(800))),
        "labels's header declares 1,000,000,000,000 values of 8 bytes, but the file holds 800 bytes",
    ),
    "labels-as-text": (
        dict(labels=npy(np.array(["<script>alert(1)</script>"] * 500))),
        "labels is 1-D of kind 'iu' in the retrain's layout, its header declares <U25",
    ),
    "labels-out-of-range": (dict(labels=npy(np.full(500, 11))), "labels holds values outside the digits 0-9"),
    "a-sample-elsewhere": (dict(sample_index=npy(np.arange(10) + 1000)), "sample_index points outside the test"),
    "images-3d-missing": (dict(sample_images=npy(np.zeros((10, 784), np.uint8))), "sample_images is 3-D of kind 'iuf'"),
    "npy-version-3": (dict(labels=b"\x93NUMPY\x03\x00" + npy(np.arange(500))[8:]), "labels is in .npy format 3.0"),
    "not-a-zip": (None, "retrain/predictions.npz is unreadable (BadZipFile"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_a_crafted_predictions_file_is_a_note_and_never_loaded_past_its_checks(finished_experiment, case):
    members, note = NPZ_CASES[case]
    if members is None:
        (finished_experiment / "retrain" / "predictions.npz").write_bytes(b"PK\x03\x04 not really a zip")
    else:
        with_members(finished_experiment, **members)
    path = build_report(finished_experiment)
    text = page_text(path)
    assert note in text, re.findall(r"<li>(.*?)</li>", text)
    assert figure_count(path) == len(SECTIONS) - 2  # the samples and the confusion matrix need the predictions


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> Path:
    """1.2 MB of .npz whose labels expand to 1.2 GB of zeros, as its header says (a valid file, only large)."""
    path = tmp_path_factory.mktemp("bomb") / "predictions.npz"
    count = 150_000_000
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("labels.npy", "w", force_zip64=True) as member:
            member.write(npy(shape=(count,)))
            for _ in range(count * 8 // (1 << 24)):
                member.write(bytes(1 << 24))
            member.write(bytes(count * 8 % (1 << 24)))
    assert path.stat().st_size < 2_000_000
    return path


def test_a_small_file_that_expands_to_gigabytes_is_refused_unread_in_bounded_memory(
    finished_experiment, zip_bomb, tmp_path
):
    (finished_experiment / "retrain" / "predictions.npz").write_bytes(zip_bomb.read_bytes())
    script = (
        "import re, sys; from tuning.report.build import main; main(sys.argv[1:]); "  # VmHWM: peak RSS, in kB
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(finished_experiment), "--out", str(tmp_path / "r.html")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    peak_kib = int(result.stdout.splitlines()[-1])
    assert peak_kib < 700 * 1024  # the 1.2 GB were never held (the report itself needs about 300 MB)
    assert (
        f"retrain/predictions.npz is unreadable (ValueError: its arrays expand to more than "
        f"{MAX_PREDICTION_BYTES:,} bytes)"
    ) in page_text(tmp_path / "r.html")


# --- where the page goes ----------------------------------------------------------------------


def report_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuning.report", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_a_report_html_that_is_a_folder_is_one_line_exit_2_and_out_writes_elsewhere(finished_experiment, tmp_path):
    (finished_experiment / "report.html").mkdir()
    refused = report_command(str(finished_experiment))
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        f"python -m tuning.report: error: {finished_experiment / 'report.html'} is a folder, "
        f"not a file; give --out FILE to write the report elsewhere\n"
    )
    written = report_command(str(finished_experiment), "--out", str(tmp_path / "elsewhere" / "report.html"))
    assert written.returncode == 0, written.stderr
    assert written.stdout == f"{tmp_path / 'elsewhere' / 'report.html'}\n"
    assert figure_count(tmp_path / "elsewhere" / "report.html") == len(SECTIONS)
    assert list((finished_experiment / "report.html").iterdir()) == []


def test_out_that_is_a_folder_is_one_line_exit_2(finished_experiment, tmp_path):
    refused = report_command(str(finished_experiment), "--out", str(tmp_path))
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == f"python -m tuning.report: error: {tmp_path} is a folder, not a file\n"


def test_out_where_nothing_can_be_written_is_one_line_exit_2(finished_experiment):
    refused = report_command(str(finished_experiment), "--out", "/proc/snn-tune/report.html")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.startswith(
        "python -m tuning.report: error: cannot write /proc/snn-tune/report.html: no file can be written in /proc"
    )
    assert len(refused.stderr.splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; run as another user to see it")
def test_a_read_only_experiment_folder_is_one_line_naming_out(finished_experiment, tmp_path):
    finished_experiment.chmod(0o555)
    try:
        refused = report_command(str(finished_experiment))
        written = report_command(str(finished_experiment), "--out", str(tmp_path / "report.html"))
    finally:
        finished_experiment.chmod(0o755)
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    assert refused.stderr.endswith("give --out FILE to write the report elsewhere\n")
    assert written.returncode == 0 and (tmp_path / "report.html").is_file()


def test_a_crafted_summary_on_the_command_line_is_a_page_with_a_note_and_no_traceback(finished_experiment):
    crafted_summary(finished_experiment, "nested-100000-deep")
    result = report_command(str(finished_experiment))
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "summary.json is unreadable (nested deeper than Python can read)" in page_text(
        finished_experiment / "report.html"
    )
    assert missing_count(finished_experiment / "report.html") == 1
