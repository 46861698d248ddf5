"""Arithmetic figures: FLOPs per token against the context, and KV-cache bytes for three attention layouts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .base import figure, legend_above


def flops_figure(contexts: np.ndarray, parts: dict[str, np.ndarray], current: int,
                 font_scale: float = 1.0) -> go.Figure:
    """FLOPs per token as the context grows, stacked by part, with the shares of the MLPs and of attention."""
    colours = {"MLP": "#ff7f0e", "attention projections": "#9ecae1", "attention over the context": "#d62728",
               "unembedding": "#7f7f7f"}
    total = sum(parts.values())
    data = [dict(type="scatter", mode="lines", x=contexts, y=values / 1e6, name=name, stackgroup="f",
                 line=dict(color=colours.get(name, "#1f77b4")),
                 hovertemplate=f"{name}<br>context %{{x}}: %{{y:.1f}} MFLOP<extra></extra>") for name,
                 values in parts.items()]
    attention = parts["attention projections"] + parts["attention over the context"]
    for name, share, dash in (("MLP share (%)", parts["MLP"] / total, "dot"), ("attention share (%)", attention / total,
                                                                               "dash")):
        data.append(dict(type="scatter", mode="lines", x=contexts, y=100 * share, name=name, yaxis="y2",
                         line=dict(color="#333", dash=dash),
                         hovertemplate=f"context %{{x}}: {name} %{{y:.1f}}<extra></extra>"))
    layout = dict(xaxis=dict(title=dict(text="context (tokens the new one attends to)"), type="log",
                             minorloglabels="none"),
                  yaxis=dict(title=dict(text="MFLOP per token")),
                  yaxis2=dict(title=dict(text="share (%)"), overlaying="y", side="right", range=[0, 100]),
                  legend=legend_above(), shapes=[dict(type="line", x0=current, x1=current, y0=0, y1=1, yref="paper",
                                                      line=dict(color="#888", dash="dash"))])
    return figure(data, layout, f"FLOPs per token against the context (dashed: this prompt, {current} tokens)",
                  height=440, font_scale=font_scale, background="white")


def kv_figure(names: Sequence[str], per_token: Sequence[float], whole: Sequence[float], context: int,
              font_scale: float = 1.0) -> go.Figure:
    """KV-cache bytes per token and for the whole context, for multi-head, grouped-query and multi-query attention."""
    data = [dict(type="bar", x=list(names), y=[b / 2**10 for b in per_token], name="per token (KiB)", offsetgroup=1,
                 marker=dict(color="#1f77b4"), hovertemplate="%{x}: %{y:.1f} KiB per token<extra></extra>"),
            dict(type="bar", x=list(names), y=[b / 2**20 for b in whole], name=f"{context:,} tokens (MiB)", yaxis="y2",
                 offsetgroup=2,
                 marker=dict(color="#ff7f0e"), hovertemplate="%{x}: %{y:.0f} MiB<extra></extra>")]
    layout = dict(barmode="group", yaxis=dict(title=dict(text="KiB per token")),
                  yaxis2=dict(title=dict(text=f"MiB for {context:,} tokens"), overlaying="y", side="right"),
                  legend=legend_above())
    return figure(data, layout, "KV-cache size, float32: keys and values of every layer", height=380,
                  font_scale=font_scale, background="white")
