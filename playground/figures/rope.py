"""RoPE figures: pairs before and after rotation, angles, decay with distance, scores, relative vs absolute."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ..rope_formulas import decay_curve, rope_frequencies, rotate_pairs, sinusoidal_encoding
from .base import cell_font, figure, legend_above

Q_COLOUR, K_COLOUR, BEFORE_COLOUR = "#d62728", "#1f77b4", "#9a9a9a"


def pair_rotation_figure(
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],  # name -> (before (d,), after (d,))
    position: int,
    base: float,
    title: str,
    font_scale: float = 1.0,
    columns: int = 8,
) -> go.Figure:
    """Each frequency pair as a 2-D vector before (grey) and after rotation, one small cell per pair.

    Fast pairs (small i) turn by many radians per position, slow pairs barely move. Each cell
    is scaled to its own largest vector (rotation keeps lengths, so direction is what changes);
    exact values are on hover.
    """
    d = len(next(iter(vectors.values()))[0])
    n_pairs = d // 2
    frequencies = rope_frequencies(d, base)
    rows = -(-n_pairs // columns)
    norms = np.stack([np.hypot(v[0::2], v[1::2]) for pair in vectors.values() for v in pair])  # (vectors, pairs)
    largest = np.where(norms.max(0) > 0, norms.max(0), 1.0)[:, None]  # (pairs, 1): each cell's own scale
    centre = np.array([[(i % columns) * 2.6, -(i // columns) * 2.6] for i in range(n_pairs)])
    circle = np.linspace(0, 2 * np.pi, 41)
    data = [dict(  # faint unit circles, one per pair, in a single trace
        type="scatter", mode="lines", hoverinfo="skip", showlegend=False, line=dict(color="#e3e3e3", width=1),
        x=np.concatenate([np.append(c[0] + np.cos(circle), None) for c in centre]),
        y=np.concatenate([np.append(c[1] + np.sin(circle), None) for c in centre]),
    )]
    colours = {0: Q_COLOUR, 1: K_COLOUR}
    for n, (name, (before, after)) in enumerate(vectors.items()):
        for kind, vec, colour, dash in (("before", before, BEFORE_COLOUR, "dot"),
                                        ("after RoPE", after, colours.get(n, "#2ca02c"), "solid")):
            tips = np.stack([vec[0::2], vec[1::2]], axis=-1) / largest + centre  # (pairs, 2)
            xs = np.concatenate([[c[0], t[0], None] for c, t in zip(centre, tips)])
            ys = np.concatenate([[c[1], t[1], None] for c, t in zip(centre, tips)])
            data.append(dict(type="scatter", mode="lines", x=xs, y=ys, line=dict(color=colour, width=2, dash=dash),
                             name=f"{name} {kind}", legendgroup=f"{name} {kind}", hoverinfo="skip"))
            angle = position * frequencies
            custom = np.stack([np.arange(n_pairs), frequencies, angle, np.degrees(angle) % 360, vec[0::2], vec[1::2]],
                              axis=-1)
            data.append(dict(
                type="scatter", mode="markers", x=tips[:, 0], y=tips[:, 1], marker=dict(color=colour, size=6),
                legendgroup=f"{name} {kind}", showlegend=False, customdata=custom,
                hovertemplate=(f"{name} {kind}<br>pair %{{customdata[0]:.0f}}: "
                               "θ = %{customdata[1]:.3g} rad/position<br>"
                               "angle at this position %{customdata[2]:.3f} rad (%{customdata[3]:.1f}°)<br>"
                               "(x₂ᵢ, x₂ᵢ₊₁) = (%{customdata[4]:.3f}, %{customdata[5]:.3f})<extra></extra>"),
            ))
    data.append(dict(type="scatter", mode="text", x=centre[:, 0], y=centre[:, 1] + 1.18,
                     text=[f"pair {i}" for i in range(n_pairs)],
                     hoverinfo="skip", showlegend=False, textfont=dict(size=cell_font(font_scale), color="#555")))
    layout = dict(
        xaxis=dict(visible=False, scaleanchor="y", range=[-1.3, (columns - 1) * 2.6 + 1.3]),
        yaxis=dict(visible=False, range=[-(rows - 1) * 2.6 - 1.3, 1.5]),
        legend=legend_above(),
    )
    return figure(data, layout, title, height=120 + 125 * rows, font_scale=font_scale, background="white")


def angle_heatmap(position_labels: Sequence[str], d_head: int, base: float, title: str,
                  font_scale: float = 1.0) -> go.Figure:
    """The angle m * theta_i (mod 2 pi) of every pair at every position of the prompt."""
    T = len(position_labels)
    angles = np.arange(T, dtype=np.float64)[:, None] * rope_frequencies(d_head, base)[None, :]  # (T, d/2)
    custom = np.stack([angles, angles / (2 * np.pi)], axis=-1)
    data = [dict(
        type="heatmap", z=np.mod(angles, 2 * np.pi).astype(np.float32), x=np.arange(d_head // 2),
        y=list(position_labels),
        customdata=custom, colorscale="Twilight", zmin=0, zmax=2 * np.pi,
        colorbar=dict(title=dict(text="angle (rad)"), thickness=12, tickvals=[0, np.pi, 2 * np.pi],
                      ticktext=["0", "π", "2π"]),
        hovertemplate="position %{y}, pair %{x}<br>angle %{customdata[0]:.3f} rad = %{customdata[1]:.3f} turns"
                      "<extra></extra>",
    )]
    layout = dict(xaxis=dict(title=dict(text="pair i (fast → slow)")),
                  yaxis=dict(type="category", autorange="reversed", title=dict(text="position"),
                             showticklabels=T <= 64))
    return figure(data, layout, title, height=min(640, 220 + 12 * T), font_scale=font_scale, background="white")


def decay_figure(d_head: int, model_base: float, base: float, max_distance: int, font_scale: float = 1.0) -> go.Figure:
    """q.k against relative distance for q = k = ones, at the model's base and the chosen one."""
    distances = np.unique(np.round(np.geomspace(1, max_distance, 400)).astype(int))
    distances = np.concatenate([[0], distances])
    data = [dict(type="scatter", mode="lines", x=distances, y=decay_curve(d_head, model_base, distances),
                 name=f"model's base {model_base:g}", line=dict(color="#444", width=2),
                 hovertemplate="distance %{x}<br>score %{y:.3f}<extra></extra>")]
    if not np.isclose(base, model_base):
        data.append(dict(type="scatter", mode="lines", x=distances, y=decay_curve(d_head, base, distances),
                         name=f"chosen base {base:.3g}", line=dict(color=Q_COLOUR, width=2),
                         hovertemplate="distance %{x}<br>score %{y:.3f}<extra></extra>"))
    layout = dict(xaxis=dict(type="log", title=dict(text="relative distance m − n (tokens, log scale)"),
                             minorloglabels="none"),
                  yaxis=dict(title=dict(text="mean over pairs of cos((m−n)·θᵢ)"), range=[-0.3, 1.05]),
                  legend=legend_above())
    title = "Mean of cos((m−n)·θᵢ) over the pairs: q·k of the all-ones vector against distance (not RoFormer's bound)"
    return figure(data, layout, title, height=360, font_scale=font_scale, background="white")


def scores_figure(key_labels: Sequence[str], with_rope: np.ndarray, without_rope: np.ndarray, query_label: str,
                  font_scale: float = 1.0, model_base: bool = True, base: float = 0.0) -> go.Figure:
    """The selected query's scaled scores against every key up to it, with and without the rotation (at the model's
    base it is what the model computes; at another base it is not)."""
    rotated = "with RoPE (what the model computes)" if model_base else f"with RoPE at base {base:.3g} (not the model's)"
    data = [
        dict(type="bar", x=list(key_labels), y=without_rope, name="without RoPE: q·k/√d",
             marker=dict(color=BEFORE_COLOUR),
             hovertemplate="key %{x}<br>without RoPE %{y:.3f}<extra></extra>"),
        dict(type="bar", x=list(key_labels), y=with_rope, name=rotated,
             marker=dict(color=Q_COLOUR),
             hovertemplate="key %{x}<br>with RoPE %{y:.3f}<extra></extra>"),
    ]
    layout = dict(barmode="group", xaxis=dict(type="category", title=dict(text="key token"), tickangle=-60,
                                              showticklabels=len(key_labels) <= 64),
                  yaxis=dict(title=dict(text="scaled score")), legend=legend_above())
    return figure(data, layout, f"Scores of query {query_label} against each key",
                  height=380, font_scale=font_scale, background="white")


def absolute_vs_relative_figure(q: np.ndarray, k: np.ndarray, distance: int, base: float, max_position: int,
                                font_scale: float = 1.0) -> go.Figure:
    """The same q and k, the same distance apart, slid along the sequence.

    Rotated (RoPE), their score never changes: it depends only on the distance. With the
    original Transformer's sinusoidal encoding added instead (scaled to q's and k's norms),
    it changes with the absolute position, because the cross terms q·PE(n) and PE(m)·k do.
    """
    d = len(q)
    starts = np.arange(max_position + 1)
    rope = [rotate_pairs(q, s + distance, base) @ rotate_pairs(k, s, base) / np.sqrt(d) for s in starts]
    pe = sinusoidal_encoding(np.arange(max_position + distance + 1), d)
    pe_q = pe * np.linalg.norm(q) / np.linalg.norm(pe[0])
    pe_k = pe * np.linalg.norm(k) / np.linalg.norm(pe[0])
    additive = [(q + pe_q[s + distance]) @ (k + pe_k[s]) / np.sqrt(d) for s in starts]
    data = [
        dict(type="scatter", mode="lines", x=starts, y=rope, name="RoPE: rotate q and k",
             line=dict(color=Q_COLOUR, width=3),
             hovertemplate="key at %{x}, query at %{x}+" + str(distance) + "<br>score %{y:.4f}<extra></extra>"),
        dict(type="scatter", mode="lines", x=starts, y=additive, name="sinusoidal: add PE(position)",
             line=dict(color=K_COLOUR, width=2),
             hovertemplate="key at %{x}, query at %{x}+" + str(distance) + "<br>score %{y:.4f}<extra></extra>"),
    ]
    axis_title = "absolute position of the key (the query is always the same distance after it)"
    layout = dict(xaxis=dict(title=dict(text=axis_title)),
                  yaxis=dict(title=dict(text="scaled score")), legend=legend_above())
    apart = f"{distance} token{'' if distance == 1 else 's'} apart"
    title = f"Relative vs absolute: one q·k pair kept {apart}, moved along the sequence"
    return figure(data, layout, title, height=380, font_scale=font_scale, background="white")
