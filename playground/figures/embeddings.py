"""Embedding figures: nearest tokens, every token's norm, a 2-D projection, a row read out as an output."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .base import figure, legend_above

CHOSEN, SPECIAL, OTHER = "#d62728", "#ff7f0e", "#1f77b4"


def neighbours_figure(labels: Sequence[str], cosine: np.ndarray, title: str, font_scale: float = 1.0) -> go.Figure:
    """The nearest tokens by cosine similarity of their embedding rows."""
    data = [dict(type="bar", orientation="h", x=cosine, y=list(labels), marker=dict(color=OTHER),
                 hovertemplate="%{y}<br>cosine %{x:.4f}<extra></extra>")]
    layout = dict(xaxis=dict(title=dict(text="cosine similarity"), range=[0, 1]), yaxis=dict(type="category",
                                                                                             autorange="reversed"))
    return figure(data, layout, title, height=max(320, 100 + 24 * len(labels) * font_scale), font_scale=font_scale,
                  background="white")


def norms_figure(norms: np.ndarray, special: Sequence[int], chosen: Sequence[tuple[int, str]], title: str,
                 font_scale: float = 1.0) -> go.Figure:
    """Every token's embedding norm as a histogram, with the special tokens and the chosen ones marked."""
    counts, edges = np.histogram(norms, bins=120)  # binned here: 120 bars travel, not 49,152 numbers
    centres = (edges[:-1] + edges[1:]) / 2
    data = [dict(type="bar", x=centres, y=counts, width=float(edges[1] - edges[0]), name="all tokens",
                 marker=dict(color="#c9c9c9"), customdata=np.stack([edges[:-1], edges[1:]], axis=-1),
                 hovertemplate="norm %{customdata[0]:.2f}–%{customdata[1]:.2f}<br>%{y} tokens<extra></extra>")]
    data.append(dict(type="scatter", mode="markers", x=[float(norms[t]) for t in special], y=[0] * len(special),
                     name="special tokens", marker=dict(color=SPECIAL, size=int(12 * font_scale), symbol="diamond"),
                     hovertemplate="special token<br>norm %{x:.3f}<extra></extra>"))
    data.append(dict(type="scatter", mode="markers+text", x=[float(norms[t]) for t, _ in chosen], y=[0] * len(chosen),
                     text=[label for _, label in chosen], textposition="top center", name="chosen",
                     marker=dict(color=CHOSEN, size=int(12 * font_scale)),
                     hovertemplate="%{text}<br>norm %{x:.3f}<extra></extra>"))
    layout = dict(xaxis=dict(title=dict(text="‖embedding row‖")), yaxis=dict(title=dict(text="tokens")),
                  legend=legend_above(),
                  bargap=0.02)
    return figure(data, layout, title, height=360, font_scale=font_scale, background="white")


def pca_figure(points: np.ndarray, labels: Sequence[str], explained: np.ndarray, font_scale: float = 1.0) -> go.Figure:
    """The chosen tokens' embedding rows on their first two principal components."""
    data = [dict(type="scatter", mode="markers+text", x=points[:, 0], y=points[:, 1], text=list(labels),
                 textposition="top center", marker=dict(color=OTHER, size=int(10 * font_scale)),
                 textfont=dict(size=int(13 * font_scale)),
                 hovertemplate="%{text}<br>(%{x:.3f}, %{y:.3f})<extra></extra>")]
    layout = dict(xaxis=dict(title=dict(text=f"PC 1 ({100 * explained[0]:.0f}% of the variance)"), zeroline=False),
                  yaxis=dict(title=dict(text=f"PC 2 ({100 * explained[1]:.0f}%)"), zeroline=False))
    return figure(data, layout, "The chosen tokens' embedding rows, projected on their first two principal components",
                  height=440, font_scale=font_scale, background="white")


def readout_figure(labels: Sequence[str], probs: np.ndarray, self_label: str, title: str,
                   font_scale: float = 1.0) -> go.Figure:
    """The embedding row read as an output: the tokens it would predict through the final norm and the unembedding."""
    colours = [CHOSEN if label == self_label else OTHER for label in labels]
    data = [dict(type="bar", orientation="h", x=probs, y=list(labels), marker=dict(color=colours),
                 hovertemplate="%{y}<br>p = %{x:.4f}<extra></extra>")]
    layout = dict(xaxis=dict(title=dict(text="probability")), yaxis=dict(type="category", autorange="reversed"))
    return figure(data, layout, title, height=max(320, 100 + 24 * len(labels) * font_scale), font_scale=font_scale,
                  background="white")
