"""Attention figures: one head's pattern, its four stages, Q/K/V, grouped-query sharing, clickable head grids."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from .base import DIVERGING, MASKED_COLOR, SEQUENTIAL, figure, masked_upper


def attention_heatmap(pattern: np.ndarray, labels: Sequence[str], title: str, font_scale: float = 1.0,
                      window: int | None = None) -> go.Figure:
    """One head's attention pattern: query tokens down, key tokens across, masked cells grey (the future, and with
    a sliding window the keys out of it)."""
    show = len(labels) <= 64  # beyond that ticks overlap; hover still names every token
    data = [dict(
        type="heatmap", z=masked_upper(pattern, window).astype(np.float32), x=list(labels), y=list(labels),
        hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.4f}<extra></extra>",
        colorscale=SEQUENTIAL, zmin=0, zmax=1, hoverongaps=False,
        colorbar=dict(title=dict(text="weight"), thickness=12),
    )]
    layout = dict(
        xaxis=dict(type="category", title=dict(text="key (attended to)"), showticklabels=show, tickangle=-60,
                   showgrid=False, zeroline=False),
        yaxis=dict(type="category", title=dict(text="query (attending)"), showticklabels=show, autorange="reversed",
                   showgrid=False, zeroline=False),
    )
    return figure(data, layout, title, height=min(760, 260 + 14 * len(labels)), font_scale=font_scale)


STAGE_TITLES = {
    "scores": "1. scores<br>q·k",
    "scaled": "2. scaled<br>by 1/√d_head",
    "masked": "3. causal mask<br>future = −∞",
    "softmax": "4. softmax<br>→ weights",
}


def _panels(traces: list[dict], titles: Sequence[str], labels: Sequence[str], title: str, height: int,
            font_scale: float, background: str, x_categorical: bool) -> go.Figure:
    """Heatmaps side by side sharing token rows, built as one dict (make_subplots is slow)."""
    n, gap = len(traces), 0.03
    width = (1 - gap * (n - 1)) / n
    show = len(labels) <= 64
    layout: dict = {"annotations": []}
    data = []
    for i, trace in enumerate(traces):
        suffix = "" if i == 0 else str(i + 1)
        x0 = i * (width + gap)
        xaxis = dict(domain=[x0, x0 + width], anchor=f"y{suffix}", showgrid=False, zeroline=False)
        xaxis.update(type="category", showticklabels=False) if x_categorical else xaxis.update(title="dimension")
        layout[f"xaxis{suffix}"] = xaxis
        layout[f"yaxis{suffix}"] = dict(anchor=f"x{suffix}", type="category", autorange="reversed", showgrid=False,
                                        zeroline=False, showticklabels=show and i == 0)
        data.append({**trace, "type": "heatmap", "xaxis": f"x{suffix}", "yaxis": f"y{suffix}", "showscale": False})
        layout["annotations"].append(dict(text=titles[i], x=x0 + width / 2, y=1.0, xref="paper", yref="paper",
                                          xanchor="center", yanchor="bottom", showarrow=False,
                                          font=dict(size=int(14 * font_scale))))
    return figure(data, layout, title, height=height, font_scale=font_scale, background=background, top=90)


def stages_figure(stages: dict[str, np.ndarray], labels: Sequence[str], title: str,
                  font_scale: float = 1.0, window: int | None = None) -> go.Figure:
    """The four steps from scores to attention weights for one head, side by side; with a sliding window, the
    mask's title says it hides the keys beyond the window too, and the masked cells draw as masked in stages 3
    and 4 (as in the pattern heatmap), not as a weight of 0."""
    titles = dict(STAGE_TITLES)
    if window is not None:
        titles["masked"] = f"3. mask: future and<br>keys {window}+ back = −∞"
    scores_range = float(np.nanmax(np.abs(stages["scores"]))) or 1.0
    traces = []
    for key, name in titles.items():
        z = np.array(stages[key], dtype=np.float64)
        if key in ("masked", "softmax"):
            z = masked_upper(z, window)
        if key == "softmax":
            colour = dict(colorscale=SEQUENTIAL, zmin=0.0, zmax=1.0)
        else:  # one colour range for stages 1-3, so the 1/sqrt(d_head) shrinkage shows as paler colours
            colour = dict(colorscale=DIVERGING, zmin=-scores_range, zmax=scores_range, zmid=0.0)
        traces.append(dict(z=z.astype(np.float32), x=list(labels), y=list(labels), hoverongaps=False, **colour,
                           hovertemplate=f"{name}<br>query %{{y}}<br>key %{{x}}<br>value %{{z:.4f}}<extra></extra>"))
    return _panels(traces, list(titles.values()), labels, title, 380, font_scale, MASKED_COLOR,
                   x_categorical=True)


def vectors_figure(mats: dict[str, np.ndarray], labels: Sequence[str], title: str,
                   font_scale: float = 1.0) -> go.Figure:
    """Token x dimension heatmaps side by side (q, k, v before and after RoPE), one colour scale each."""
    traces = []
    for name, m in mats.items():
        m = np.asarray(m, dtype=np.float32)  # (T, Dh)
        limit = float(np.abs(m).max()) or 1.0
        traces.append(dict(z=m, x=np.arange(m.shape[1]), y=list(labels), colorscale=DIVERGING, zmid=0.0, zmin=-limit,
                           zmax=limit,
                           hovertemplate=f"{name}<br>token %{{y}}<br>dim %{{x}}<br>value %{{z:.4f}}<extra></extra>"))
    height = min(700, 240 + 14 * len(labels))
    return _panels(traces, list(mats), labels, title, height, font_scale, "white", x_categorical=False)


def gqa_figure(n_heads: int, n_kv_heads: int, head: int, font_scale: float = 1.0) -> go.Figure:
    """Which query heads read which key/value head, with the selected head's group highlighted."""
    group = n_heads // n_kv_heads
    selected_kv = head // group
    kv_x = [g * group + (group - 1) / 2 for g in range(n_kv_heads)]
    red, pink, blue, orange, grey = "#d62728", "#ff9896", "#9ecae1", "#fdae6b", "#b0b0b0"
    data = [
        dict(type="scatter", x=[h, kv_x[h // group]], y=[1, 0], mode="lines", hoverinfo="skip", showlegend=False,
             line=dict(color=red if h // group == selected_kv else grey, width=3 if h // group == selected_kv else 1.5))
        for h in range(n_heads)
    ]
    data.append(dict(
        type="scatter", x=list(range(n_heads)), y=[1] * n_heads, mode="markers+text",
        text=[f"Q{h}" for h in range(n_heads)],
        textposition="top center", showlegend=False, hovertemplate="query head %{x}<extra></extra>",
        marker=dict(size=22,
                    color=[red if h == head else pink if h // group == selected_kv else blue for h in range(n_heads)]),
    ))
    data.append(dict(
        type="scatter", x=kv_x, y=[0] * n_kv_heads, mode="markers+text", text=[f"KV{g}" for g in range(n_kv_heads)],
        textposition="bottom center", showlegend=False, customdata=[[g * group,
                                                                     (g + 1) * group - 1] for g in range(n_kv_heads)],
        hovertemplate="key/value head %{text}<br>shared by query heads %{customdata[0]}–%{customdata[1]}"
                      "<extra></extra>",
        marker=dict(size=28, symbol="square", color=[red if g == selected_kv else orange for g in range(n_kv_heads)]),
    ))
    layout = dict(xaxis=dict(visible=False, range=[-0.8, n_heads - 0.2]), yaxis=dict(visible=False, range=[-0.6, 1.6]))
    title = f"Grouped-query attention: {n_heads} query heads share {n_kv_heads} key/value heads ({group} each)"
    return figure(data, layout, title, height=230, font_scale=font_scale, background="white")


# ---------------------------------------------------------------------------------------
# Clickable mosaics (images: a click gives pixel coordinates, which `mosaic_cell` maps back)

@functools.cache
def _colormap() -> np.ndarray:
    """256 x 3 uint8 lookup table for the sequential colour scale (read-only)."""
    rgb = sample_colorscale(SEQUENTIAL, list(np.linspace(0, 1, 256)))
    lut = np.array([[round(float(v)) for v in c[c.index("(") + 1 : -1].split(",")] for c in rgb], dtype=np.uint8)
    lut.flags.writeable = False
    return lut


def _resample(matrix: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a square matrix to size x size (thumbnails)."""
    idx = (np.arange(size) * matrix.shape[0] / size).astype(int)
    return matrix[np.ix_(idx, idx)]


def thumbnail_levels(patterns: np.ndarray, cell: int) -> np.ndarray:
    """Patterns (..., T, T) shrunk to (..., cell, cell) colour levels 0-255, nearest neighbour.

    Small enough to keep for every head of a prompt (30 x 30 bytes each), from which
    `mosaic_of_levels` draws the overview without the patterns themselves.
    """
    T = patterns.shape[-1]
    idx = (np.arange(cell) * T / cell).astype(int)
    shrunk = np.asarray(patterns)[..., idx[:, None], idx[None, :]]
    return (np.clip(shrunk, 0, 1) * 255).astype(np.uint8)


def mosaic_of_levels(levels: np.ndarray, n_tokens: int, gap: int = 2,
                     highlight: tuple[int, int] | Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """Thumbnails (R, C, cell, cell) of colour levels in an R x C grid, as an RGB uint8 image.

    Masked (future) cells of the n_tokens x n_tokens patterns are grey; each `highlight` (row, col) gets a red frame.
    """
    R, C, cell, _ = levels.shape
    img = np.full((R * (cell + gap) + gap, C * (cell + gap) + gap, 3), 255, dtype=np.uint8)
    lut = _colormap()
    future = _resample(np.triu(np.ones((n_tokens, n_tokens), dtype=bool), k=1), cell)
    for r in range(R):
        for c in range(C):
            thumb = lut[levels[r, c]]
            thumb[future] = (217, 217, 217)
            y, x = gap + r * (cell + gap), gap + c * (cell + gap)
            img[y : y + cell, x : x + cell] = thumb
    cells = [] if not highlight else [highlight] if isinstance(highlight[0], (int, np.integer)) else highlight
    red, size = (214, 39, 40), cell + 2 * gap
    for r, c in cells:
        y, x = r * (cell + gap), c * (cell + gap)
        img[y : y + size, x : x + gap] = img[y : y + size, x + cell + gap : x + size] = red
        img[y : y + gap, x : x + size] = img[y + cell + gap : y + size, x : x + size] = red
    return img


def mosaic(patterns: np.ndarray, cell: int, gap: int = 2, highlight: tuple[int, int] | None = None) -> np.ndarray:
    """Thumbnails of patterns (R, C, T, T) in an R x C grid, as an RGB uint8 image (see `mosaic_of_levels`)."""
    return mosaic_of_levels(thumbnail_levels(patterns, cell), patterns.shape[-1], gap, highlight)


def mosaic_cell(x: int, y: int, rows: int, cols: int, cell: int, gap: int = 2) -> tuple[int, int] | None:
    """The (row, col) of the thumbnail under pixel (x, y) of a `mosaic`, or None between cells."""
    r, c = (y - gap) // (cell + gap), (x - gap) // (cell + gap)
    if 0 <= r < rows and 0 <= c < cols:
        return int(r), int(c)
    return None
