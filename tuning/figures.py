"""The report's figures, one function each, every one returning a plotly Figure.

Each takes an experiment folder (a path, or an ``Experiment`` from ``read_experiment``)
and reads only its result files, so a notebook can call them one by one::

    from tuning import figures
    figures.trial_curves("results/fc-search").show()

A figure whose input is absent raises ``MissingData`` with a line that says which file is
missing; the report shows that line in the figure's place.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .experiment_files import Experiment, MissingData, read_experiment, searched_values

SPLIT_COLOURS = {"train": "#1f77b4", "val": "#2ca02c", "test": "#ff7f0e"}
BEST_COLOUR = "#d62728"
EDGE_FRACTION = 0.05  # the best value is "at the edge" within this share of its range (log-aware)
TEMPLATE = "plotly_white"
# What each spiking layer is, by model (names are the attributes in snn/models.py).
LAYER_NAMES = {
    "fc": {"sn": "output"},
    "csnn": {"sn1": "conv1 (encoder)", "sn2": "conv2", "sn3": "fc1", "sn4": "output"},
}

ExperimentLike = Experiment | str | Path


def _experiment(exp: ExperimentLike) -> Experiment:
    return exp if isinstance(exp, Experiment) else read_experiment(exp)


def _style(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), template=TEMPLATE, height=height,
                      margin=dict(l=60, r=30, t=80, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1))
    return fig


def _metric_label(metric: str) -> str:
    split, _, kind = metric.partition("_")
    return f"{split} {'accuracy' if kind == 'acc' else kind}"


# --- the best trial and the retrain ------------------------------------------------------------


def learning_curves(exp: ExperimentLike, trial_id: str | None = None) -> go.Figure:
    """The best trial's (or ``trial_id``'s) accuracy and loss per epoch, train vs test (and val)."""
    exp = _experiment(exp)
    metrics = exp.require("trial_metrics")
    trial_id = trial_id or exp.best_trial_id
    if trial_id is None:
        raise MissingData(f"no best trial: summary.json names none and trials.csv has no best_{exp.metric}")
    rows = metrics[metrics["trial_id"].astype(str) == trial_id].sort_values("epoch")
    if rows.empty:
        raise MissingData(f"trial_metrics.csv has no epochs of trial {trial_id}")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Accuracy", "Loss (MSE against one-hot)"))
    for split, colour in SPLIT_COLOURS.items():
        for col, kind in ((1, "acc"), (2, "loss")):
            column = f"{split}_{kind}"
            if column in rows.columns and rows[column].notna().any():
                fig.add_trace(go.Scatter(x=rows["epoch"], y=rows[column], name=split, legendgroup=split,
                                         showlegend=col == 1, mode="lines+markers", line=dict(color=colour)),
                              row=1, col=col)
    fig.update_xaxes(title_text="epoch", **_epoch_ticks(rows["epoch"]))
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    return _style(fig, f"Best trial {trial_id}: learning curves", 400)


def retrain_curves(exp: ExperimentLike) -> go.Figure:
    """The retrain of the best configuration: accuracy and loss per epoch, mean +- std across seeds."""
    exp = _experiment(exp)
    table = exp.require("retrain_metrics")
    seeds = sorted(table["seed"].unique().tolist())
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Accuracy", "Loss (MSE against one-hot)"))
    for split, colour in SPLIT_COLOURS.items():
        for col, kind in ((1, "acc"), (2, "loss")):
            column = f"{split}_{kind}"
            if column not in table.columns or table[column].isna().all():
                continue
            stats = table.groupby("epoch")[column].agg(["mean", lambda s: s.std(ddof=0)])
            stats.columns = ["mean", "std"]
            upper, lower = stats["mean"] + stats["std"], stats["mean"] - stats["std"]
            fill = _rgba(colour, 0.2)
            fig.add_trace(go.Scatter(x=stats.index, y=upper, mode="lines", line=dict(width=0), hoverinfo="skip",
                                     showlegend=False, legendgroup=split), row=1, col=col)
            fig.add_trace(go.Scatter(x=stats.index, y=lower, mode="lines", line=dict(width=0), fill="tonexty",
                                     fillcolor=fill, hoverinfo="skip", name=f"{split} ± std",
                                     showlegend=False, legendgroup=split), row=1, col=col)
            fig.add_trace(go.Scatter(x=stats.index, y=stats["mean"], mode="lines+markers", name=split,
                                     legendgroup=split, showlegend=col == 1, line=dict(color=colour),
                                     customdata=stats["std"],
                                     hovertemplate="epoch %{x}: %{y:.4f} ± %{customdata:.4f}"),
                          row=1, col=col)
    fig.update_xaxes(title_text="epoch", **_epoch_ticks(table["epoch"]))
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    band = "mean ± std over" if len(seeds) > 1 else "one seed,"
    return _style(fig, f"Retrain of the best configuration: {band} seeds {', '.join(map(str, seeds))}", 400)


# --- the search --------------------------------------------------------------------------------


def trial_curves(exp: ExperimentLike) -> go.Figure:
    """Every trial's tuned metric per epoch; an x marks where ASHA stopped a trial early."""
    exp = _experiment(exp)
    metrics, metric = exp.require("trial_metrics"), exp.metric
    if metric not in metrics.columns:
        raise MissingData(f"trial_metrics.csv has no {metric} column")
    flags = _trial_flags(exp)
    best = exp.best_trial_id
    groups = {"ran to the last epoch": "#1f77b4", "stopped early by ASHA": "#9467bd",
              "errored or diverged": "#7f7f7f", "best trial": BEST_COLOUR}
    shown: set[str] = set()
    fig = go.Figure()
    for trial_id, rows in metrics.groupby(metrics["trial_id"].astype(str), sort=False):
        rows = rows.sort_values("epoch")
        flag = flags.get(trial_id, {})
        group = ("best trial" if trial_id == best else "stopped early by ASHA" if flag.get("stopped_early")
                 else "errored or diverged" if flag.get("failed") else "ran to the last epoch")
        symbols = ["circle"] * (len(rows) - 1) + ["x" if flag.get("stopped_early") else "circle"]
        sizes = [4] * (len(rows) - 1) + [10 if flag.get("stopped_early") else 6]
        fig.add_trace(go.Scatter(
            x=rows["epoch"], y=rows[metric], mode="lines+markers", name=group, legendgroup=group,
            showlegend=group not in shown, line=dict(color=groups[group], width=3 if group == "best trial" else 1.2),
            marker=dict(symbol=symbols, size=sizes), opacity=1.0 if group == "best trial" else 0.7,
            hovertemplate=f"trial {trial_id}<br>epoch %{{x}}: %{{y:.4f}}<extra>{group}</extra>"))
        shown.add(group)
    stopped = sum(1 for f in flags.values() if f.get("stopped_early"))
    fig.update_xaxes(title_text="epoch", **_epoch_ticks(metrics["epoch"]))
    fig.update_yaxes(title_text=_metric_label(metric), tickformat=".1%")
    return _style(fig, f"Every trial's {_metric_label(metric)} per epoch "
                       f"({stopped} of {metrics['trial_id'].nunique()} stopped early by ASHA, marked x)", 450)


def optimisation_history(exp: ExperimentLike) -> go.Figure:
    """Each trial's best metric in the order trials.csv lists them, and the best so far."""
    exp = _experiment(exp)
    values = searched_values(exp).reset_index(drop=True)
    values["number"] = values.index + 1
    scored = values[values["result"].notna()]
    if scored.empty:
        raise MissingData(f"trials.csv has no trial with a best_{exp.metric} yet")
    fig = go.Figure()
    for label, rows, symbol, colour in (
            ("ran to the last epoch", scored[~scored["stopped_early"]], "circle", "#1f77b4"),
            ("stopped early by ASHA (truncated)", scored[scored["stopped_early"]], "x", "#9467bd"),
            ("best trial", scored[scored["trial_id"] == exp.best_trial_id], "star", BEST_COLOUR)):
        if not rows.empty:
            fig.add_trace(go.Scatter(x=rows["number"], y=rows["result"], mode="markers", name=label,
                                     marker=dict(symbol=symbol, size=14 if symbol == "star" else 9, color=colour),
                                     text=rows["trial_id"], hovertemplate="trial %{text}<br>%{y:.4f}"))
    best_so_far = scored["result"].cummax()
    fig.add_trace(go.Scatter(x=scored["number"], y=best_so_far, mode="lines", name="best so far",
                             line=dict(color=BEST_COLOUR, shape="hv")))
    failed = len(values) - len(scored)
    fig.update_xaxes(title_text="trial (in the order of trials.csv)")
    fig.update_yaxes(title_text=f"best {_metric_label(exp.metric)} of the trial", tickformat=".1%")
    note = f"; {failed} trial(s) without a result (errored, diverged or not started)" if failed else ""
    return _style(fig, f"Optimisation history: {len(scored)} trials{note}", 420)


def _scored_trials(exp: Experiment) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Trials with a result and their searched values, and the space of the parameters they show."""
    values = searched_values(exp)
    values = values[values["result"].notna()]
    space = {name: spec for name, spec in exp.space.items() if name in values.columns}
    if values.empty or not space:
        raise MissingData("trials.csv has no finished trial with its searched parameters")
    return values, space


def parallel_coordinates(exp: ExperimentLike) -> go.Figure:
    """All trials' searched hyperparameters, one axis each, lines coloured by the tuned metric."""
    exp = _experiment(exp)
    values, space = _scored_trials(exp)
    dimensions = [_axis(name, spec, values[name]) for name, spec in space.items()]
    dimensions.append(dict(label=_metric_label(exp.metric), values=values["result"], tickformat=".1%"))
    fig = go.Figure(go.Parcoords(
        line=dict(color=values["result"], colorscale="Viridis", showscale=False),
        dimensions=dimensions, labelangle=0, labelside="top"))
    fig = _style(fig, f"Hyperparameters of all {len(values)} scored trials, coloured by {exp.metric} "
                      f"(the last axis; yellow is best)", 480)
    fig.update_layout(margin=dict(t=120, l=70, r=70))
    return fig


def _axis(name: str, spec: dict[str, Any], column: pd.Series) -> dict[str, Any]:
    """One parallel-coordinates axis: categoricals as indices, log-scale numbers as log10."""
    if spec.get("type") == "categorical":
        choices = [str(c) for c in spec.get("choices") or sorted(column.astype(str).unique())]
        index = {c: i for i, c in enumerate(choices)}
        return dict(label=name, values=[index.get(str(v), -1) for v in column], tickvals=list(range(len(choices))),
                    ticktext=choices, range=[-0.3, len(choices) - 0.7])
    low, high = float(spec.get("low", column.min())), float(spec.get("high", column.max()))
    if spec.get("log") and low > 0:
        ticks = np.linspace(math.log10(low), math.log10(high), 5)
        return dict(label=f"{name} (log)", values=np.log10(column.astype(float)), range=[ticks[0], ticks[-1]],
                    tickvals=ticks, ticktext=[f"{10 ** t:.3g}" for t in ticks])
    return dict(label=name, values=column.astype(float), range=[low, high])


def param_importances(exp: ExperimentLike) -> go.Figure:
    """Optuna's importance of each searched parameter, from an in-memory study rebuilt from trials.csv.

    Trials that ran to the last epoch are the study's COMPLETE trials, as the search reports
    ASHA-stopped ones to Optuna as pruned. With fewer than three such trials the stopped ones
    join, with their truncated results, and the title says so. PED-ANOVA always runs; fANOVA
    and mean-decrease-impurity too when scikit-learn is installed.
    """
    exp = _experiment(exp)
    study, used, note = _study_from_trials(exp)
    if len(used) < 2:
        raise MissingData(f"parameter importance needs at least 2 finished trials with a result, "
                          f"trials.csv has {len(used)}")
    results, failures = {}, []
    for label, evaluator in _importance_evaluators().items():
        try:
            with _quiet_optuna():
                results[label] = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except Exception as e:  # too few trials for this evaluator, a parameter with one value
            failures.append(f"{label}: {type(e).__name__}: {e}")
    if not results:
        raise MissingData("no importance evaluator could run: " + "; ".join(failures))
    order = sorted(exp.space, key=lambda p: next(iter(results.values())).get(p, 0.0))
    fig = go.Figure()
    for label, importances in results.items():
        fig.add_trace(go.Bar(y=order, x=[importances.get(p, 0.0) for p in order], orientation="h", name=label,
                             hovertemplate="%{y}: %{x:.3f}"))
    fig.update_layout(barmode="group", showlegend=True)
    fig.update_xaxes(title_text="importance (sums to 1 per evaluator)", range=[0, 1])
    skipped = f"; not run: {'; '.join(failures)}" if failures else ""
    if len(used) < 10:
        note += ", too few to rank reliably"
    if "fANOVA" not in results and not failures:
        skipped = " (fANOVA and mean decrease impurity need scikit-learn)"
    return _style(fig, f"Hyperparameter importance over {len(used)} trials{note}{skipped}",
                  max(300, 90 + 40 * len(order) * max(1, len(results))))


def _importance_evaluators() -> dict[str, optuna.importance.BaseImportanceEvaluator]:
    evaluators: dict[str, optuna.importance.BaseImportanceEvaluator] = {
        "PED-ANOVA": optuna.importance.PedAnovaImportanceEvaluator()}
    try:
        import sklearn  # noqa: F401  (fANOVA and MDI fit scikit-learn random forests)
    except ImportError:
        return evaluators
    evaluators["fANOVA"] = optuna.importance.FanovaImportanceEvaluator(seed=0)
    evaluators["mean decrease impurity"] = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    return evaluators


def _study_from_trials(exp: Experiment) -> tuple[optuna.Study, list[str], str]:
    values = searched_values(exp)
    ok = values[(values["status"] == "TERMINATED") & ~values["diverged"] & values["result"].notna()]
    note = ""
    if (~ok["stopped_early"]).sum() >= 3:
        ok = ok[~ok["stopped_early"]]
    elif ok["stopped_early"].any():
        note = f" (fewer than 3 ran to the last epoch: includes {int(ok['stopped_early'].sum())} stopped early)"
    distributions = {name: _distribution(spec) for name, spec in exp.space.items() if name in values.columns}
    trials, used = [], []
    for _, row in ok.iterrows():
        params = {name: _param_value(row[name], dist) for name, dist in distributions.items()}
        if any(v is None for v in params.values()):
            continue  # a value outside the space (the space changed on resume): leave the trial out
        trials.append(optuna.trial.create_trial(params=params, distributions=distributions,
                                                value=float(row["result"])))
        used.append(row["trial_id"])
    with _quiet_optuna():
        study = optuna.create_study(direction="maximize")
        study.add_trials(trials)
    return study, used, note


def _distribution(spec: dict[str, Any]) -> optuna.distributions.BaseDistribution:
    kind = spec.get("type")
    if kind == "categorical":
        return optuna.distributions.CategoricalDistribution(list(spec["choices"]))
    if kind == "int":
        return optuna.distributions.IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
    return optuna.distributions.FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))


def _param_value(value: Any, dist: optuna.distributions.BaseDistribution) -> Any:
    """trials.csv's value as the distribution holds it, or None when it is outside the distribution."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return next((c for c in dist.choices if str(c) == str(value)), None)
    if pd.isna(value):
        return None
    number = int(value) if isinstance(dist, optuna.distributions.IntDistribution) else float(value)
    return number if dist.low <= number <= dist.high else None


@contextlib.contextmanager
def _quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


# --- each hyperparameter against the result ----------------------------------------------------


def edge_of_range(value: Any, spec: dict[str, Any], fraction: float = EDGE_FRACTION) -> str | None:
    """"low" or "high" when a numeric value lies within ``fraction`` of its range's end (log-aware)."""
    if spec.get("type") not in ("float", "int") or value is None or pd.isna(value):
        return None
    low, high, value = float(spec["low"]), float(spec["high"]), float(value)
    if spec.get("log") and low > 0 and value > 0:
        low, high, value = math.log(low), math.log(high), math.log(value)
    if high <= low:
        return None
    share = (value - low) / (high - low)
    return "low" if share <= fraction else "high" if share >= 1 - fraction else None


def params_at_edge(exp: ExperimentLike) -> dict[str, str]:
    """The searched parameters whose best value sits at an edge of its range: {name: "low"|"high"}."""
    exp = _experiment(exp)
    best = exp.best_config or {}
    edges = {name: edge_of_range(best.get(name), spec) for name, spec in exp.space.items()}
    return {name: edge for name, edge in edges.items() if edge}


def param_vs_result(exp: ExperimentLike) -> go.Figure:
    """One panel per searched parameter: each trial's value against its result; edges flagged."""
    exp = _experiment(exp)
    values, space = _scored_trials(exp)
    edges = params_at_edge(exp)
    best_id, best = exp.best_trial_id, exp.best_config or {}
    cols = min(3, len(space))
    rows = math.ceil(len(space) / cols)
    titles = [f"{name}: best at the {edges[name]} edge, widen the range" if name in edges else name
              for name in space]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=min(0.3, 0.4 / rows),
                        horizontal_spacing=0.08)
    y_low, y_high = values["result"].min(), values["result"].max()
    pad = max(1e-3, 0.05 * (y_high - y_low))
    y_low, y_high = y_low - pad, y_high + pad
    for i, (name, spec) in enumerate(space.items()):
        row, col = divmod(i, cols)
        where = dict(row=row + 1, col=col + 1)
        numeric = spec.get("type") in ("float", "int")
        x = values[name] if numeric else values[name].astype(str)
        for label, mask, symbol in (("ran to the last epoch", ~values["stopped_early"], "circle"),
                                    ("stopped early by ASHA", values["stopped_early"], "x")):
            fig.add_trace(go.Scatter(x=x[mask], y=values["result"][mask], mode="markers", name=label,
                                     legendgroup=label, showlegend=i == 0, text=values["trial_id"][mask],
                                     marker=dict(symbol=symbol, size=8, color="#1f77b4" if symbol == "circle"
                                                 else "#9467bd"),
                                     hovertemplate=f"trial %{{text}}<br>{name} %{{x}}<br>%{{y:.4f}}<extra></extra>"),
                          **where)
        if name in best:
            best_result = values.loc[values["trial_id"] == best_id, "result"]
            fig.add_trace(go.Scatter(x=[best[name] if numeric else str(best[name])],
                                     y=[best_result.iloc[0] if len(best_result) else y_high - pad],
                                     mode="markers", name="best trial", legendgroup="best", showlegend=i == 0,
                                     marker=dict(symbol="star", size=16, color=BEST_COLOUR)), **where)
        if numeric:
            _draw_range(fig, name, spec, edges.get(name), (y_low, y_high), where)
            fig.update_xaxes(**_numeric_axis(spec), **where)
        else:
            fig.update_xaxes(type="category", categoryorder="array",
                             categoryarray=[str(c) for c in spec.get("choices", [])], **where)
        fig.update_yaxes(range=[y_low, y_high], tickformat=".1%", **where)
    for annotation in fig.layout.annotations:
        if "edge" in annotation.text:
            annotation.font = dict(color=BEST_COLOUR)
    return _style(fig, f"Each searched hyperparameter against {exp.metric} (dashed: the range searched)",
                  60 + 300 * rows)


def _numeric_axis(spec: dict[str, Any]) -> dict[str, Any]:
    """A log axis labelled at powers of ten (at 1, 2, 5 times them within two decades), else a linear one."""
    low, high = float(spec["low"]), float(spec["high"])
    if not (spec.get("log") and low > 0):
        return dict(type="linear")
    steps = (1,) if math.log10(high / low) >= 2 else (1, 2, 5)
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
             for m in steps if low <= m * 10.0 ** e <= high]
    return dict(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


def _draw_range(fig: go.Figure, name: str, spec: dict[str, Any], edge: str | None, y: tuple[float, float],
                where: dict[str, int]) -> None:
    """Dashed lines at the range's ends and, at a flagged edge, a red band of EDGE_FRACTION of it."""
    low, high = float(spec["low"]), float(spec["high"])
    for bound in (low, high):
        fig.add_trace(go.Scatter(x=[bound, bound], y=list(y), mode="lines", showlegend=False, hoverinfo="skip",
                                 line=dict(color="#999", dash="dash", width=1)), **where)
    if edge is None:
        return
    log = spec.get("log") and low > 0

    def at(share: float) -> float:
        if log:
            return math.exp(math.log(low) + share * (math.log(high) - math.log(low)))
        return low + share * (high - low)

    a, b = (at(0.0), at(EDGE_FRACTION)) if edge == "low" else (at(1 - EDGE_FRACTION), at(1.0))
    fig.add_trace(go.Scatter(x=[a, b, b, a, a], y=[y[0], y[0], y[1], y[1], y[0]], fill="toself", mode="lines",
                             line=dict(width=0), fillcolor=_rgba(BEST_COLOUR, 0.15), showlegend=False,
                             hoverinfo="skip", name=f"{name} edge"), **where)


# --- the best model ---------------------------------------------------------------------------


def firing_rates(exp: ExperimentLike) -> go.Figure:
    """Mean firing rate of each spiking layer of the best model on the test set: at the last epoch, and per epoch."""
    exp = _experiment(exp)
    table, source = _rate_source(exp)
    columns = [c for c in table.columns if c.startswith("rate_")]
    last = table.sort_values("epoch").groupby("seed").tail(1)
    means, stds = last[columns].mean(), last[columns].std(ddof=0)
    names = LAYER_NAMES.get(exp.model or "", {})
    layers = [c.removeprefix("rate_") for c in columns]
    labels = [f"{layer}: {names[layer]}" if layer in names else layer for layer in layers]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55],
                        subplot_titles=("At the last epoch", "Per epoch"))
    fig.add_trace(go.Bar(x=labels, y=means, error_y=dict(type="data", array=stds, visible=len(last) > 1),
                         marker_color="#1f77b4", text=[f"{m:.3f}" for m in means], textposition="inside",
                         insidetextanchor="middle", textfont=dict(color="white"), showlegend=False,
                         hovertemplate="%{x}: %{y:.4f} spikes per neuron per step<extra></extra>"), row=1, col=1)
    per_epoch = table.groupby("epoch")[columns].mean()
    for column, label in zip(columns, labels, strict=True):
        fig.add_trace(go.Scatter(x=per_epoch.index, y=per_epoch[column], mode="lines+markers", name=label,
                                 hovertemplate=f"{label}, epoch %{{x}}: %{{y:.4f}}<extra></extra>"), row=1, col=2)
    top = min(1.0, max(float(per_epoch.max().max()), float((means + stds).max())) * 1.25 or 0.05)
    fig.update_yaxes(title_text="spikes per neuron per time step", range=[0, top])
    fig.update_xaxes(title_text="epoch", row=1, col=2, **_epoch_ticks(table["epoch"]))
    fig.update_layout(bargap=0.5 if len(columns) > 1 else 0.7)
    return _style(fig, f"Mean firing rate per spiking layer of the best model ({source})", 400)


def _rate_source(exp: Experiment) -> tuple[pd.DataFrame, str]:
    retrain = exp.retrain_metrics
    if retrain is not None and any(c.startswith("rate_") for c in retrain.columns):
        seeds = retrain["seed"].nunique()
        return retrain, f"retrain, test set, last epoch, {'mean ± std over ' if seeds > 1 else ''}{seeds} seed(s)"
    metrics, best = exp.trial_metrics, exp.best_trial_id
    if metrics is not None and best is not None and any(c.startswith("rate_") for c in metrics.columns):
        rows = metrics[metrics["trial_id"].astype(str) == best]
        if not rows.empty:
            return rows.assign(seed=0), f"best trial {best}, test set, its last epoch; no retrain metrics"
    raise MissingData("no rate_* columns in retrain/metrics.csv or in the best trial's rows of trial_metrics.csv")


@dataclass(frozen=True)
class Predictions:
    """The retrained model's predictions on the test images it was evaluated on."""

    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray  # int [N]
    predicted: np.ndarray  # int [N]
    checkpoint: Path

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predicted).mean())


def predict_test_set(exp: ExperimentLike, data_dir: Path | str | None = None) -> Predictions:
    """Load the retrained checkpoint, rebuild its model and predict every test image (cached per folder).

    Uses the test images of the run's own config (its dataset and ``limit_test``), read
    from ``data_dir`` (default: $SNN_DATA_DIR, else ./data) without downloading.
    """
    exp = _experiment(exp)
    key = f"predict_test_set:{data_dir}"
    if key not in exp.cache:
        exp.cache[key] = _predictions_on_test_set(exp, data_dir)
    return exp.cache[key]


def _predictions_on_test_set(exp: Experiment, data_dir: Path | str | None) -> Predictions:
    import torch

    import snn
    from snn.training import resolve_device

    checkpoint = exp.require("checkpoint")
    try:
        saved = snn.read_checkpoint(checkpoint)
        config = snn.RunConfig.from_dict(saved["config"])
        model = snn.build_model(config)
        model.load_state_dict(saved["model"])
        test = snn.read_dataset(data_dir or snn.default_data_dir(), config.dataset, download=False).test
    except (snn.CheckpointError, snn.ConfigError, snn.DataError, KeyError, RuntimeError) as e:
        raise MissingData(f"cannot evaluate the retrained model: {e}") from None
    test = test.head(config.limit_test)
    device = resolve_device("auto")
    model = model.to(device)
    torch.manual_seed(0)  # Poisson input: the same predictions every time the report is built
    predicted = [snn.predict(model, test.float_images(index).to(device)).cpu()
                 for index in torch.arange(len(test)).split(1000)]
    return Predictions(images=test.images.numpy(), labels=test.labels.numpy(),
                           predicted=torch.cat(predicted).numpy(), checkpoint=checkpoint)


def sample_predictions(exp: ExperimentLike, data_dir: Path | str | None = None, n: int = 10,
                       seed: int = 0) -> go.Figure:
    """``n`` random test images with their true and predicted labels (wrong ones in red)."""
    exp = _experiment(exp)
    result = predict_test_set(exp, data_dir)
    picks = np.random.default_rng(seed).choice(len(result.labels), size=min(n, len(result.labels)), replace=False)
    cols = min(5, len(picks))
    rows = math.ceil(len(picks) / cols)
    titles = [f"true {result.labels[i]}, predicted {result.predicted[i]}" for i in picks]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.12)
    for k, i in enumerate(picks):
        fig.add_trace(go.Heatmap(z=result.images[i], colorscale="Greys", showscale=False, zmin=0, zmax=255,
                                 hovertemplate="pixel (%{x}, %{y}): %{z}<extra></extra>"),
                      row=k // cols + 1, col=k % cols + 1)
    for k, annotation in enumerate(fig.layout.annotations):
        wrong = result.labels[picks[k]] != result.predicted[picks[k]]
        annotation.font = dict(size=12, color=BEST_COLOUR if wrong else "#222")
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed")
    for k in range(len(picks)):
        fig.layout[f"yaxis{k + 1 if k else ''}"].scaleanchor = f"x{k + 1 if k else ''}"
    correct = int(sum(result.labels[i] == result.predicted[i] for i in picks))
    return _style(fig, f"{len(picks)} random test images: {correct} predicted correctly (wrong ones in red)",
                  60 + 175 * rows)


def confusion_matrix(exp: ExperimentLike, data_dir: Path | str | None = None) -> go.Figure:
    """The retrained model's confusion matrix on the test set: counts, coloured by share of the true class."""
    exp = _experiment(exp)
    result = predict_test_set(exp, data_dir)
    counts = np.zeros((10, 10), dtype=int)
    np.add.at(counts, (result.labels, result.predicted), 1)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    digits = [str(d) for d in range(10)]
    fig = go.Figure(go.Heatmap(z=share, x=digits, y=digits, text=counts, texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1,
                               colorbar=dict(title=dict(text="share of<br>true class"), tickformat=".0%", x=0.82),
                               hovertemplate="true %{y}, predicted %{x}: %{text} images<extra></extra>"))
    fig.update_xaxes(title_text="predicted digit", type="category", side="bottom", showgrid=False,
                     domain=[0.12, 0.78])
    fig.update_yaxes(title_text="true digit", type="category", autorange="reversed", showgrid=False)
    return _style(fig, f"Confusion matrix of the retrained model on {len(result.labels)} test images "
                       f"(accuracy {result.accuracy:.2%})", 560)


# --- helpers -----------------------------------------------------------------------------------


def _trial_flags(exp: Experiment) -> dict[str, dict[str, bool]]:
    if exp.trials is None:
        return {}
    return {row.trial_id: {"stopped_early": bool(row.stopped_early),
                           "failed": bool(row.diverged) or row.status == "ERROR"}
            for row in exp.trials.itertuples()}


def _epoch_ticks(epochs: pd.Series) -> dict[str, Any]:
    """Whole-number epoch ticks (plotly would label 1.5 between epochs 1 and 2)."""
    return dict(tick0=1, dtick=1) if epochs.max() <= 20 else dict(tickformat="d")


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
