"""The Lab's figures: an attention pattern, what it does to each token's surprisal, a window sweep, flash attention's
tiles, and scaling laws."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .base import SEQUENTIAL, cell_font, figure, legend_above

UNCHANGED, CHANGED, OPTIMAL = "#7f7f7f", "#d62728", "#2ca02c"
SINK_COLOURS = {0: "#d62728", 4: "#1f77b4"}


def mask_figure(mask: np.ndarray, labels: Sequence[str], title: str, font_scale: float = 1.0) -> go.Figure:
    """The pattern: query tokens down, keys across; seen (blue), hidden by the pattern though causal (orange), the
    future (grey, as the causal mask hides it)."""
    T = mask.shape[0]
    z = np.where(mask, 1.0, 0.0)
    z[np.triu_indices(T, k=1)] = np.nan
    show = T <= 64
    data = [dict(type="heatmap", z=z.astype(np.float32), x=list(labels), y=list(labels), zmin=0, zmax=1,
                 colorscale=[[0, "#f4a259"], [0.5, "#f4a259"], [0.5, "#1f5fa8"], [1, "#1f5fa8"]], showscale=False,
                 hoverongaps=False, hovertemplate="query %{y}<br>key %{x}<br>%{z:.0f} = seen<extra></extra>")]
    keys = "key (blue: seen; orange: hidden by the pattern; grey: the future)"
    layout = dict(xaxis=dict(type="category", title=dict(text=keys), showticklabels=show, tickangle=-60,
                             showgrid=False),
                  yaxis=dict(type="category", title=dict(text="query"), showticklabels=show, autorange="reversed",
                             showgrid=False))
    return figure(data, layout, title, height=min(620, 240 + 12 * T), font_scale=font_scale)


def mask_result_figure(labels: Sequence[str], surprisal: np.ndarray, surprisal_masked: np.ndarray, kl: np.ndarray,
                       changed: np.ndarray, title: str, font_scale: float = 1.0) -> go.Figure:
    """Top: each token's surprisal (bits) unchanged and with the pattern; bottom: the KL of each position's
    next-token distribution to the unchanged one, positions whose top-1 changed marked."""
    T = len(labels)
    tokens = np.arange(1, T)  # surprisal is of token t given the ones before
    positions = np.arange(T)
    data = [
        dict(type="scatter", mode="lines+markers", x=tokens, y=surprisal, name="unchanged", yaxis="y",
             line=dict(color=UNCHANGED), customdata=list(labels[1:]),
             hovertemplate="%{customdata}<br>unchanged: %{y:.2f} bits<extra></extra>"),
        dict(type="scatter", mode="lines+markers", x=tokens, y=surprisal_masked, name="with the pattern", yaxis="y",
             line=dict(color=CHANGED), customdata=list(labels[1:]),
             hovertemplate="%{customdata}<br>with the pattern: %{y:.2f} bits<extra></extra>"),
        dict(type="bar", x=positions, y=kl, name="KL (nats)", yaxis="y2", xaxis="x2", marker=dict(color="#9467bd"),
             customdata=list(labels), hovertemplate="after %{customdata}<br>KL %{y:.4f} nats<extra></extra>"),
        dict(type="scatter", mode="markers", x=changed, y=kl[changed] if len(changed) else [], yaxis="y2",
             xaxis="x2", name="top-1 changed", marker=dict(symbol="x", size=int(9 * font_scale), color="#000"),
             hovertemplate="position %{x}: the most likely next token changed<extra></extra>"),
    ]
    layout = dict(legend=legend_above(),
                  xaxis=dict(anchor="y", domain=[0, 1], showticklabels=False, range=[-0.5, T - 0.5]),
                  yaxis=dict(domain=[0.52, 1.0], title=dict(text="surprisal of token t (bits)"), rangemode="tozero"),
                  xaxis2=dict(anchor="y2", domain=[0, 1], range=[-0.5, T - 0.5],
                              title=dict(text="t (below: KL of the prediction made at t, of token t + 1)")),
                  yaxis2=dict(domain=[0.0, 0.42], title=dict(text="KL (nats)"), rangemode="tozero"))
    return figure(data, layout, title, height=480, font_scale=font_scale, background="white")


def sweep_figure(curves: dict[int, list[tuple[int, float]]], unchanged: float, T: int, title: str,
                 font_scale: float = 1.0) -> go.Figure:
    """Loss (nats per token) against window size, one line per sink count; the unchanged model's loss dashed."""
    data = [dict(type="scatter", mode="lines+markers", x=[w for w, _ in points], y=[loss for _, loss in points],
                 name=f"{sinks} sinks + window" if sinks else "window alone",
                 line=dict(color=SINK_COLOURS.get(sinks, "#444"), width=2 * font_scale),
                 marker=dict(size=int(8 * font_scale)),
                 hovertemplate=f"window %{{x}}, {sinks} sinks<br>loss %{{y:.3f}} nats<extra></extra>")
            for sinks, points in sorted(curves.items())]
    data.append(dict(type="scatter", mode="lines", x=[1, T], y=[unchanged, unchanged], name="causal",
                     line=dict(color=UNCHANGED, dash="dash"), hoverinfo="skip"))
    windows = sorted({w for points in curves.values() for w, _ in points})
    layout = dict(legend=legend_above(), xaxis=dict(type="log", title=dict(text="window W (keys seen, log scale)"),
                                                    tickvals=windows, ticktext=[str(w) for w in windows], tickangle=0),
                  yaxis=dict(title=dict(text="loss (nats per token)")))
    return figure(data, layout, title, height=420, font_scale=font_scale, background="white")


Tile = tuple[tuple[int, int], tuple[int, int]]  # (query rows, keys), each [start, end)
MAX_OUTLINED = 600  # tiles outlined at most (the current one always is)


def flash_figure(scores: np.ndarray, tiles_done: list[Tile], skipped: list[Tile], current: Tile,
                 rows: np.ndarray, tile_max: np.ndarray, running_max: np.ndarray, running_sum: np.ndarray,
                 partial: np.ndarray, title: str, font_scale: float = 1.0) -> go.Figure:
    """Left: the scaled scores q·k/√d (the matrix the tiled form never holds whole), the tiles computed so far
    outlined, this step's in red, tiles the causal mask skips hatched grey. Right, for this step's query rows: the
    tile's row maxima and the running max m, the running sum l, and the partial output acc / l."""
    T = scores.shape[0]
    shown = np.where(np.isfinite(scores), scores, np.nan).astype(np.float32)
    data = [
        dict(type="heatmap", z=shown, colorscale=SEQUENTIAL, xaxis="x", yaxis="y", hoverongaps=False,
             colorbar=dict(title=dict(text="q·k/√d"), thickness=10, x=0.5, len=0.9),
             hovertemplate="query %{y}, key %{x}<br>score %{z:.3f}<extra></extra>"),
        dict(type="scatter", mode="lines+markers", x=rows, y=tile_max, name="this tile's row max", xaxis="x2",
             yaxis="y2", line=dict(color="#ff7f0e", dash="dot"),
             hovertemplate="row %{x}: tile max %{y:.3f}<extra></extra>"),
        dict(type="scatter", mode="lines+markers", x=rows, y=running_max, name="running max m", xaxis="x2",
             yaxis="y2", line=dict(color="#d62728"), hovertemplate="row %{x}: m = %{y:.3f}<extra></extra>"),
        dict(type="scatter", mode="lines+markers", x=rows, y=running_sum, name="running sum l", xaxis="x3",
             yaxis="y3", line=dict(color="#1f77b4"), hovertemplate="row %{x}: l = %{y:.3f}<extra></extra>"),
        dict(type="heatmap", z=partial.astype(np.float32), x=np.arange(partial.shape[1]), y=rows, xaxis="x4",
             yaxis="y4", colorscale="RdBu_r", zmid=0, showscale=False,
             hovertemplate="row %{y}, dim %{x}<br>partial output %{z:.4f}<extra></extra>"),
    ]

    def box(rows_: tuple[int, int], keys: tuple[int, int], **line) -> dict:
        return dict(type="rect", xref="x", yref="y", x0=keys[0] - 0.5, x1=keys[1] - 0.5, y0=rows_[0] - 0.5,
                    y1=rows_[1] - 0.5, **line)
    shapes = []
    if len(tiles_done) + len(skipped) <= MAX_OUTLINED:  # beyond that Plotly's shapes slow the page down
        shapes += [box(r, k, line=dict(color="#333", width=1)) for r, k in tiles_done]
        shapes += [box(r, k, line=dict(width=0), fillcolor="rgba(120,120,120,0.35)") for r, k in skipped]
    shapes.append(box(*current, line=dict(color="#d62728", width=3 * font_scale)))
    side = dict(showgrid=True, zeroline=False)
    layout = dict(
        shapes=shapes, legend=legend_above(),
        xaxis=dict(domain=[0, 0.46], range=[-0.5, T - 0.5], title=dict(text="key"), showgrid=False),
        yaxis=dict(domain=[0, 1], range=[T - 0.5, -0.5], title=dict(text="query"), showgrid=False),
        xaxis2=dict(domain=[0.6, 1], anchor="y2", showticklabels=False, **side),
        yaxis2=dict(domain=[0.7, 1], anchor="x2", title=dict(text="max"), **side),
        xaxis3=dict(domain=[0.6, 1], anchor="y3", title=dict(text="query row"), matches="x2", **side),
        yaxis3=dict(domain=[0.4, 0.62], anchor="x3", title=dict(text="sum l"), rangemode="tozero", **side),
        xaxis4=dict(domain=[0.6, 1], anchor="y4", title=dict(text="partial output acc / l (dims)"), **side),
        yaxis4=dict(domain=[0, 0.3], anchor="x4", title=dict(text="row"), autorange="reversed", **side),
    )
    return figure(data, layout, title, height=500, font_scale=font_scale, background="#d9d9d9")


def kaplan_figure(N: np.ndarray, power: np.ndarray, fit_x: np.ndarray, fit_y: np.ndarray, exp_curve: np.ndarray,
                  model_n: float, model_loss: float | None, title: str, font_scale: float = 1.0) -> go.Figure:
    """Kaplan's L(N) and an exponential fitted through points of it, on log-log axes (left) and linear ones (right):
    alike on linear axes over the points, apart everywhere else."""
    data = []
    for axis, show in (("", True), ("2", False)):
        data += [
            dict(type="scatter", mode="lines", x=N, y=power, name="power law (Kaplan)", xaxis=f"x{axis}",
                 yaxis=f"y{axis}", line=dict(color="#1f77b4", width=2 * font_scale), showlegend=show,
                 legendgroup="power", hovertemplate="N %{x:.3s}<br>L %{y:.3f}<extra></extra>"),
            dict(type="scatter", mode="lines", x=N, y=exp_curve, name="exponential fit",
                 xaxis=f"x{axis}", yaxis=f"y{axis}", line=dict(color="#d62728", dash="dash", width=2 * font_scale),
                 showlegend=show, legendgroup="exp", hovertemplate="N %{x:.3s}<br>fit %{y:.3f}<extra></extra>"),
            dict(type="scatter", mode="markers", x=fit_x, y=fit_y, name="fitted dots", xaxis=f"x{axis}",
                 yaxis=f"y{axis}", marker=dict(color="#000", size=int(6 * font_scale)), showlegend=show,
                 legendgroup="pts", hoverinfo="skip"),
        ]
    marker = dict(type="scatter", mode="markers+text", x=[model_n], y=[model_loss], text=["this model"],
                  textposition="top right", name="this model", showlegend=False, marker=dict(symbol="star", size=int(
                      13 * font_scale), color=OPTIMAL), textfont=dict(size=cell_font(font_scale) + 2),
                  hovertemplate="this model: N %{x:.3s}<br>measured loss %{y:.3f} nats<extra></extra>")
    if model_loss is not None:
        data.append(marker)
    layout = dict(legend=legend_above(),
                  xaxis=dict(domain=[0, 0.46], type="log", title=dict(text="non-embedding parameters N (log)")),
                  yaxis=dict(type="log", title=dict(text="loss, nats (log)")),
                  xaxis2=dict(domain=[0.56, 1], anchor="y2", title=dict(text="N (linear)"),
                              range=[0, float(fit_x.max()) * 1.05]),
                  yaxis2=dict(anchor="x2", title=dict(text="loss (linear)")))
    return figure(data, layout, title, height=440, font_scale=font_scale, background="white", top=80)


def data_figure(D: np.ndarray, loss: np.ndarray, trained: float | None, trained_loss: float | None, title: str,
                font_scale: float = 1.0) -> go.Figure:
    """Kaplan's L(D) on log-log axes, this model's training tokens marked."""
    data = [dict(type="scatter", mode="lines", x=D, y=loss, name="Kaplan L(D)",
                 line=dict(color="#1f77b4", width=2 * font_scale),
                 hovertemplate="D %{x:.3s} tokens<br>L %{y:.3f}<extra></extra>")]
    if trained is not None:
        data.append(dict(type="scatter", mode="markers+text", x=[trained], y=[trained_loss], text=["this model's D"],
                         textposition="top right", name="this model",
                         marker=dict(symbol="star", size=int(13 * font_scale), color=CHANGED),
                         textfont=dict(size=cell_font(font_scale) + 2),
                         hovertemplate="D %{x:.3s} tokens<br>L(D) %{y:.3f}<extra></extra>"))
    layout = dict(legend=legend_above(), xaxis=dict(type="log", title=dict(text="training tokens D (log)")),
                  yaxis=dict(type="log", title=dict(text="loss, nats (log)")))
    return figure(data, layout, title, height=360, font_scale=font_scale, background="white", top=80)


def isoflop_figure(N: np.ndarray, loss: np.ndarray, best: tuple[float, float], model: tuple[float, float],
                   title: str, font_scale: float = 1.0) -> go.Figure:
    """Chinchilla's L(N, C / 6N) along one compute budget: the optimum marked, and this model's own N and D."""
    data = [dict(type="scatter", mode="lines", x=N, y=loss, name="L(N, D = C / 6N)",
                 line=dict(color="#1f77b4", width=2 * font_scale),
                 hovertemplate="N %{x:.3s}<br>predicted loss %{y:.3f}<extra></extra>"),
            dict(type="scatter", mode="markers", x=[best[0]], y=[best[1]], name="compute-optimal",
                 marker=dict(color=OPTIMAL, size=int(12 * font_scale), symbol="diamond"),
                 hovertemplate="optimal N %{x:.3s}<br>loss %{y:.3f}<extra></extra>"),
            dict(type="scatter", mode="markers", x=[model[0]], y=[model[1]], name="this model (the fit)",
                 marker=dict(color=CHANGED, size=int(12 * font_scale), symbol="star"),
                 hovertemplate="this model: N %{x:.3s}<br>the fit predicts %{y:.3f}<extra></extra>")]
    layout = dict(legend=legend_above(), xaxis=dict(type="log", title=dict(text="parameters N (log)")),
                  yaxis=dict(title=dict(text="Chinchilla fit, nats")))
    return figure(data, layout, title, height=400, font_scale=font_scale, background="white", top=80)
