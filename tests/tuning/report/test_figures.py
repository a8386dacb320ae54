"""Each figure of the report on a real retrained FC-SNN and hand-written trial rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from tests.tuning.report.report_fixture import accuracy_curve
from tuning import experiment as files
from tuning.report import figures
from tuning.report.figures.common import BEST_COLOUR
from tuning.report.folder import MissingData, read_experiment


def names(fig: go.Figure) -> list[str]:
    return [t.name for t in fig.data if t.name]


def test_learning_curves_show_train_and_test_accuracy_and_loss_of_the_best_trial(finished_experiment):
    fig = figures.learning_curves(finished_experiment)
    lines = {(t.name, t.yaxis): list(t.y) for t in fig.data}
    assert set(lines) == {("train", "y"), ("test", "y"), ("train", "y2"), ("test", "y2")}
    assert lines[("test", "y")] == pytest.approx(accuracy_curve(0.905, 4))
    assert "t0003" in fig.layout.title.text


def test_retrain_curves_draw_a_band_across_the_two_seeds(finished_experiment):
    fig = figures.retrain_curves(finished_experiment)
    table = pd.read_csv(finished_experiment / "retrain" / "metrics.csv")
    mean = table.groupby("epoch")["test_acc"].mean().tolist()
    test_mean = next(t for t in fig.data if t.name == "test" and t.yaxis == "y")
    assert list(test_mean.y) == pytest.approx(mean)
    assert sum(t.fill == "tonexty" for t in fig.data) == 4  # train and test, accuracy and loss
    assert "seeds 0, 1" in fig.layout.title.text


def test_trial_curves_mark_the_trials_asha_stopped(finished_experiment):
    fig = figures.trial_curves(finished_experiment)
    assert len(fig.data) == 7  # t0005 errored before its first epoch
    stopped = [t for t in fig.data if t.name == "stopped early by ASHA"]
    assert len(stopped) == 4 and all(t.marker.symbol[-1] == "x" for t in stopped)
    assert [t.name for t in fig.data].count("best trial") == 1
    assert "4 of 7 stopped early" in fig.layout.title.text


def test_optimisation_history_has_each_result_and_the_best_so_far(finished_experiment):
    fig = figures.optimisation_history(finished_experiment)
    best_so_far = next(t for t in fig.data if t.name == "best so far")
    assert list(best_so_far.y) == pytest.approx([0.88, 0.88, 0.905, 0.905, 0.905, 0.905, 0.905], abs=1e-9)
    assert "1 trial(s) without a result" in fig.layout.title.text


def test_parallel_coordinates_encode_categoricals_and_log_scales(finished_experiment):
    (trace,) = figures.parallel_coordinates(finished_experiment).data
    axes = {d.label: d for d in trace.dimensions}
    assert list(axes) == ["lr (log)", "tau (log)", "T (log)", "neuron", "batch_size", "test accuracy"]
    assert list(axes["batch_size"].ticktext) == ["32", "64", "128", "256"]
    assert set(axes["neuron"].values) == {0, 1}
    assert axes["lr (log)"].range == pytest.approx((-4, -2))


def test_param_importances_rank_every_searched_parameter(finished_experiment):
    info = figures.importance_info(finished_experiment)
    assert info.trials == 3  # the study's COMPLETE trials: t0001, t0003, t0007 ran all 4 epochs
    assert set(info.by_evaluator["PED-ANOVA"]) == {"lr", "tau", "T", "neuron", "batch_size"}
    fig = figures.param_importances(finished_experiment)
    assert "PED-ANOVA" in names(fig)
    for trace in fig.data:
        assert sorted(trace.y) == sorted(["lr", "tau", "T", "neuron", "batch_size"])
        assert sum(trace.x) == pytest.approx(1.0)


def test_param_vs_result_flags_the_parameters_whose_best_value_is_at_an_edge(finished_experiment):
    assert figures.params_at_edge(finished_experiment) == {"lr": "high", "T": "low"}
    fig = figures.param_vs_result(finished_experiment)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [
        "lr: best at the high edge, widen the range",
        "tau",
        "T: best at the low edge, widen the range",
        "neuron",
        "batch_size",
    ]
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis4.type == "category"
    assert sum(t.name == "best trial" for t in fig.data) == 5


@pytest.mark.parametrize(
    ("value", "spec", "edge"),
    [
        (0.0095, {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, "high"),
        (0.0095, {"type": "float", "low": 0.0, "high": 0.1, "log": False}, None),  # 9.5% of a linear range
        (1.1e-4, {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, "low"),
        (11, {"type": "int", "low": 10, "high": 100, "log": True}, "low"),
        (50, {"type": "int", "low": 10, "high": 100, "log": False}, None),
        ("lif", {"type": "categorical", "choices": ["lif", "plif"]}, None),
    ],
)
def test_edge_of_range_is_log_aware(value, spec, edge):
    assert figures.edge_of_range(value, spec) == edge


def test_firing_rates_come_from_the_retrain_metrics(finished_experiment):
    fig = figures.firing_rates(finished_experiment)
    bar = fig.data[0]
    table = pd.read_csv(finished_experiment / "retrain" / "metrics.csv")
    last = table.sort_values("epoch").groupby("seed").tail(1)
    assert list(bar.x) == ["sn: output"]
    assert bar.y[0] == pytest.approx(last["rate_sn"].mean())
    assert "2 seed(s)" in fig.layout.title.text


def test_sample_predictions_show_ten_test_images_with_their_own_labels(finished_experiment, dataset):
    """Each panel is the test image at its place in the test set, titled with that image's true label and the
    retrained model's prediction for it: wrong pairings or a label shown for another image fail."""
    fig = figures.sample_predictions(finished_experiment)
    saved = np.load(finished_experiment / files.PREDICTIONS)
    picks = saved["sample_index"]
    assert len(fig.data) == len(picks) == 10 and all(t.type == "heatmap" for t in fig.data)
    test_images, test_labels = dataset.test.images.numpy(), dataset.test.labels.numpy()
    assert test_images.shape[1] == 1  # [N, 1, 28, 28]: a grey image is drawn as its one channel
    for k, (trace, annotation, i) in enumerate(zip(fig.data, fig.layout.annotations, picks)):
        assert np.array_equal(np.asarray(trace.z), test_images[i, 0]), k  # the image at that place
        assert saved["labels"][i] == test_labels[i]
        assert annotation.text == f"true {test_labels[i]}, predicted {saved['predicted'][i]}", k
        wrong = test_labels[i] != saved["predicted"][i]
        assert (annotation.font.color == BEST_COLOUR) is bool(wrong), k
    assert len(set(picks.tolist())) == 10 and len(set(test_labels[picks].tolist())) > 1


def test_confusion_matrix_has_the_true_digit_in_rows_and_the_prediction_in_columns(finished_experiment):
    exp = read_experiment(finished_experiment)
    fig = figures.confusion_matrix(exp)
    saved = np.load(finished_experiment / files.PREDICTIONS)
    expected = np.zeros((10, 10), dtype=int)
    for true, predicted in zip(saved["labels"], saved["predicted"]):
        expected[true, predicted] += 1
    assert expected.sum() == 500  # the retrain's limit_test
    assert not np.array_equal(expected, expected.T), "a symmetric matrix cannot tell rows from columns"
    heatmap = fig.data[0]
    assert np.array_equal(np.asarray(heatmap.text), expected)  # row: true digit, column: predicted digit
    assert fig.layout.yaxis.title.text == "true digit" and fig.layout.xaxis.title.text == "predicted digit"
    assert list(heatmap.y) == list(heatmap.x) == [str(d) for d in range(10)]
    rows = expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(heatmap.z), expected / np.maximum(rows, 1))  # share of the true class
    accuracy = np.trace(expected) / 500
    assert f"on 500 test images (accuracy {accuracy:.2%})" in fig.layout.title.text
    # Poisson input, seeded: the report's accuracy is close to the one the trainer measured
    final = pd.read_csv(finished_experiment / "retrain" / "seed-0" / "metrics.csv")["test_acc"].iloc[-1]
    assert accuracy == pytest.approx(final, abs=0.05)


def test_importance_comes_from_the_journal_and_says_when_it_is_absent(finished_experiment):
    (finished_experiment / "optuna.journal").unlink()
    with pytest.raises(MissingData, match=r"optuna.journal is missing"):
        figures.param_importances(finished_experiment)
    assert not (finished_experiment / "optuna.journal").exists()  # reading never creates the file


def test_figures_that_need_the_retrain_say_it_is_missing(half_finished_experiment):
    exp = read_experiment(half_finished_experiment)
    for draw in (figures.retrain_curves, figures.sample_predictions, figures.confusion_matrix):
        with pytest.raises(MissingData, match="retrain"):
            draw(exp)
    assert "without a result" in figures.optimisation_history(exp).layout.title.text  # running and pending
    assert "no retrain metrics" in figures.firing_rates(exp).layout.title.text  # falls back to the best trial


def test_the_pareto_figure_marks_the_front_the_seed_and_the_selected_trial(finished_experiment):
    info = figures.pareto_info(finished_experiment)
    # made-up costs grow with T: among the trials that ran all 4 epochs (T 40, 10, 12) the front is the
    # T=10 one (also the most accurate) alone
    assert info.loc[info["on_front"], "trial_id"].tolist() == ["t0003"]
    assert info.loc[info["seed_trial"], "trial_id"].tolist() == ["t0001"]
    assert info.loc[info["selected"], "trial_id"].tolist() == ["t0003"]
    fig = figures.pareto(finished_experiment)
    assert fig.layout.xaxis.type == "log"
    assert {"Pareto front", "the seed's configuration", "selected (retrained)"} <= set(names(fig))


def test_the_cost_table_compares_the_seed_configuration_with_the_retrained_one(finished_experiment):
    info = figures.cost_table_info(finished_experiment)
    seed, selected = info.values()
    assert seed["synops_per_image"] == 95.0 * 40  # t0001's T
    retrain = pd.read_csv(finished_experiment / "retrain" / "metrics.csv")
    last = retrain.sort_values("epoch").groupby("seed").tail(1)
    assert selected["synops_per_image"] == pytest.approx(last["test_synops_per_image"].mean())
    assert selected["acc"] == pytest.approx(last["test_acc"].mean())


def test_a_parameter_with_cases_is_at_an_edge_of_its_own_case_not_of_the_hull():
    """lr by optimizer: SGD at 0.3 is the top of its case (the hull's top too); Adam at 1e-2 is the top of its
    case though mid-hull; values of an optimizer without a case are held to the hull."""
    sgd, adam = (
        {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    )
    spec = {
        "type": "float",
        "low": 1e-4,
        "high": 0.3,
        "log": True,
        "by": "optimizer",
        "cases": {"sgd": sgd, "adam": adam},
    }
    assert figures.case_spec(spec, {"optimizer": "adam"}) == adam
    assert figures.edge_of_range(1e-2, figures.case_spec(spec, {"optimizer": "adam"})) == "high"
    assert figures.edge_of_range(1e-2, spec) is None
    assert figures.case_spec(spec, {"optimizer": "rmsprop"}) == spec
    blocks = {"type": "int", "low": 1, "high": 3, "by": "blocks", "cases": {"2": {"type": "int", "low": 1, "high": 2}}}
    assert figures.case_spec(blocks, {"blocks": 2}) == {"type": "int", "low": 1, "high": 2}  # JSON's keys are text
