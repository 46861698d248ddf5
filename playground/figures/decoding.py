"""Decoding figures: the beam-search tree, continuations side by side coloured by probability, speculative rounds
and the speed-up against the draft's depth, DoLa's premature layers, and time per token with and without the KV cache.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from .base import figure, legend_above, probability_colour

BEST = "#d62728"  # the returned best hypothesis
RUNNING = "#2b7bba"
FINISHED = "#2ca02c"
DEAD = "#8c8c8c"  # a beam nobody continued (darker than light grey: it must survive a projector)


@dataclass(frozen=True)
class TreeNode:
    step: int  # 0-based generation step
    slot: int  # its rank among the running beams at that step (0 = best)
    parent: int  # slot at the previous step (-1 at step 0)
    label: str  # the token it added
    score: float  # cumulative log-probability
    on_best: bool  # lies on the returned best hypothesis
    continued: bool  # some beam of the next step continues it
    finished: bool = False  # a finished hypothesis (drawn below the running beams)
    normalised: float | None = None  # finished: score / length ** length_penalty


def beam_tree_figure(nodes: Sequence[TreeNode], num_beams: int, title: str, font_scale: float = 1.0) -> go.Figure:
    """Running beams as rows (best on top) across the steps, edges to the beam each continues; finished hypotheses
    hang below them. The returned best hypothesis is drawn in red."""
    by_key = {(n.step, n.slot, n.finished): n for n in nodes}
    y_of = {}
    finished_rows: dict[int, int] = {}
    for n in nodes:
        if n.finished:
            finished_rows[n.step] = finished_rows.get(n.step, 0) + 1
            y_of[(n.step, n.slot, True)] = -(num_beams + 0.6 + n.slot)
        else:
            y_of[(n.step, n.slot, False)] = -n.slot
    edges = {True: ([], []), False: ([], [])}
    for key, n in by_key.items():
        if n.parent < 0:
            xs, ys = edges[n.on_best]
            xs += [-1, n.step, None]
            ys += [-0.0, y_of[key], None]
            continue
        parent = (n.step - 1, n.parent, False)
        if parent in y_of:
            xs, ys = edges[n.on_best]
            xs += [n.step - 1, n.step, None]
            ys += [y_of[parent], y_of[key], None]
    data = [dict(type="scatter", mode="markers+text", x=[-1], y=[0], text=["prompt"], textposition="top center",
                 marker=dict(color="#333", size=12, symbol="square"), hoverinfo="skip", showlegend=False),
            dict(type="scatter", mode="lines", x=edges[False][0], y=edges[False][1], hoverinfo="skip",
                 line=dict(color="#9a9a9a", width=1.5), showlegend=False),
            dict(type="scatter", mode="lines", x=edges[True][0], y=edges[True][1], hoverinfo="skip",
                 line=dict(color=BEST, width=3.5), showlegend=False)]
    groups = (("running beam", lambda n: not n.finished and n.continued and not n.on_best, RUNNING, "circle"),
              ("dropped (no beam continues it)", lambda n: not n.finished and not n.continued and not n.on_best,
               DEAD, "x"),
              ("finished hypothesis", lambda n: n.finished and not n.on_best, FINISHED, "star"),
              ("the returned best", lambda n: n.on_best, BEST, "diamond"))
    for name, keep, colour, symbol in groups:
        chosen = [n for n in nodes if keep(n)]
        if not chosen:
            continue
        hover = [f"step {n.step + 1}, {'finished' if n.finished else f'beam {n.slot}'}: {html.escape(n.label)}<br>"
                 f"sum of log-probs {n.score:.3f}" + (f"<br>score (÷ length^penalty) {n.normalised:.4f}"
                                                      if n.normalised is not None else "") for n in chosen]
        data.append(dict(type="scatter", mode="markers+text", x=[n.step for n in chosen],
                         y=[y_of[(n.step, n.slot, n.finished)] for n in chosen], text=[n.label for n in chosen],
                         textposition="top center", name=name, hovertext=hover, hoverinfo="text",
                         marker=dict(color=colour, size=11, symbol=symbol, line=dict(color="white", width=1)),
                         textfont=dict(color="#111")))
    steps = max((n.step for n in nodes), default=0) + 1
    rows = num_beams + (1 + max((n.slot for n in nodes if n.finished), default=-1) if any(n.finished for n in nodes)
                        else 0)
    tick_y = [-s for s in range(num_beams)] + sorted({y_of[k] for k in y_of if k[2]}, reverse=True)
    tick_text = [f"beam {s}" for s in range(num_beams)] + ["finished"] * (len(tick_y) - num_beams)
    layout = dict(xaxis=dict(title=dict(text="generated token"), tickvals=list(range(steps)),
                             ticktext=[str(s + 1) for s in range(steps)], range=[-1.8, steps - 0.4], zeroline=False),
                  yaxis=dict(tickvals=tick_y, ticktext=tick_text, zeroline=False, range=[min(tick_y) - 0.8, 0.8]),
                  legend=legend_above(), hoverlabel=dict(font=dict(size=int(14 * font_scale))))
    return figure(data, layout, title, height=min(900, 160 + 62 * rows), font_scale=font_scale, background="white",
                  top=80)


@dataclass(frozen=True)
class Continuation:
    name: str  # the strategy, with its settings
    pieces: list[str]  # each generated token's text
    log_probs: list[float]  # log p of each token under the model (what greedy decoding would rank)
    repeats: int  # repeated 3-grams
    note: str = ""  # anything else worth a line (a beam's score, a seed)
    ids: tuple[int, ...] = ()  # the generated token ids


def continuations_html(prompt_text: str, rows: Sequence[Continuation], large: bool = False) -> str:
    """One row per strategy: its continuation with each token shaded by its probability under the model, and the
    measures (tokens, mean log-probability, repeated 3-grams)."""
    out = [f'<div class="dec{" large" if large else ""}"><div class="dec-prompt">{html.escape(prompt_text)}</div>'
           '<table class="dec-table"><thead><tr><th>strategy</th><th>continuation (shade: p under the model)</th>'
           '<th>tokens</th><th>mean log p</th><th>repeated 3-grams</th></tr></thead><tbody>']
    for row in rows:
        tokens = "".join(
            f'<span class="dtok" style="background:{probability_colour(np.exp(lp))}" '
            f'title="token {i + 1}: p = {np.exp(lp):.4f}">{html.escape(piece)}</span>'
            for i, (piece, lp) in enumerate(zip(row.pieces, row.log_probs, strict=True)))
        mean = f"{np.mean(row.log_probs):.3f}" if row.log_probs else "–"
        note = f'<div class="dec-note">{html.escape(row.note)}</div>' if row.note else ""
        out.append(f'<tr><th scope="row">{html.escape(row.name)}{note}</th><td class="dec-text">{tokens}</td>'
                   f'<td>{len(row.pieces)}</td><td>{mean}</td><td>{row.repeats}</td></tr>')
    out.append("</tbody></table></div>")
    return "".join(out)


def speculative_rounds_html(rounds: Sequence[tuple[list[str], int, str, list[float]]], large: bool = False) -> str:
    """Each round: the drafted tokens (kept ✓ / rejected ✗ / never checked), then the model's own token."""
    out = [f'<div class="dec{" large" if large else ""}"><ol class="spec-rounds">']
    for drafted, accepted, extra, accept_p in rounds:
        cells = []
        for i, piece in enumerate(drafted):
            if i < accepted:
                state, mark = "kept", "✓"
            elif i == accepted:
                state, mark = "rejected", "✗"
            else:
                state, mark = "unchecked", "·"
            chance = f"min(1, p/q) = {accept_p[i]:.3f}" if i < len(accept_p) else "not checked"
            cells.append(f'<span class="spec {state}" title="{chance}">{html.escape(piece)} {mark}</span>')
        cells.append(f'<span class="spec model" title="the whole model\'s token">→ {html.escape(extra)}</span>')
        out.append(f"<li>{''.join(cells)}</li>")
    out.append("</ol></div>")
    return "".join(out)


def speedup_figure(layers: Sequence[int], acceptance: Sequence[float], speedup: Sequence[float], gamma: int,
                   font_scale: float = 1.0) -> go.Figure:
    """Measured acceptance rate (bars) and speed-up over plain greedy decoding (line) against the draft's depth."""
    data = [dict(type="bar", x=list(layers), y=[100 * a for a in acceptance], name="drafted tokens accepted (%)",
                 marker=dict(color=RUNNING), hovertemplate="draft of %{x} layers: %{y:.0f}% accepted<extra></extra>"),
            dict(type="scatter", mode="lines+markers", x=list(layers), y=list(speedup), yaxis="y2",
                 name="speed-up over greedy (×, measured)", line=dict(color=BEST, width=3),
                 hovertemplate="draft of %{x} layers: %{y:.2f}× greedy's speed<extra></extra>")]
    top = max([1.2, *[s * 1.15 for s in speedup]])
    layout = dict(xaxis=dict(title=dict(text="draft: the model's first k layers (early exit)"), type="category"),
                  yaxis=dict(title=dict(text="accepted (%)"), range=[0, 100]),
                  yaxis2=dict(title=dict(text="speed-up (×)"), overlaying="y", side="right", range=[0, top]),
                  legend=legend_above(),
                  shapes=[dict(type="line", xref="paper", x0=0, x1=1, yref="y2", y0=1, y1=1,
                               line=dict(color="#333", dash="dash"))])
    title = f"Self-speculative decoding, {gamma} drafted tokens a round (dashed: as fast as greedy)"
    return figure(data, layout, title, height=400, font_scale=font_scale, background="white", top=80)


def premature_figure(layers: Sequence[int], divergence: Sequence[float], labels: Sequence[str], changed: Sequence[bool],
                     font_scale: float = 1.0) -> go.Figure:
    """DoLa: the premature layer each step contrasted with, and its Jensen-Shannon divergence from the final layer."""
    colours = [BEST if c else RUNNING for c in changed]
    data = [dict(type="bar", x=[f"{i + 1} {t}" for i, t in enumerate(labels)], y=list(divergence),
                 text=[f"L{l}" for l in layers], textposition="outside", cliponaxis=False, marker=dict(color=colours),
                 hovertemplate="%{x}: contrasted with layer %{text}, JSD %{y:.3f} nats<extra></extra>")]
    layout = dict(xaxis=dict(type="category", tickangle=-45, title=dict(text="DoLa's token (red: not greedy's)")),
                  yaxis=dict(title=dict(text="JSD from the final layer (nats)")))
    return figure(data, layout, "DoLa: the premature layer chosen at each step (label) and how far it was",
                  height=380, font_scale=font_scale, background="white")


def cache_timing_figure(context: Sequence[int], with_cache: Sequence[float], without_cache: Sequence[float],
                        font_scale: float = 1.0) -> go.Figure:
    """Milliseconds per generated token as the context grows, with the KV cache and recomputing everything."""
    data = [dict(type="scatter", mode="lines+markers", x=list(context), y=[1000 * t for t in without_cache],
                 name="without the cache (the whole context again)", line=dict(color=BEST, width=3),
                 hovertemplate="context %{x}: %{y:.1f} ms<extra></extra>"),
            dict(type="scatter", mode="lines+markers", x=list(context), y=[1000 * t for t in with_cache],
                 name="with the KV cache (one new position)", line=dict(color=RUNNING, width=3),
                 hovertemplate="context %{x}: %{y:.1f} ms<extra></extra>")]
    layout = dict(xaxis=dict(title=dict(text="tokens in the context")),
                  yaxis=dict(title=dict(text="ms per generated token"), rangemode="tozero"), legend=legend_above())
    return figure(data, layout, "Time per generated token, measured on this machine now", height=380,
                  font_scale=font_scale, background="white", top=80)


def cache_contents_figure(keys: np.ndarray, values: np.ndarray, labels: Sequence[str], layer: int,
                          font_scale: float = 1.0) -> go.Figure:
    """What one layer's cache holds: keys after RoPE and values, (positions) × (G heads × Dh dims) each."""
    G, T, Dh = keys.shape
    k = keys.transpose(1, 0, 2).reshape(T, G * Dh)
    v = values.transpose(1, 0, 2).reshape(T, G * Dh)
    columns = [f"h{g}·{d}" for g in range(G) for d in range(Dh)]
    limit = float(max(np.abs(k).max(), np.abs(v).max(), 1e-6))
    data = []
    for i, (matrix, name) in enumerate(((k, "keys (after RoPE)"), (v, "values"))):
        data.append(dict(type="heatmap", z=matrix, x=columns, y=list(labels), xaxis=f"x{i + 1}", yaxis="y",
                         colorscale="RdBu_r", zmin=-limit, zmax=limit, showscale=i == 1, name=name,
                         hovertemplate=f"{name}<br>%{{y}}<br>%{{x}}: %{{z:.3f}}<extra></extra>"))
    edges = [g * Dh - 0.5 for g in range(1, G)]
    shapes = [dict(type="line", xref=f"x{i + 1}", yref="paper", x0=e, x1=e, y0=0, y1=1, line=dict(color="black"))
              for i in range(2) for e in edges]
    layout = dict(xaxis1=dict(domain=[0, 0.48], showticklabels=False, title=dict(text=f"keys: {G} heads × {Dh}")),
                  xaxis2=dict(domain=[0.52, 1], showticklabels=False, title=dict(text=f"values: {G} heads × {Dh}")),
                  yaxis=dict(autorange="reversed", type="category", showticklabels=T <= 40), shapes=shapes)
    return figure(data, layout, f"Layer {layer}'s KV cache for this prompt: one row per position", height=420,
                  font_scale=font_scale, background="white")


DECODING_CSS = """
.dec { font-size: 15px; color: #111; }
.dec.large { font-size: 22px; }
.dec-prompt { color: #444; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap;
  margin-bottom: 6px; }
.dec-table { border-collapse: collapse; width: 100%; }
.dec-table th, .dec-table td { border-bottom: 1px solid #bbb; padding: 6px 8px; text-align: left; vertical-align: top; }
.dec-table td.dec-text { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap;
  line-height: 1.8; }
.dec-note { font-weight: normal; color: #333; font-size: 0.85em; }
.dtok { border-radius: 3px; padding: 1px 0; }
.spec-rounds { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; line-height: 2; }
.spec { border-radius: 4px; padding: 2px 4px; margin-right: 4px; white-space: pre; }
.spec.kept { background: #c7e9c0; }
.spec.rejected { background: #fcbba1; text-decoration: line-through; }
.spec.unchecked { background: #eee; color: #555; }
.spec.model { background: #c6dbef; font-weight: 600; }
"""
