"""Routes figures: the information-flow graph of one prediction, and an attention score split into its causes."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .base import DIVERGING, figure

ATTN, MLP, RESID, NODE = "#1f77b4", "#ff7f0e", "#9a9a9a", "#333333"
MLP_OFFSET = 0.3  # an MLP's square sits this far right of its position, half-way up its layer


def level_name(level: int) -> str:
    """A graph level: 0 the embedding, 2l + 1 after layer l's attention, 2l + 2 after its MLP."""
    if level == 0:
        return "embedding"
    layer = (level - 1) // 2
    return f"after L{layer} attention" if level % 2 else f"after L{layer}"


def routes_figure(edges: Sequence[tuple], n_layers: int, tokens: Sequence[str], position: int, threshold: float,
                  font_scale: float = 1.0) -> go.Figure:
    """The routes back from `position` at the top: positions across (the prompt's tokens at the bottom), layers up.
    `edges`: (kind, layer, source, target, importance, hover) with kind "attn" (one per key -> query, its heads
    merged), "attn_resid", "mlp" or "mlp_resid"; importance in [0, 1] sets the width. Nodes, attention edges'
    midpoints and MLP squares carry their identity as JSON in customdata (clicks pick them)."""
    segments: dict[tuple[str, int], tuple[list, list]] = {}
    nodes: dict[tuple[int, int], None] = {}
    attn_marks, mlp_marks = [], []
    for kind, layer, source, target, importance, hover in edges:
        width = int(round(float(importance) * 4))  # five widths
        xs, ys = segments.setdefault(("resid" if kind.endswith("resid") else kind, width), ([], []))
        if kind == "attn" or kind == "attn_resid":
            low, high = 2 * layer, 2 * layer + 1
            xs += [source, target, None]
            ys += [low, high, None]
            nodes[(low, source)] = nodes[(high, target)] = None
            if kind == "attn":
                attn_marks.append(((source + target) / 2, low + 0.5, hover,
                                   json.dumps({"attn": [layer, source, target]})))
        else:
            low, high = 2 * layer + 1, 2 * layer + 2
            if kind == "mlp":
                xs += [source, source + MLP_OFFSET, source, None]
                ys += [low, low + 0.5, high, None]
                mlp_marks.append((source + MLP_OFFSET, low + 0.5, hover, json.dumps({"mlp": [layer, source]})))
            else:
                xs += [source, source, None]
                ys += [low, high, None]
            nodes[(low, source)] = nodes[(high, source)] = None
    nodes.setdefault((2 * n_layers, position), None)
    colours = {"attn": ATTN, "mlp": MLP, "resid": RESID}
    data = [dict(type="scatter", mode="lines", x=xs, y=ys, hoverinfo="skip", showlegend=False,
                 line=dict(color=colours[kind], width=(1 + 2.5 * width) * font_scale),
                 opacity=0.55 if kind == "resid" else 0.85)
            for (kind, width), (xs, ys) in sorted(segments.items())]
    if attn_marks:
        x, y, text, pick = zip(*attn_marks)
        data.append(dict(type="scatter", mode="markers", x=x, y=y, text=text, customdata=pick, name="attention",
                         showlegend=False, marker=dict(color=ATTN, size=9 * font_scale, opacity=0.5),
                         hovertemplate="%{text}<extra></extra>"))
    if mlp_marks:
        x, y, text, pick = zip(*mlp_marks)
        data.append(dict(type="scatter", mode="markers", x=x, y=y, text=text, customdata=pick, name="MLP",
                         showlegend=False, marker=dict(color=MLP, symbol="square", size=10 * font_scale),
                         hovertemplate="%{text}<extra></extra>"))
    levels, places = zip(*nodes) if nodes else ((), ())
    data.append(dict(type="scatter", mode="markers", x=places, y=levels, name="residual state",
                     text=[f"{level_name(lv)} at {tokens[p]}" for lv, p in nodes],
                     customdata=[json.dumps({"node": [lv, p]}) for lv, p in nodes],
                     marker=dict(color=NODE, size=8 * font_scale), hovertemplate="%{text}<extra></extra>"))
    for name, colour in (("attention: a head, key → query", ATTN), ("MLP output", MLP), ("residual", RESID)):
        data.append(dict(type="scatter", mode="lines", x=[None], y=[None], name=name, line=dict(color=colour, width=4)))
    every = math.ceil(n_layers / (10 if font_scale > 1 else 40))  # layer labels that fit (a projector's is capped)
    shown = [l for l in range(n_layers) if (n_layers - 1 - l) % every == 0]  # always the last layer
    layout = dict(
        xaxis=dict(tickmode="array", tickvals=list(range(len(tokens))), ticktext=list(tokens), tickangle=-60,
                   range=[-0.7, len(tokens) - 0.3], showgrid=False, zeroline=False),
        yaxis=dict(tickmode="array", tickvals=[0] + [2 * l + 2 for l in shown],
                   ticktext=["embed"] + [f"L{l}" for l in shown], range=[-0.8, 2 * n_layers + 0.8], showgrid=False,
                   zeroline=False),
        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"), hovermode="closest",
    )
    title = f"Routes to the prediction after {tokens[position]} (edges above {threshold:g}, renormalised)"
    return figure(data, layout, title, height=max(380, 140 + 12 * (2 * n_layers + 1)), font_scale=font_scale,
                  background="white", top=70)


def split_figure(terms: np.ndarray, labels: Sequence[str], query: str, key: str, score: float, title: str,
                 font_scale: float = 1.0) -> go.Figure:
    """An attention score split into (query-side component) x (key-side component) terms: rows the query side,
    columns the key side; the cells sum to the score."""
    terms = np.asarray(terms, dtype=np.float64)
    span = float(np.abs(terms).max()) or 1.0
    data = [dict(type="heatmap", z=terms, x=list(labels), y=list(labels), colorscale=DIVERGING, zmin=-span,
                 zmax=span, colorbar=dict(title=dict(text="term")),
                 hovertemplate=f"query side: %{{y}} at {query}<br>key side: %{{x}} at {key}<br>"
                               "term %{z:+.3f}<extra></extra>")]
    layout = dict(xaxis=dict(title=dict(text=f"key side (at {key})"), type="category", tickangle=-60),
                  yaxis=dict(title=dict(text=f"query side (at {query})"), type="category", autorange="reversed"))
    side = 220 + 14 * len(labels)
    return figure(data, layout, f"{title}: score {score:+.3f} = the sum of these cells", height=side,
                  font_scale=font_scale, background="white")
