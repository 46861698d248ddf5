"""Pure plotting functions for the sampler: next-token bars, the chain's stages, two orders, samples, text."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from .base import SEQUENTIAL, cell_font, figure, legend_above, probability_colour

KEPT_COLOUR = "#2b7bba"
RAW_COLOUR = "#c9c9c9"
PRESENTER_RAW_COLOUR = "#8a8a8a"  # light grey vanishes on a washed-out projector
STEP_COLOURS = {  # the step that removed a token
    "repetition penalty": qualitative.Set2[0], "penalties": qualitative.Set2[1], "temperature": qualitative.Set2[2],
    "top-k": qualitative.Set2[3], "top-p": qualitative.Set2[4], "min-p": qualitative.Set2[5],
    "typical-p": qualitative.Set2[6], "epsilon": qualitative.Set2[7], "eta": qualitative.Dark2[0],
    "top-n-sigma": qualitative.Dark2[1],
}


def distribution_bars(labels: Sequence[str], raw: np.ndarray, final: np.ndarray, removed_by: Sequence[str | None],
                      title: str, font_scale: float = 1.0) -> go.Figure:
    """Top tokens as horizontal bars: the final probability (blue) over the raw one (grey, or the
    colour of the step that removed the token)."""
    grey = PRESENTER_RAW_COLOUR if font_scale > 1 else RAW_COLOUR
    raw_colours = [grey if step is None else STEP_COLOURS.get(step, "#999") for step in removed_by]
    fates = ["kept" if step is None else f"removed by {step}" for step in removed_by]
    y = list(labels)
    data = [
        dict(type="bar", orientation="h", x=raw, y=y, name="raw softmax", marker=dict(color=raw_colours),
             customdata=fates, hovertemplate="%{y}<br>raw p = %{x:.4f} (%{customdata})<extra></extra>"),
        dict(type="bar", orientation="h", x=final, y=y, name="after the sampler", marker=dict(color=KEPT_COLOUR),
             customdata=fates, hovertemplate="%{y}<br>p = %{x:.4f} (%{customdata})<extra></extra>"),
    ]
    for step, colour in STEP_COLOURS.items():  # legend entries for the steps that removed something here
        if step in removed_by:
            data.append(dict(type="bar", orientation="h", x=[None], y=[y[0]], name=f"removed by {step}",
                             marker=dict(color=colour)))
    layout = dict(barmode="overlay", bargap=0.15,
                  xaxis=dict(title=dict(text="probability"),
                             range=[0, max(1e-9, float(max(raw.max(), final.max()))) * 1.05]),
                  yaxis=dict(type="category", autorange="reversed"),
                  legend=legend_above())
    return figure(data, layout, title, height=max(320, 110 + 24 * len(y) * font_scale),
                  font_scale=font_scale, background="white")


def stages_matrix(labels: Sequence[str], probs: np.ndarray, stage_names: Sequence[str], kept: Sequence[int],
                  entropy: Sequence[float], title: str, font_scale: float = 1.0) -> go.Figure:
    """Tokens (rows) by stages (columns): the probability after each step, grey once removed."""
    columns = [f"{name}<br>{k:,} kept · {h:.2f} bits" for name, k, h in zip(stage_names, kept, entropy)]
    z = np.where(probs > 0, probs, np.nan).astype(np.float32)
    text = np.where(probs > 0, np.char.mod("%.3f", probs), "–")
    data = [dict(type="heatmap", z=z, x=columns, y=list(labels), text=text, texttemplate="%{text}",
                 textfont=dict(size=cell_font(font_scale)), colorscale=SEQUENTIAL, zmin=0,
                 zmax=float(np.nanmax(z)) if np.isfinite(z).any() else 1,
                 hovertemplate="%{y}<br>%{x}<br>p = %{z:.5f}<extra></extra>", hoverongaps=False,
                 colorbar=dict(title=dict(text="p"), thickness=12))]
    layout = dict(xaxis=dict(type="category", side="top"), yaxis=dict(type="category", autorange="reversed"))
    return figure(data, layout, title, height=max(320, 150 + 22 * len(labels) * font_scale),
                  font_scale=font_scale, top=90)  # room for the title above two lines of stage names


def orders_figure(labels: Sequence[str], p_hf: np.ndarray, p_llama: np.ndarray, title: str,
                  font_scale: float = 1.0) -> go.Figure:
    """The same logits and settings through both chains; tokens kept by one and not the other are marked."""
    differs = (p_hf > 0) != (p_llama > 0)
    shown = [f"<b>≠ {label}</b>" if d else label for label, d in zip(labels, differs)]
    data = [
        dict(type="bar", x=shown, y=p_hf, name="HF transformers order", marker=dict(color="#ff7f0e"),
             hovertemplate="%{x}<br>HF order p = %{y:.4f}<extra></extra>"),
        dict(type="bar", x=shown, y=p_llama, name="llama.cpp order (temperature last)", marker=dict(color="#6a3d9a"),
             hovertemplate="%{x}<br>llama.cpp order p = %{y:.4f}<extra></extra>"),
    ]
    layout = dict(barmode="group", xaxis=dict(type="category", tickangle=-60),
                  yaxis=dict(title=dict(text="probability")),
                  legend=legend_above())
    suffix = f" ({int(differs.sum())} token(s) kept by one order only: ≠)" if differs.any() else " (same tokens kept)"
    return figure(data, layout, title + suffix, height=380, font_scale=font_scale, background="white")


def samples_figure(labels: Sequence[str], probs: np.ndarray, empirical: np.ndarray, n: int, seed: int,
                   font_scale: float = 1.0) -> go.Figure:
    """The analytic distribution with the empirical frequencies of n seeded draws over it."""
    data = [
        dict(type="bar", x=list(labels), y=probs, name="distribution", marker=dict(color=KEPT_COLOUR),
             hovertemplate="%{x}<br>p = %{y:.4f}<extra></extra>"),
        dict(type="scatter", mode="markers", x=list(labels), y=empirical, name=f"{n:,} draws, seed {seed}",
             marker=dict(color="#d62728", size=int(11 * font_scale), symbol="line-ew-open", line=dict(width=3)),
             hovertemplate="%{x}<br>drawn %{y:.4f} of the time<extra></extra>"),
    ]
    layout = dict(xaxis=dict(type="category", tickangle=-60), yaxis=dict(title=dict(text="probability / frequency")),
                  legend=legend_above())
    return figure(data, layout, "Seeded samples against the distribution", height=360,
                  font_scale=font_scale, background="white")


def attention_row_figure(labels: Sequence[str], weights: np.ndarray, generated_from: int, title: str,
                         font_scale: float = 1.0) -> go.Figure:
    """What the newest token attends to: one weight per earlier position (prompt grey, generated tokens blue)."""
    grey = PRESENTER_RAW_COLOUR if font_scale > 1 else RAW_COLOUR
    colours = [grey if i < generated_from else KEPT_COLOUR for i in range(len(labels))]
    data = [dict(type="bar", x=list(labels), y=weights, marker=dict(color=colours),
                 hovertemplate="%{x}<br>weight %{y:.4f}<extra></extra>")]
    layout = dict(xaxis=dict(type="category", tickangle=-60, showticklabels=len(labels) <= 64),
                  yaxis=dict(title=dict(text="attention weight"), range=[0, 1]))
    return figure(data, layout, title, height=340, font_scale=font_scale, background="white")


def generated_html(prompt_text: str, pieces: Sequence[str], probs: Sequence[float], large: bool = False,
                   ids: Sequence[int] = ()) -> str:
    """The prompt, then each generated token shaded by the probability it was chosen with (hover for it); `ids`
    go in data-id attributes (a prepared link carries the continuation)."""
    out = [f'<div class="gen{" large" if large else ""}"><span class="prompt">{html.escape(prompt_text)}</span>']
    for i, (piece, p) in enumerate(zip(pieces, probs)):
        colour = probability_colour(p)
        data = f' data-id="{int(ids[i])}"' if i < len(ids) else ""
        out.append(f'<span class="gtok"{data} style="background:{colour}" title="step {i + 1}: p = {p:.4f}">'
                   f'{html.escape(piece)}</span>')
    out.append("</div>")
    return "".join(out)


GENERATION_CSS = """
.gen { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap; line-height: 1.8;
  font-size: 15px; color: #111; }
.gen.large { font-size: 24px; }
.gen .prompt { color: #666; }
.gen .gtok { border-radius: 3px; padding: 1px 0; }
"""
