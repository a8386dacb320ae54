"""report.html from an experiment folder: what the page says, what it holds, and bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from plotly.offline import get_plotlyjs

from tests.tuning.helpers import REPO
from tuning.report.build import SECTIONS, build_report, main


def attribute(page: str, name: str) -> int:
    return int(re.search(rf'{name}="(\d+)"', page).group(1))


def test_report_of_a_finished_experiment_holds_every_figure_and_the_header(finished_experiment):
    path = build_report(finished_experiment)
    page = path.read_text()
    assert path == finished_experiment / "report.html"
    assert attribute(page, "data-figure-count") == len(SECTIONS) == page.count('class="plotly-graph-div"')
    assert attribute(page, "data-missing-count") == 0 and "Missing or incomplete" not in page
    summary = json.loads((finished_experiment / "summary.json").read_text())
    retrain = summary["retrain"]
    for text in (
        "FC-SNN (fc)",
        "mnist",
        "<b>test_acc</b>",
        "12 min 34 s",
        "8 run: 3 ran all their epochs, 4 stopped early by ASHA, 1 errored",
        "t0003: test_acc 90.50%",
        "92.89%",
        f"{retrain['max_test_acc_mean']:.2%}",
        f"{retrain['final_test_acc_mean']:.2%}",
        "2 seed(s) (0, 1)",
        "at the high edge of its range",
        "searched: float in [0.0001, 0.01], log scale",
    ):
        assert text in page, text


def test_report_is_self_contained_and_embeds_plotly_once(finished_experiment):
    page = build_report(finished_experiment).read_text()
    assert page.count(get_plotlyjs()[:200]) == 1  # plotly.js's own banner and first lines
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<iframe|@import", page)
    assert '"typesetMath": false' in page  # plotly.js must not look for MathJax


def test_report_of_a_half_finished_search_says_what_is_missing(half_finished_experiment):
    page = build_report(half_finished_experiment).read_text()
    assert attribute(page, "data-figure-count") == len(SECTIONS) - 3
    for text in (
        "the search is not finished (summary.json status: searching)",
        "retrain/ holds no metrics: the best configuration was not retrained (yet)",
        "No retrain yet",
        "Retrain of the best configuration: retrain/metrics.csv",
        "Predictions on test images: retrain/predictions.npz",
        "8 run: 2 ran all their epochs, 3 stopped early by ASHA, 1 errored, 2 unfinished",
    ):
        assert text in page, text
    assert page.count('<p class="absent">Not drawn:') == 3


def test_report_tolerates_missing_and_unreadable_files(finished_experiment):
    (finished_experiment / "summary.json").unlink()
    (finished_experiment / "trials.csv").write_text("")
    page = build_report(finished_experiment).read_text()
    assert "summary.json is missing" in page
    assert "trials.csv is empty: no trial has finished an epoch yet" in page
    assert "Retrained test accuracy" in page and "2 seed(s) (0, 1)" in page  # from retrain/metrics.csv instead
    # history, parallel coordinates, per-parameter, Pareto and its networks need trials.csv (importance: the journal)
    assert attribute(page, "data-figure-count") == len(SECTIONS) - 5


def test_the_report_builds_from_a_copied_folder_without_ray_torch_or_mnist(finished_experiment, tmp_path):
    """Another machine: the folder copied elsewhere, no data folder, and the report imports neither Ray nor torch."""
    copy = shutil.copytree(finished_experiment, tmp_path / "elsewhere" / "copy")
    shutil.rmtree(finished_experiment)
    script = (
        "import sys; from tuning.report.build import main; code = main([sys.argv[1]]); "
        "print(sorted(m for m in ('ray', 'torch', 'spikingjelly', 'snn.training') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "SNN_DATA_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(copy)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "[]"
    page = (copy / "report.html").read_text()
    assert attribute(page, "data-figure-count") == len(SECTIONS)


def test_cli_prints_the_report_path(half_finished_experiment, capsys):
    assert main([str(half_finished_experiment)]) == 0
    assert capsys.readouterr().out.strip() == str(half_finished_experiment / "report.html")


def test_cli_refuses_a_folder_that_does_not_exist_with_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tuning.report", str(tmp_path / "absent")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"python -m tuning.report: error: {tmp_path / 'absent'}: no such folder\n"


def test_cli_refuses_a_folder_without_result_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a result file")
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"python -m tuning.report: error: {tmp_path}: not an experiment folder "
        f"(none of summary.json, trials.csv, trial_metrics.csv, best_config.json, retrain is there)"
    )
    assert not (tmp_path / "report.html").exists()


def test_a_search_stopped_before_any_epoch_says_so_plainly(tmp_path):
    """Ctrl-C a minute into a search: the trial tables hold their header and no row."""
    folder = tmp_path / "stopped"
    folder.mkdir()
    (folder / "trials.csv").write_text("trial_id,status\n")
    (folder / "trial_metrics.csv").write_text("trial_id,epoch\n")
    (folder / "summary.json").write_text('{"experiment": "stopped", "model": "csnn", "status": "interrupted"}')
    page = build_report(folder).read_text()
    assert "trials.csv has no rows yet: no trial has finished an epoch yet" in page
    assert "trial_metrics.csv has no rows yet: no trial has finished an epoch yet" in page
    assert (
        'Accuracy against synaptic operations</h2><p class="absent">Not drawn: no trial has finished an epoch '
        "yet" in page
    )
    assert "EmptyDataError" not in page and "before spikes were counted" not in page


def test_the_card_weighs_the_best_trial_against_the_seed_trial_and_names_the_seed_reports_budget(finished_experiment):
    page = build_report(finished_experiment).read_text()
    assert (
        "Best trial test_acc 90.50% against 88.00% for the seed&#39;s configuration (trial 0) with the same trial "
        "budget: +2.50 pp."
    ) in page
    assert "the seed report's fc: <b>92.89%</b> best test accuracy after\n100 epochs on full MNIST." in page
    assert "pp vs seed" not in page
    assert "Network: <b>784-10, LIF tau 2, T 10, poisson input</b>" in page
