"""Intervention figures: the distribution before and after an ablation, a layer sweep, a patching map, attribution."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .base import DIVERGING, figure, legend_above

BEFORE, AFTER, ATTN, MLP = "#9a9a9a", "#d62728", "#1f77b4", "#ff7f0e"


def ablation_figure(labels: Sequence[str], before: np.ndarray, after: np.ndarray, title: str,
                    font_scale: float = 1.0) -> go.Figure:
    """The most likely next tokens, with their probability before (grey) and after the ablation (red)."""
    y = list(labels)
    change = after - before
    data = [
        dict(type="bar", orientation="h", x=before, y=y, name="before", marker=dict(color=BEFORE),
             hovertemplate="%{y}<br>before: p = %{x:.4f}<extra></extra>"),
        dict(type="bar", orientation="h", x=after, y=y, name="after the ablation", marker=dict(color=AFTER),
             customdata=change, hovertemplate="%{y}<br>after: p = %{x:.4f} (%{customdata:+.4f})<extra></extra>"),
    ]
    layout = dict(barmode="group", xaxis=dict(title=dict(text="probability")), legend=legend_above(),
                  yaxis=dict(type="category", autorange="reversed"))
    return figure(data, layout, title, height=max(320, 110 + 34 * len(y) * font_scale), font_scale=font_scale,
                  background="white")


def layer_sweep_figure(loss_attn: np.ndarray, loss_mlp: np.ndarray, diff_attn: np.ndarray, diff_mlp: np.ndarray,
                       base_loss: float, base_diff: float, pair: str, mode: str, font_scale: float = 1.0) -> go.Figure:
    """Per layer, what ablating its attention block or its MLP does: the change in the prompt's loss (top) and in
    the logit difference (bottom)."""
    layers = np.arange(len(loss_attn))
    panels = (("y", loss_attn - base_loss, loss_mlp - base_loss, "Δ loss (nats)"),
              ("y2", diff_attn - base_diff, diff_mlp - base_diff, f"Δ logit difference {pair}"))
    data = []
    for axis, attn, mlp, what in panels:
        for name, values, colour in (("attention", attn, ATTN), ("MLP", mlp, MLP)):
            data.append(dict(type="bar", x=layers, y=values, name=name, yaxis=axis, xaxis="x" if axis == "y" else "x2",
                             marker=dict(color=colour), legendgroup=name, showlegend=axis == "y",
                             hovertemplate=f"layer %{{x}} {name} ablated<br>{what}: %{{y:+.4f}}<extra></extra>"))
    layout = dict(
        barmode="group", legend=legend_above(),
        xaxis=dict(anchor="y", domain=[0, 1], showticklabels=False),
        yaxis=dict(domain=[0.55, 1.0], title=dict(text="Δ loss"), zeroline=True),
        xaxis2=dict(anchor="y2", domain=[0, 1], title=dict(text="layer ablated")),
        yaxis2=dict(domain=[0.0, 0.45], title=dict(text="Δ logit diff"), zeroline=True),
    )
    title = (f"Each layer's attention and MLP ablated in turn ({mode}): loss {base_loss:.3f} nats, "
             f"logit difference {base_diff:+.3f} without ablation")
    return figure(data, layout, title, height=520, font_scale=font_scale, background="white")


def patching_figure(values: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], title: str,
                    column_title: str, font_scale: float = 1.0) -> go.Figure:
    """Normalised logit difference of each patch: rows are layers (bottom to top), columns positions or heads.
    1 = the patch restores the clean answer, 0 = no effect; rows not yet run are blank."""
    data = [dict(
        type="heatmap", z=values.astype(np.float32), x=list(column_labels), y=list(row_labels), colorscale=DIVERGING,
        zmid=0.0, zmin=-1.0, zmax=1.0, hoverongaps=False, colorbar=dict(title=dict(text="restored"), thickness=12),
        hovertemplate="%{y} · %{x}<br>normalised logit difference %{z:.3f}<extra></extra>",
    )]
    layout = dict(xaxis=dict(type="category", title=dict(text=column_title), tickangle=-60),
                  yaxis=dict(type="category", title=dict(text="layer")))
    return figure(data, layout, title, height=max(420, 140 + 16 * len(row_labels)), font_scale=font_scale,
                  background="#f2f2f2")


def attribution_figure(labels: Sequence[str], parts: np.ndarray, total: float, pair: str,
                       font_scale: float = 1.0) -> go.Figure:
    """Each component's direct contribution to the logit difference; they add up to the model's own."""
    colours = ["#555" if label == "embed" else ATTN if label.endswith("attn") else MLP for label in labels]
    data = [dict(type="bar", x=list(labels), y=parts, marker=dict(color=colours),
                 hovertemplate="%{x}: %{y:+.4f}<extra></extra>")]
    layout = dict(xaxis=dict(type="category", tickangle=-60,
                             title=dict(text="component (blue: attention, orange: MLP)")),
                  yaxis=dict(title=dict(text=f"contribution to {pair}")))
    title = f"Direct logit attribution of {pair}: the parts sum to {parts.sum():+.4f}; the model's own is {total:+.4f}"
    return figure(data, layout, title, height=420, font_scale=font_scale, background="white")


def head_attribution_figure(heads: np.ndarray, font_scale: float = 1.0) -> go.Figure:
    """Each head's direct contribution (layers down, heads across), through its slice of W_O."""
    L, H = heads.shape
    limit = float(np.abs(heads).max()) or 1.0
    data = [dict(type="heatmap", z=heads.astype(np.float32), x=[f"H{h}" for h in range(H)],
                 y=[f"L{l}" for l in range(L)],
                 colorscale=DIVERGING, zmid=0.0, zmin=-limit, zmax=limit, colorbar=dict(thickness=12),
                 hovertemplate="%{y} %{x}: %{z:+.4f}<extra></extra>")]
    layout = dict(xaxis=dict(type="category", side="top"), yaxis=dict(type="category", autorange="reversed"))
    return figure(data, layout, "Each head's share (they sum to its layer's attention part)",
                  height=max(420, 120 + 18 * L),
                  font_scale=font_scale, background="white")
