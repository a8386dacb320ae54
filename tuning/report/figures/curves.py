"""Learning curves: the best trial's, the retrain's across seeds, and every trial's tuned metric."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..folder import MissingData
from .common import (
    BEST_COLOUR,
    SPLIT_COLOURS,
    ExperimentLike,
    as_experiment,
    epoch_ticks,
    metric_label,
    rgba,
    style,
    trial_flags,
)


def learning_curves(exp: ExperimentLike, trial_id: str | None = None) -> go.Figure:
    """The best trial's (or ``trial_id``'s) accuracy and loss per epoch, train vs test (and val)."""
    exp = as_experiment(exp)
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
                fig.add_trace(
                    go.Scatter(
                        x=rows["epoch"],
                        y=rows[column],
                        name=split,
                        legendgroup=split,
                        showlegend=col == 1,
                        mode="lines+markers",
                        line=dict(color=colour),
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="epoch", **epoch_ticks(rows["epoch"]))
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    return style(fig, f"Best trial {trial_id}: learning curves", 400)


def retrain_curves(exp: ExperimentLike) -> go.Figure:
    """The retrain of the best configuration: accuracy and loss per epoch, mean +- std across seeds."""
    exp = as_experiment(exp)
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
            fill = rgba(colour, 0.2)
            fig.add_trace(
                go.Scatter(
                    x=stats.index,
                    y=upper,
                    mode="lines",
                    line=dict(width=0),
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=split,
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=stats.index,
                    y=lower,
                    mode="lines",
                    line=dict(width=0),
                    fill="tonexty",
                    fillcolor=fill,
                    hoverinfo="skip",
                    name=f"{split} ± std",
                    showlegend=False,
                    legendgroup=split,
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=stats.index,
                    y=stats["mean"],
                    mode="lines+markers",
                    name=split,
                    legendgroup=split,
                    showlegend=col == 1,
                    line=dict(color=colour),
                    customdata=stats["std"],
                    hovertemplate="epoch %{x}: %{y:.4f} ± %{customdata:.4f}",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="epoch", **epoch_ticks(table["epoch"]))
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    band = "mean ± std over" if len(seeds) > 1 else "one seed,"
    return style(fig, f"Retrain of the best configuration: {band} seeds {', '.join(map(str, seeds))}", 400)


def trial_curves(exp: ExperimentLike) -> go.Figure:
    """Every trial's tuned metric per epoch; an x marks where ASHA stopped a trial early."""
    exp = as_experiment(exp)
    metrics, metric = exp.require("trial_metrics"), exp.metric
    if metric not in metrics.columns:
        raise MissingData(f"trial_metrics.csv has no {metric} column")
    flags = trial_flags(exp)
    best = exp.best_trial_id
    groups = {
        "ran to the last epoch": "#1f77b4",
        "stopped early by ASHA": "#9467bd",
        "silent: stopped by the spike probe": "#bcbd22",
        "errored or diverged": "#7f7f7f",
        "the seed's configuration": "#2ca02c",
        "best trial": BEST_COLOUR,
    }
    shown: set[str] = set()
    fig = go.Figure()
    for trial_id, rows in metrics.groupby(metrics["trial_id"].astype(str), sort=False):
        rows = rows.sort_values("epoch")
        flag = flags.get(trial_id, {})
        group = (
            "best trial"
            if trial_id == best
            else "the seed's configuration"
            if flag.get("seed_trial")
            else "stopped early by ASHA"
            if flag.get("stopped_early")
            else "silent: stopped by the spike probe"
            if flag.get("silent")
            else "errored or diverged"
            if flag.get("failed")
            else "ran to the last epoch"
        )
        symbols = ["circle"] * (len(rows) - 1) + ["x" if flag.get("stopped_early") else "circle"]
        sizes = [4] * (len(rows) - 1) + [10 if flag.get("stopped_early") else 6]
        fig.add_trace(
            go.Scatter(
                x=rows["epoch"],
                y=rows[metric],
                mode="lines+markers",
                name=group,
                legendgroup=group,
                showlegend=group not in shown,
                line=dict(color=groups[group], width=3 if group == "best trial" else 1.2),
                marker=dict(symbol=symbols, size=sizes),
                opacity=1.0 if group == "best trial" else 0.7,
                hovertemplate=f"trial {trial_id}<br>epoch %{{x}}: %{{y:.4f}}<extra>{group}</extra>",
            )
        )
        shown.add(group)
    stopped = sum(1 for f in flags.values() if f.get("stopped_early"))
    fig.update_xaxes(title_text="epoch", **epoch_ticks(metrics["epoch"]))
    fig.update_yaxes(title_text=metric_label(metric), tickformat=".1%")
    return style(
        fig,
        f"Every trial's {metric_label(metric)} per epoch "
        f"({stopped} of {metrics['trial_id'].nunique()} stopped early by ASHA, marked x)",
        450,
    )
