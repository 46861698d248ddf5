"""The plotting base every figure module shares: fonts, colours, one figure constructor, a legend.

Figures are pure functions, (arrays, labels, options) -> a Plotly figure, an RGB image or
HTML. Nothing under `playground/figures/` imports the model or Gradio, so every function can
be tested on its own and reused in a notebook. Heatmaps use categorical axes with unique
labels ("3 cat") so repeated tokens stay apart, and show exact values on hover.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size=13)
MASKED_COLOR = "#d9d9d9"  # what the causal mask hides
PRESENTER_MASKED = "#7a7a7a"  # the same on a washed-out projector, where light grey vanishes
PRESENTER_MAX_HEIGHT = 520  # presenter figures fit under the prompt and tab bars at 1280 x 720
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"


def probability_colour(p: float) -> str:
    """A token's fill for its probability: light enough for dark text at every value (hover gives the number)."""
    return sample_colorscale("Blues", [0.08 + 0.42 * float(np.clip(p, 0, 1))])[0]


def cell_font(font_scale: float) -> int:
    """Text size inside heatmap cells and next to markers: small on a screen, 18 px at least on a projector."""
    return max(18, int(10 * font_scale)) if font_scale > 1 else int(10 * font_scale)


def legend_above(y: float = 1.0) -> dict:
    """A horizontal legend right-aligned above the plot area, under the title."""
    return dict(orientation="h", y=y, x=1, xanchor="right", yanchor="bottom")


def figure(data: list[dict], layout: dict, title: str, height: int, font_scale: float = 1.0,
           background: str = MASKED_COLOR, top: int = 50) -> go.Figure:
    """A figure built once from plain dicts (Plotly validates once; update_* calls cost more than the data).

    The plot background defaults to the mask colour, so NaN (masked) heatmap cells show as grey. In presenter
    mode (font_scale > 1) text is black, hover text scales too, the mask is a darker grey and the height is capped
    so the figure fits a 1280 x 720 projector under the page's bars.
    """
    presenting = font_scale > 1
    height = int(height * font_scale)  # bigger text needs room, or the plot area shrinks away
    layout = {
        "hoverlabel": dict(font=dict(size=int(13 * font_scale))),
        **layout,
        "title": dict(text=title, x=0.01, font=dict(size=int(16 * font_scale))),
        "font": dict(FONT, size=int(FONT["size"] * font_scale), **({"color": "#000"} if presenting else {})),
        "height": min(height, PRESENTER_MAX_HEIGHT) if presenting else height,
        "margin": dict(l=10, r=10, t=int(top * font_scale), b=10),
        "plot_bgcolor": PRESENTER_MASKED if presenting and background == MASKED_COLOR else background,
        "paper_bgcolor": "white",
    }
    return go.Figure({"data": data, "layout": layout})


def masked_upper(matrix: np.ndarray, window: int | None = None) -> np.ndarray:
    """The matrix with future positions (above the diagonal) set to NaN, which draws as the mask colour; with a
    sliding window (Mistral), also the keys a query no longer sees (`window` or more positions back)."""
    out = np.array(matrix, dtype=np.float64)
    out[np.triu_indices(out.shape[0], k=1, m=out.shape[1])] = np.nan
    if window is not None:
        out[np.tril_indices(out.shape[0], k=-window, m=out.shape[1])] = np.nan
    return out
