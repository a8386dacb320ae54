"""What the networks spend: accuracy against synaptic operations, spikes per layer, the cost table.

Every trial's last epoch carries the evaluator's spike figures (``snn.spikes``), so these
figures exist for single-objective searches too; with ``--objective accuracy,synops`` the
front drawn here is the one the search selected from (``tuning.experiment.pareto_front``).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ... import experiment as files
from ..folder import Experiment, MissingData
from .common import BEST_COLOUR, ExperimentLike, as_experiment, metric_label, style

SEED_COLOUR = "#2ca02c"
COST_ROWS = (  # (label, record key without the split, how to print it)
    ("test accuracy", "acc", "{:.2%}"),
    ("spikes per image", "spikes_per_image", "{:,.0f}"),
    ("SynOps per image", "synops_per_image", "{:,.0f}"),
    ("dense MACs per image (the same ANN)", "dense_macs_per_image", "{:,.0f}"),
    ("energy per image, estimate (µJ)", "energy_estimate_uj", "{:.3g}"),
)


def _cost_column(exp: Experiment) -> str:
    """trials.csv's SynOps column on the split the search tuned on."""
    return f"last_{files.objective_metric('synops', exp.metric)}"


def pareto_info(exp: ExperimentLike) -> pd.DataFrame:
    """One row per trial with a result: accuracy, SynOps per image, how it ended, on the front or not."""
    exp = as_experiment(exp)
    trials, accuracy, cost = exp.require("trials"), f"last_{exp.metric}", _cost_column(exp)
    if trials.empty or accuracy not in trials.columns:
        raise MissingData("no trial has finished an epoch yet")
    if cost not in trials.columns:
        raise MissingData(f"trials.csv has no {cost} column: the trials were run before spikes were counted")
    records = trials.to_dict("records")
    front = {r["trial_id"] for r in files.pareto_front(records, accuracy, cost)}
    table = pd.DataFrame(
        {
            "trial_id": trials["trial_id"],
            "accuracy": pd.to_numeric(trials[accuracy], errors="coerce"),
            "synops": pd.to_numeric(trials[cost], errors="coerce"),
            "ran_to_the_end": [files.ran_to_the_end(r) for r in records],
            "on_front": trials["trial_id"].isin(front),
            "seed_trial": trials[files.SEED_TRIAL],
            "selected": trials["trial_id"] == exp.best_trial_id,
            "retrained": trials["trial_id"].isin(
                {str(p["trial_id"]) for p in (exp.summary or {}).get("pareto_retrain") or []}
            ),
            "network": trials[files.NETWORK] if files.NETWORK in trials.columns else "",
        }
    )
    table = table[table["accuracy"].notna() & table["synops"].notna()]
    if table.empty:
        raise MissingData("no trial has both an accuracy and a SynOps count yet")
    return table


def pareto(exp: ExperimentLike) -> go.Figure:
    """Accuracy against SynOps per image (log axis): the front, the others greyed, the seed and the choice marked."""
    exp = as_experiment(exp)
    table = pareto_info(exp)
    fig = go.Figure()
    groups = (
        ("stopped early or silent (not on the front)", ~table["ran_to_the_end"], "x", "#c7c7c7"),
        ("dominated", table["ran_to_the_end"] & ~table["on_front"], "circle", "#9e9e9e"),
        ("Pareto front", table["on_front"], "circle", "#1f77b4"),
    )
    for label, mask, symbol, colour in groups:
        rows = table[mask]
        if not rows.empty:
            fig.add_trace(
                go.Scatter(
                    x=rows["synops"],
                    y=rows["accuracy"],
                    mode="markers",
                    name=label,
                    marker=dict(symbol=symbol, size=9, color=colour),
                    text=rows["trial_id"],
                    customdata=rows["network"],
                    hovertemplate="trial %{text}: %{customdata}<br>%{x:,.0f} SynOps/image<br>%{y:.2%}<extra></extra>",
                )
            )
    front = table[table["on_front"]].sort_values("synops")
    fig.add_trace(
        go.Scatter(
            x=front["synops"],
            y=front["accuracy"],
            mode="lines",
            name="front",
            line=dict(color="#1f77b4", shape="hv", width=1),
            hoverinfo="skip",
        )
    )
    for label, mask, symbol, colour, size in (
        ("the seed's configuration", table["seed_trial"], "diamond", SEED_COLOUR, 14),
        ("retrained with --retrain-pareto", table["retrained"], "star-open", BEST_COLOUR, 18),
        ("selected (retrained)", table["selected"], "star", BEST_COLOUR, 16),
    ):
        rows = table[mask]
        if not rows.empty:
            fig.add_trace(
                go.Scatter(
                    x=rows["synops"],
                    y=rows["accuracy"],
                    mode="markers",
                    name=label,
                    marker=dict(symbol=symbol, size=size, color=colour, line=dict(width=1, color="#333")),
                    text=rows["trial_id"],
                    hovertemplate="trial %{text}<br>%{x:,.0f} SynOps/image<br>%{y:.2%}<extra></extra>",
                )
            )
    fig.update_xaxes(title_text="synaptic operations per image (log scale)", type="log")
    fig.update_yaxes(title_text=f"{metric_label(exp.metric)} at the trial's last epoch", tickformat=".1%")
    return style(
        fig, f"Accuracy against SynOps: {int(table['on_front'].sum())} of {len(table)} trials on the Pareto front", 460
    )


def front_networks(exp: ExperimentLike) -> go.Figure:
    """The networks on the Pareto front by shape, from the most accurate to the cheapest, with what they spend."""
    table = pareto_info(exp)
    front = table[table["on_front"]].sort_values("accuracy", ascending=False)
    if front.empty:
        raise MissingData("no trial on the Pareto front yet: none ran all its epochs")
    marks = [
        " (selected)" if sel else " (retrained)" if ret else " (seed's)" if seed else ""
        for sel, ret, seed in zip(front["selected"], front["retrained"], front["seed_trial"])
    ]
    cells = [
        [f"{t}{m}" for t, m in zip(front["trial_id"], marks)],
        [str(n) if isinstance(n, str) and n else "-" for n in front["network"]],
        [f"{a:.2%}" for a in front["accuracy"]],
        [f"{c:,.0f}" for c in front["synops"]],
    ]
    fig = go.Figure(
        go.Table(
            header=dict(
                values=["trial", "network", metric_label(exp.metric), "SynOps per image"],
                align="left",
                fill_color="#eef2f7",
            ),
            cells=dict(values=cells, align=["left", "left", "right", "right"], height=26),
            columnwidth=[1.4, 4, 1.2, 1.4],
        )
    )
    return style(fig, f"The {len(front)} networks on the Pareto front, by shape", 120 + 28 * len(front))


def cost_table_info(exp: ExperimentLike) -> dict[str, dict[str, float]]:
    """For the seed's configuration (its trial's last epoch) and the selected one (the retrain's last epoch,
    mean over seeds; else its trial's): accuracy and the spike costs on the test split."""
    exp = as_experiment(exp)
    columns: dict[str, dict[str, float]] = {}
    metrics, trials = exp.trial_metrics, exp.trials
    if metrics is not None and trials is not None and trials[files.SEED_TRIAL].any():
        seed_id = str(trials.loc[trials[files.SEED_TRIAL], "trial_id"].iloc[0])
        columns["the seed's configuration (trial 0, its last epoch)"] = _last_epoch(
            metrics[metrics["trial_id"] == seed_id]
        )
    retrain = exp.retrain_metrics
    if retrain is not None and "test_synops_per_image" in retrain.columns:
        last = retrain.sort_values(files.EPOCH).groupby("seed").tail(1)
        columns[f"selected, retrained (last epoch, mean of {len(last)} seed(s))"] = _last_epoch(last, mean=True)
    elif metrics is not None and exp.best_trial_id is not None:
        columns[f"selected: trial {exp.best_trial_id}, its last epoch"] = _last_epoch(
            metrics[metrics["trial_id"] == exp.best_trial_id]
        )
    columns = {k: v for k, v in columns.items() if v}
    if not columns:
        raise MissingData("no spike figures in trial_metrics.csv or retrain/metrics.csv")
    return columns


def _last_epoch(rows: pd.DataFrame, mean: bool = False) -> dict[str, float]:
    if rows.empty:
        return {}
    last = rows if mean else rows.sort_values(files.EPOCH).tail(1)
    return {key: float(last[f"test_{key}"].mean()) for _, key, _ in COST_ROWS if f"test_{key}" in last.columns}


def cost_table(exp: ExperimentLike) -> go.Figure:
    """The table of ``cost_table_info``: accuracy, spikes, SynOps, dense MACs and energy per image."""
    info = cost_table_info(exp)
    header = ["per test image"] + list(info)
    cells = [[label for label, _, _ in COST_ROWS]]
    for values in info.values():
        cells.append([fmt.format(values[key]) if key in values else "-" for _, key, fmt in COST_ROWS])
    fig = go.Figure(
        go.Table(
            header=dict(values=header, align="left", fill_color="#eef2f7"),
            cells=dict(values=cells, align=["left"] + ["right"] * len(info), height=26),
        )
    )
    return style(
        fig, "What the networks spend (energy: 0.9 pJ per SynOp, 4.6 pJ per encoder MAC, 45 nm; an estimate)", 300
    )


def spikes_per_layer(exp: ExperimentLike) -> go.Figure:
    """Spikes per image of each spiking layer of the selected configuration (retrain's last epoch, else its trial's)."""
    exp = as_experiment(exp)
    table = exp.retrain_metrics
    source = "retrain, last epoch, mean over seeds"
    if table is None or not any(c.startswith("test_spikes_") for c in table.columns):
        metrics, best = exp.trial_metrics, exp.best_trial_id
        if metrics is None or best is None:
            raise MissingData("no test_spikes_<layer> columns in retrain/metrics.csv or trial_metrics.csv")
        table, source = metrics[metrics["trial_id"] == best].assign(seed=0), f"trial {best}, its last epoch"
    layers = [c for c in table.columns if c.startswith("test_spikes_") and c != "test_spikes_per_image"]
    if not layers or table.empty:
        raise MissingData("no test_spikes_<layer> columns for the selected configuration")
    last = table.sort_values(files.EPOCH).groupby("seed").tail(1)
    values = last[layers].mean()
    names = [c.removeprefix("test_spikes_") for c in layers]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=values,
            text=[f"{v:,.0f}" for v in values],
            textposition="outside",
            marker_color="#1f77b4",
            hovertemplate="%{x}: %{y:,.1f} spikes per image<extra></extra>",
        )
    )
    fig.update_yaxes(title_text="spikes per image (summed over T)")
    return style(fig, f"Spikes per layer of the selected configuration ({source})", 380)
