"""Figures the tour and decks add: the prompt's tokens as a table, and a continuation's token probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from .base import figure


def tokens_table(labels: Sequence[str], ids: Sequence[int], pieces: Sequence[str], title: str,
                 font_scale: float = 1.0) -> go.Figure:
    """Each token: its position, text (whitespace shown), id, and the bytes it stands for."""
    size = int(14 * font_scale)
    data = [dict(type="table", columnwidth=[1, 4, 2, 4],
                 header=dict(values=["#", "token", "id", "bytes"], font=dict(size=size),
                             height=int(30 * font_scale), fill=dict(color="#e8eef7"), align="left"),
                 cells=dict(values=[list(range(len(labels))), list(labels), list(ids), list(pieces)],
                            font=dict(size=size), height=int(26 * font_scale), align="left"))]
    return figure(data, {}, title, height=90 + 27 * min(len(labels), 14), font_scale=font_scale, background="white")


def continuation_figure(labels: Sequence[str], probs: Sequence[float], title: str,
                        font_scale: float = 1.0) -> go.Figure:
    """Each generated token and the probability the model gave it, in order."""
    x = [f"{i + 1}. {label}" for i, label in enumerate(labels)]
    data = [dict(type="bar", x=x, y=list(probs), marker=dict(color="#1f77b4"), text=[f"{p:.2f}" for p in probs],
                 textposition="outside", hovertemplate="%{x}: p = %{y:.4f}<extra></extra>")]
    layout = dict(yaxis=dict(title=dict(text="probability when chosen"), range=[0, 1.1]),
                  xaxis=dict(type="category", tickangle=-45))
    return figure(data, layout, title, height=360, font_scale=font_scale, background="white")
