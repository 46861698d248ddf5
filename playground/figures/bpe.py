"""BPE figures: the training text's compression merge by merge, and one step's candidate pairs (BPE vs WordPiece)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .base import figure, legend_above


def compression_figure(bytes_per_token: Sequence[float], vocab: Sequence[int], chosen: int,
                       font_scale: float = 1.0) -> go.Figure:
    """Bytes per token of the training text after each merge (the vocabulary grows by one each time)."""
    steps = np.arange(1, len(bytes_per_token) + 1)
    data = [dict(type="scatter", mode="lines+markers", x=steps, y=list(bytes_per_token), customdata=list(vocab),
                 line=dict(color="#1f77b4"), marker=dict(size=int(4 * font_scale)), name="bytes per token",
                 hovertemplate="merge %{x}: vocabulary %{customdata}, %{y:.3f} bytes per token<extra></extra>")]
    layout = dict(xaxis=dict(title=dict(text="merges learned")), yaxis=dict(title=dict(text="bytes per token")),
                  shapes=[dict(type="line", x0=chosen, x1=chosen, y0=0, y1=1, yref="paper",
                               line=dict(color="#d62728", dash="dash"))])
    return figure(data, layout, "Bytes per token of the training text, merge by merge",
                  height=360, font_scale=font_scale, background="white")


def candidates_figure(labels: Sequence[str], counts: Sequence[int], scores: Sequence[float], title: str,
                      font_scale: float = 1.0) -> go.Figure:
    """The most frequent pairs at one step (BPE merges the first) and WordPiece's score of the same pairs."""
    data = [dict(type="bar", x=list(labels), y=list(counts), name="BPE: pair count", offsetgroup=1,
                 marker=dict(color="#1f77b4"), hovertemplate="%{x}<br>count %{y}<extra></extra>"),
            dict(type="bar", x=list(labels), y=list(scores), name="WordPiece: count(ab) / (count(a)·count(b))",
                 offsetgroup=2, yaxis="y2", marker=dict(color="#ff7f0e"),
                 hovertemplate="%{x}<br>score %{y:.5f}<extra></extra>")]
    layout = dict(xaxis=dict(type="category"), yaxis=dict(title=dict(text="count")),
                  yaxis2=dict(title=dict(text="WordPiece score"), overlaying="y", side="right"), legend=legend_above())
    return figure(data, layout, title, height=380, font_scale=font_scale, background="white")
