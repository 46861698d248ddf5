"""Logit-lens figures: the layers x positions grid and the per-position rankings watch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import plotly.graph_objects as go

from .base import SEQUENTIAL, cell_font, figure, legend_above

class LensStat(str, Enum):
    """What colours the logit-lens grid."""

    TOP_PROB = "top_prob"
    RANK_FINAL = "rank_final"
    RANK_NEXT = "rank_next"
    KL = "kl"
    ENTROPY = "entropy"


@dataclass(frozen=True)
class StatInfo:
    label: str  # what the dropdown and titles say
    colorbar: str  # the colour bar's title
    colorscale: str
    meaning: str  # how to read it


STATISTICS = {
    LensStat.TOP_PROB: StatInfo("probability of the top token", "p(top)", SEQUENTIAL, "how sure this layer would be"),
    LensStat.RANK_FINAL: StatInfo("rank of the final prediction", "log10(rank+1)", "Viridis_r",
                                  "0 = this layer already predicts what the model finally predicts"),
    LensStat.RANK_NEXT: StatInfo("rank of the actual next token", "log10(rank+1)", "Viridis_r",
                                 "0 = this layer would predict the token that really comes next"),
    LensStat.KL: StatInfo("KL divergence to the final layer (bits)", "KL bits", "Viridis_r",
                          "0 = the same distribution as the model's output"),
    LensStat.ENTROPY: StatInfo("entropy (bits)", "entropy bits", "Viridis_r", "low = a peaked distribution"),
}
RANKS = (LensStat.RANK_FINAL, LensStat.RANK_NEXT)


def statistic_values(stat: LensStat, top_probs: np.ndarray, rank_final: np.ndarray, rank_next: np.ndarray,
                     kl: np.ndarray, entropy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour values, values shown on hover) for a statistic, each (R, T)."""
    stat = LensStat(stat)
    if stat is LensStat.TOP_PROB:
        return top_probs[..., 0], top_probs[..., 0]
    if stat is LensStat.RANK_FINAL:
        return np.log10(rank_final + 1.0), rank_final.astype(float)
    if stat is LensStat.RANK_NEXT:
        shown = np.where(rank_next < 0, np.nan, rank_next).astype(float)
        return np.log10(shown + 1.0), shown
    if stat is LensStat.KL:
        return kl, kl
    return entropy, entropy


def lens_grid(
    row_labels: Sequence[str],
    position_labels: Sequence[str],
    top_ids: np.ndarray,  # (R, T, k)
    top_probs: np.ndarray,  # (R, T, k)
    colour: np.ndarray,  # (R, T)
    shown: np.ndarray,  # (R, T) the statistic's value for hover
    statistic: LensStat,
    next_ids: np.ndarray,  # (T,) actual next token, -1 at the end
    token_text: Callable[[int], str],
    font_scale: float = 1.0,
) -> go.Figure:
    """Rows (embedding at the bottom, last layer on top) by positions; each cell names the top-1 token."""
    R, T, k = top_ids.shape
    statistic = LensStat(statistic)
    info = STATISTICS[statistic]
    names = {int(i): token_text(int(i)) for i in np.unique(np.concatenate([top_ids.ravel(), next_ids[next_ids >= 0]]))}
    top1 = np.vectorize(lambda i: names[int(i)], otypes=[object])(top_ids[..., 0])
    hover = np.empty((R, T), dtype=object)
    for r in range(R):
        for t in range(T):
            lines = [f"{names[int(i)]!r} {p:.3f}" for i, p in zip(top_ids[r, t], top_probs[r, t])]
            nxt = f"next token: {names[int(next_ids[t])]!r}" if next_ids[t] >= 0 else "next token: (end of prompt)"
            value = shown[r, t]
            number = "–" if not np.isfinite(value) else f"{value:.0f}" if statistic in RANKS else f"{value:.3f}"
            lines.insert(0, f"{info.label}: {number}")
            lines.insert(1, nxt)
            hover[r, t] = "<br>".join(lines)
    show_text = T <= 40 and (font_scale <= 1 or R <= 14)  # on a projector 18 px text fits only a few rows
    hit = top_ids[..., 0] == np.where(next_ids >= 0, next_ids, -2)[None, :]  # (R, T) top-1 is the actual next token
    if show_text:  # hits in bold; without cell text, rings mark them instead
        top1 = np.where(hit, np.char.add(np.char.add("<b>", top1.astype(str)), "</b>"), top1).astype(object)
    data = [dict(
        type="heatmap", z=colour.astype(np.float32), x=list(position_labels), y=list(row_labels), customdata=hover,
        text=top1 if show_text else None, texttemplate="%{text}" if show_text else None,
        textfont=dict(size=cell_font(font_scale)), colorscale=info.colorscale,
        colorbar=dict(title=dict(text=info.colorbar), thickness=12),
        hovertemplate="%{y} · position %{x}<br>%{customdata}<extra></extra>", hoverongaps=False,
        **({"zmin": 0, "zmax": 1} if statistic is LensStat.TOP_PROB else {}),
    )]
    hits = np.argwhere(hit)
    if len(hits) and not show_text:
        data.append(dict(
            type="scatter", x=[position_labels[t] for _, t in hits], y=[row_labels[r] for r, _ in hits], mode="markers",
            marker=dict(symbol="circle-open", size=int(14 * font_scale), color="white", line=dict(width=2)),
            name="top-1 = actual next token", hoverinfo="skip", showlegend=True,
        ))
    layout = dict(
        xaxis=dict(type="category", title=dict(text="position (input token)"), tickangle=-60, showgrid=False,
                   showticklabels=T <= 64),
        yaxis=dict(type="category", title=dict(text="residual stream after"), showgrid=False),
        legend=legend_above(1.02),
    )
    marking = "bold" if show_text else "ringed"
    return figure(data, layout, f"Logit lens: colour = {info.label}; {marking} = top-1 is the actual next token",
                  height=max(420, 120 + 20 * R), font_scale=font_scale, background="white")


def rankings_watch(row_labels: Sequence[str], probs: np.ndarray, ranks: np.ndarray, token_names: Sequence[str],
                   position_label: str, font_scale: float = 1.0) -> go.Figure:
    """Probability of chosen tokens at one position, layer by layer (probs, ranks: (n_tokens, R))."""
    data = [
        dict(type="scatter", x=list(row_labels), y=probs[i], mode="lines+markers", name=name, customdata=ranks[i],
             hovertemplate=f"{name!r}<br>%{{x}}: p = %{{y:.4f}}, rank %{{customdata}}<extra></extra>")
        for i, name in enumerate(token_names)
    ]
    layout = dict(
        showlegend=True,
        xaxis=dict(type="category", title=dict(text="residual stream after"), tickangle=-60),
        yaxis=dict(title=dict(text="probability"), range=[0, 1.02]),
        legend=legend_above(1.02),
    )
    return figure(data, layout, f"How the prediction forms at position {position_label}",
                  height=380, font_scale=font_scale, background="white")
