"""Inside-a-block figures: the residual's norm, what RMSNorm does to one vector, the gains, the SwiGLU neurons."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .base import SEQUENTIAL, figure, legend_above

GREY, BLUE, RED, GREEN, ORANGE = "#9a9a9a", "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"


def residual_norms_figure(norms: np.ndarray, position_labels: Sequence[str], row_labels: Sequence[str],
                          font_scale: float = 1.0) -> go.Figure:
    """‖residual‖ after the embedding and after every layer (rows) at every position (columns), log colour scale."""
    data = [dict(type="heatmap", z=np.log10(norms).astype(np.float32), x=list(position_labels), y=list(row_labels),
                 customdata=norms, colorscale=SEQUENTIAL, colorbar=dict(title=dict(text="log10 ‖x‖"), thickness=12),
                 hovertemplate="%{y} · %{x}<br>‖x‖ = %{customdata:.1f}<extra></extra>")]
    layout = dict(xaxis=dict(type="category", tickangle=-60, showticklabels=len(position_labels) <= 64,
                             title=dict(text="position")),
                  yaxis=dict(type="category", title=dict(text="residual stream after")))
    title = "The residual stream's norm grows with depth; the first token's is far larger (what attention sinks use)"
    return figure(data, layout, title, height=max(420, 120 + 14 * len(row_labels)), font_scale=font_scale,
                  background="white")


def norm_steps_figure(x: np.ndarray, scale: float, gain: np.ndarray, eps: float, title: str,
                      font_scale: float = 1.0) -> go.Figure:
    """One vector through RMSNorm: x, x / RMS, then times the gain; and LayerNorm's (x - mean) / std beside it."""
    dims = np.arange(len(x))
    normalized = x / scale
    layer_norm = (x - x.mean()) / np.sqrt(x.var() + eps)
    series = (("x (the residual)", x, GREY, "y"), ("x / RMS", normalized, BLUE, "y2"),
              ("x / RMS × gain (what the block reads)", normalized * gain, RED, "y2"),
              ("LayerNorm: (x − mean) / std", layer_norm, GREEN, "y2"))
    data = [dict(type="scatter", mode="markers", x=dims, y=values, name=name, yaxis=axis,
                 xaxis="x" if axis == "y" else "x2",
                 marker=dict(color=colour, size=int(4 * font_scale)),
                 hovertemplate=f"{name}<br>dim %{{x}}: %{{y:.4f}}<extra></extra>") for name, values, colour,
                 axis in series]
    layout = dict(
        legend=legend_above(),
        xaxis=dict(anchor="y", domain=[0, 1], showticklabels=False),
        yaxis=dict(domain=[0.58, 1.0], title=dict(text="x")),
        xaxis2=dict(anchor="y2", domain=[0, 1], title=dict(text="dimension")),
        yaxis2=dict(domain=[0.0, 0.5], title=dict(text="normalised")),
    )
    return figure(data, layout, title, height=520, font_scale=font_scale, background="white")


def gains_figure(gains: np.ndarray, row_labels: Sequence[str], font_scale: float = 1.0) -> go.Figure:
    """Every RMSNorm's gain vector (rows) over the dimensions (columns)."""
    limit = float(np.abs(gains).max()) or 1.0
    data = [dict(type="heatmap", z=gains.astype(np.float32), y=list(row_labels), colorscale="RdBu_r", zmid=0.0,
                 zmin=-limit, zmax=limit, colorbar=dict(title=dict(text="gain"), thickness=12),
                 hovertemplate="%{y} · dim %{x}<br>gain %{z:.4f}<extra></extra>")]
    layout = dict(xaxis=dict(title=dict(text="dimension")), yaxis=dict(type="category", autorange="reversed"))
    return figure(data, layout,
                  "The gain of every RMSNorm (ln1 before attention, ln2 before the MLP, then the final one)",
                  height=max(420, 100 + 9 * len(row_labels)), font_scale=font_scale, background="white")


def neurons_figure(ids: np.ndarray, size: np.ndarray, gate: np.ndarray, up: np.ndarray, post: np.ndarray, title: str,
                   font_scale: float = 1.0) -> go.Figure:
    """The neurons that write the most to the residual: |post| × ‖w2 column‖, with gate, up and post on hover."""
    labels = [f"n{i}" for i in ids]
    custom = np.stack([gate, up, post], axis=-1)
    hover = ("%{y}: writes ‖·‖ = %{x:.4f}<br>gate %{customdata[0]:.3f}, up %{customdata[1]:.3f}, "
             "post %{customdata[2]:.3f}")
    colours = [RED if p < 0 else BLUE for p in post]
    data = [dict(type="bar", orientation="h", x=size, y=labels, marker=dict(color=colours), customdata=custom,
                 hovertemplate=hover + "<extra></extra>")]
    layout = dict(xaxis=dict(title=dict(text="size of its write-out |post| × ‖w2[:, i]‖")),
                  yaxis=dict(type="category", autorange="reversed"))
    return figure(data, layout, title, height=max(360, 100 + 22 * len(ids) * font_scale), font_scale=font_scale,
                  background="white")


def activations_figure(gate: np.ndarray, post: np.ndarray, font_scale: float = 1.0, act: str = "SiLU") -> go.Figure:
    """SiLU, GELU and ReLU as curves, with this token's gate values on the model's own (`act`: SiLU, or Gemma's
    GELU; colour: |post|)."""
    z = np.linspace(min(-6.0, float(gate.min())), max(6.0, float(gate.max())), 400)
    tanh_gelu = lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))  # noqa: E731
    gelu = tanh_gelu(z)
    on = tanh_gelu(gate) if act == "GELU" else gate / (1 + np.exp(-gate))
    data = [dict(type="scatter", mode="lines", x=z, y=z / (1 + np.exp(-z)), name="SiLU(z) = z·σ(z)",
                 line=dict(color=BLUE)),
            dict(type="scatter", mode="lines", x=z, y=gelu, name="GELU (tanh form)",
                 line=dict(color=GREEN, dash="dot")),
            dict(type="scatter", mode="lines", x=z, y=np.maximum(z, 0), name="ReLU",
                 line=dict(color=ORANGE, dash="dash")),
            dict(type="scatter", mode="markers", x=gate, y=on, name="this token's neurons",
                 marker=dict(color=np.abs(post), colorscale=SEQUENTIAL, size=int(5 * font_scale),
                             colorbar=dict(title=dict(text="|post|"), thickness=10)),
                 hovertemplate=f"gate %{{x:.3f}} → {act} %{{y:.3f}}<extra></extra>")]
    title = ("SwiGLU's gate: SiLU of w1·x (GELU and ReLU for contrast), times the up projection w3·x" if act == "SiLU"
             else "GeGLU's gate: GELU (tanh form) of w1·x (SiLU and ReLU for contrast), times the up projection w3·x")
    layout = dict(xaxis=dict(title=dict(text="gate pre-activation z = w1 x")),
                  yaxis=dict(title=dict(text="activation")),
                  legend=legend_above())
    return figure(data, layout, title, height=420, font_scale=font_scale, background="white")
