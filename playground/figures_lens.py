"""Pure plotting functions for the logit lens: the layers x positions grid and the per-position watch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import plotly.graph_objects as go

from .figures import SEQUENTIAL, _figure

# statistic -> (title, colour scale, reversed?, how to read it)
STATISTICS = {
    "probability of the top token": ("p(top)", SEQUENTIAL, False, "how sure this layer would be"),
    "rank of the final prediction": ("log10(rank+1)", "Viridis_r", False, "0 = this layer already predicts what the model finally predicts"),
    "rank of the actual next token": ("log10(rank+1)", "Viridis_r", False, "0 = this layer would predict the token that really comes next"),
    "KL divergence to the final layer (bits)": ("KL bits", "Viridis_r", False, "0 = the same distribution as the model's output"),
    "entropy (bits)": ("entropy bits", "Viridis_r", False, "low = a peaked distribution"),
}


def statistic_values(name: str, top_probs: np.ndarray, rank_final: np.ndarray, rank_next: np.ndarray,
                     kl: np.ndarray, entropy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour values, values shown on hover) for a statistic, each (R, T)."""
    if name == "probability of the top token":
        return top_probs[..., 0], top_probs[..., 0]
    if name == "rank of the final prediction":
        return np.log10(rank_final + 1.0), rank_final.astype(float)
    if name == "rank of the actual next token":
        shown = np.where(rank_next < 0, np.nan, rank_next).astype(float)
        return np.log10(shown + 1.0), shown
    if name == "KL divergence to the final layer (bits)":
        return kl, kl
    if name == "entropy (bits)":
        return entropy, entropy
    raise ValueError(f"unknown statistic {name!r}; one of {list(STATISTICS)}")


def lens_grid(
    row_labels: Sequence[str],
    position_labels: Sequence[str],
    top_ids: np.ndarray,  # (R, T, k)
    top_probs: np.ndarray,  # (R, T, k)
    colour: np.ndarray,  # (R, T)
    shown: np.ndarray,  # (R, T) the statistic's value for hover
    statistic: str,
    next_ids: np.ndarray,  # (T,) actual next token, -1 at the end
    token_text: Callable[[int], str],
    font_scale: float = 1.0,
) -> go.Figure:
    """Rows (embedding at the bottom, last layer on top) by positions; each cell names the top-1 token."""
    R, T, k = top_ids.shape
    names = {int(i): token_text(int(i)) for i in np.unique(np.concatenate([top_ids.ravel(), next_ids[next_ids >= 0]]))}
    top1 = np.vectorize(lambda i: names[int(i)], otypes=[object])(top_ids[..., 0])
    hover = np.empty((R, T), dtype=object)
    for r in range(R):
        for t in range(T):
            lines = [f"{names[int(i)]!r} {p:.3f}" for i, p in zip(top_ids[r, t], top_probs[r, t])]
            nxt = f"next token: {names[int(next_ids[t])]!r}" if next_ids[t] >= 0 else "next token: (end of prompt)"
            value = shown[r, t]
            lines.insert(0, f"{statistic}: {'–' if not np.isfinite(value) else (f'{value:.0f}' if 'rank' in statistic else f'{value:.3f}')}")
            lines.insert(1, nxt)
            hover[r, t] = "<br>".join(lines)
    title, scale, _, meaning = STATISTICS[statistic]
    show_text = T <= 40
    hit = top_ids[..., 0] == np.where(next_ids >= 0, next_ids, -2)[None, :]  # (R, T) top-1 is the actual next token
    if show_text:  # hits in bold; without cell text, rings mark them instead
        top1 = np.where(hit, np.char.add(np.char.add("<b>", top1.astype(str)), "</b>"), top1).astype(object)
    data = [dict(
        type="heatmap", z=colour.astype(np.float32), x=list(position_labels), y=list(row_labels), customdata=hover,
        text=top1 if show_text else None, texttemplate="%{text}" if show_text else None,
        textfont=dict(size=int(10 * font_scale)), colorscale=scale, colorbar=dict(title=dict(text=title), thickness=12),
        hovertemplate="%{y} · position %{x}<br>%{customdata}<extra></extra>", hoverongaps=False,
        **({"zmin": 0, "zmax": 1} if statistic.startswith("probability") else {}),
    )]
    hits = np.argwhere(hit)
    if len(hits) and not show_text:
        data.append(dict(
            type="scatter", x=[position_labels[t] for _, t in hits], y=[row_labels[r] for r, _ in hits], mode="markers",
            marker=dict(symbol="circle-open", size=int(14 * font_scale), color="white", line=dict(width=2)),
            name="top-1 = actual next token", hoverinfo="skip", showlegend=True,
        ))
    layout = dict(
        xaxis=dict(type="category", title=dict(text="position (input token)"), tickangle=-60, showgrid=False, showticklabels=T <= 64),
        yaxis=dict(type="category", title=dict(text="residual stream after"), showgrid=False),
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
    )
    marking = "bold" if show_text else "ringed"
    return _figure(data, layout, f"Logit lens: colour = {statistic}; {marking} = top-1 is the actual next token",
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
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
    )
    return _figure(data, layout, f"How the prediction forms at position {position_label}",
                   height=380, font_scale=font_scale, background="white")
