"""The retrained model: firing rates per spiking layer, predictions on test images, the confusion matrix."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..folder import Experiment, MissingData
from .common import BEST_COLOUR, ExperimentLike, as_experiment, epoch_ticks, style

# What each spiking layer is, by model (names are the attributes in snn/models.py).
LAYER_NAMES = {
    "fc": {"sn": "output"},
    "csnn": {"sn1": "conv1 (encoder)", "sn2": "conv2", "sn3": "fc1", "sn4": "output"},
}


def firing_rates(exp: ExperimentLike) -> go.Figure:
    """Mean firing rate of each spiking layer of the best model on the test set: at the last epoch, and per epoch."""
    exp = as_experiment(exp)
    table, source = _rate_source(exp)
    columns = [c for c in table.columns if c.startswith("rate_")]
    last = table.sort_values("epoch").groupby("seed").tail(1)
    means, stds = last[columns].mean(), last[columns].std(ddof=0)
    names = LAYER_NAMES.get(exp.model or "", {})
    layers = [c.removeprefix("rate_") for c in columns]
    labels = [f"{layer}: {names[layer]}" if layer in names else layer for layer in layers]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], subplot_titles=("At the last epoch", "Per epoch"))
    fig.add_trace(
        go.Bar(
            x=labels,
            y=means,
            error_y=dict(type="data", array=stds, visible=len(last) > 1),
            marker_color="#1f77b4",
            text=[f"{m:.3f}" for m in means],
            textposition="inside",
            insidetextanchor="middle",
            textfont=dict(color="white"),
            showlegend=False,
            hovertemplate="%{x}: %{y:.4f} spikes per neuron per step<extra></extra>",
        ),
        row=1,
        col=1,
    )
    per_epoch = table.groupby("epoch")[columns].mean()
    for column, label in zip(columns, labels, strict=True):
        fig.add_trace(
            go.Scatter(
                x=per_epoch.index,
                y=per_epoch[column],
                mode="lines+markers",
                name=label,
                hovertemplate=f"{label}, epoch %{{x}}: %{{y:.4f}}<extra></extra>",
            ),
            row=1,
            col=2,
        )
    top = min(1.0, max(float(per_epoch.max().max()), float((means + stds).max())) * 1.25 or 0.05)
    fig.update_yaxes(title_text="spikes per neuron per time step", range=[0, top])
    fig.update_xaxes(title_text="epoch", row=1, col=2, **epoch_ticks(table["epoch"]))
    fig.update_layout(bargap=0.5 if len(columns) > 1 else 0.7)
    return style(fig, f"Mean firing rate per spiking layer of the best model ({source})", 400)


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
    """The retrained model's predictions on its test images, as the retrain saved them."""

    labels: np.ndarray  # int [N]
    predicted: np.ndarray  # int [N]
    sample_images: np.ndarray  # uint8 [n, 28, 28]: a few test images to show
    sample_index: np.ndarray  # int [n]: their places in labels / predicted

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predicted).mean())


def predictions(exp: ExperimentLike) -> Predictions:
    """retrain/predictions.npz of the experiment; MissingData when the retrain has not written it."""
    saved = as_experiment(exp).require("predictions")
    return Predictions(
        labels=saved["labels"],
        predicted=saved["predicted"],
        sample_images=saved["sample_images"],
        sample_index=saved["sample_index"],
    )


def sample_predictions(exp: ExperimentLike) -> go.Figure:
    """The retrain's sample test images with their true and predicted labels (wrong ones in red)."""
    result = predictions(exp)
    picks = result.sample_index
    cols = min(5, len(picks))
    rows = math.ceil(len(picks) / cols)
    titles = [f"true {result.labels[i]}, predicted {result.predicted[i]}" for i in picks]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02, vertical_spacing=0.12)
    for k, image in enumerate(result.sample_images):
        fig.add_trace(
            go.Heatmap(
                z=image,
                colorscale="Greys",
                showscale=False,
                zmin=0,
                zmax=255,
                hovertemplate="pixel (%{x}, %{y}): %{z}<extra></extra>",
            ),
            row=k // cols + 1,
            col=k % cols + 1,
        )
    for k, annotation in enumerate(fig.layout.annotations):
        wrong = result.labels[picks[k]] != result.predicted[picks[k]]
        annotation.font = dict(size=12, color=BEST_COLOUR if wrong else "#222")
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed")
    for k in range(len(picks)):
        fig.layout[f"yaxis{k + 1 if k else ''}"].scaleanchor = f"x{k + 1 if k else ''}"
    correct = int(sum(result.labels[i] == result.predicted[i] for i in picks))
    return style(
        fig, f"{len(picks)} random test images: {correct} predicted correctly (wrong ones in red)", 60 + 175 * rows
    )


def confusion_counts(exp: ExperimentLike) -> np.ndarray:
    """Test images per (true digit, predicted digit): int [10, 10]."""
    result = predictions(exp)
    counts = np.zeros((10, 10), dtype=int)
    np.add.at(counts, (result.labels, result.predicted), 1)
    return counts


def confusion_matrix(exp: ExperimentLike) -> go.Figure:
    """The retrained model's confusion matrix on the test set: counts, coloured by share of the true class."""
    counts = confusion_counts(exp)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    digits = [str(d) for d in range(10)]
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=digits,
            y=digits,
            text=counts,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar=dict(title=dict(text="share of<br>true class"), tickformat=".0%", x=0.82),
            hovertemplate="true %{y}, predicted %{x}: %{text} images<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="predicted digit", type="category", side="bottom", showgrid=False, domain=[0.12, 0.78])
    fig.update_yaxes(title_text="true digit", type="category", autorange="reversed", showgrid=False)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    return style(
        fig, f"Confusion matrix of the retrained model on {counts.sum()} test images (accuracy {accuracy:.2%})", 560
    )
