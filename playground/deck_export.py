"""A walk (the tour, or a deck) as one self-contained HTML file: every slide's figure embedded with Plotly's
JavaScript inlined once, captions and speaker notes, and a few lines of script for the keys. It needs no server
and no network: a talk survives both dying (a test opens it in Chromium with the network off).

Keys: → / PgDn / Space next, ← / PgUp back, Home / End first / last, n the speaker notes.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import plotly.graph_objects as go
import plotly.io as pio

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0; color: #000; }
.slide { display: none; padding: 16px 28px; }
.slide.shown { display: block; }
.slide h2 { margin: 0 0 6px; font-size: 28px; }
.caption { font-size: 20px; line-height: 1.4; max-width: 1400px; }
.notes { display: none; font-size: 18px; background: #fff8dc; padding: 8px 12px; border-left: 4px solid #e0b000; }
body.with-notes .notes { display: block; }
.bar { position: fixed; bottom: 0; left: 0; right: 0; background: #f2f2f2; padding: 6px 16px; font-size: 16px; }
code { background: #eee; padding: 0 4px; border-radius: 3px; }
"""

SCRIPT = """
(() => {
  const slides = [...document.querySelectorAll('.slide')];
  let at = 0;
  const show = (i) => {
    at = Math.max(0, Math.min(slides.length - 1, i));
    slides.forEach((s, j) => s.classList.toggle('shown', j === at));
    document.getElementById('where').textContent = (at + 1) + ' / ' + slides.length;
    const plot = slides[at].querySelector('.js-plotly-plot');
    if (plot && window.Plotly) window.Plotly.Plots.resize(plot);
    location.hash = '#' + (at + 1);
  };
  document.addEventListener('keydown', (e) => {
    if (['ArrowRight', 'PageDown', ' '].includes(e.key)) { show(at + 1); e.preventDefault(); }
    else if (['ArrowLeft', 'PageUp'].includes(e.key)) { show(at - 1); e.preventDefault(); }
    else if (e.key === 'Home') show(0);
    else if (e.key === 'End') show(slides.length - 1);
    else if (e.key === 'n') document.body.classList.toggle('with-notes');
  });
  window.deckShow = show;
  show((parseInt(location.hash.slice(1)) || 1) - 1);
})();
"""


def _inline(text: str) -> str:
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def markdown_html(text: str) -> str:
    """The little Markdown captions use: paragraphs, '- ' lists, **bold**, *italic* and `code` (HTML escaped)."""
    blocks = []
    inline = _inline
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if lines and all(line.lstrip().startswith("- ") for line in lines):
            blocks.append("<ul>" + "".join(f"<li>{inline(line.lstrip()[2:])}</li>" for line in lines) + "</ul>")
        elif block.strip():
            blocks.append(f"<p>{inline(' '.join(lines))}</p>")
    return "\n".join(blocks)


def deck_html(title: str, slides: Sequence[tuple[str, str, str, go.Figure]]) -> str:
    """The page: (title, caption, notes, figure) per slide; Plotly's JavaScript inlined in the first figure only."""
    sections = []
    for i, (name, caption, notes, figure) in enumerate(slides):
        plot = pio.to_html(figure, full_html=False, include_plotlyjs=(i == 0), config={"responsive": True},
                           div_id=f"figure-{i + 1}")
        sections.append(f'<section class="slide" id="slide-{i + 1}"><h2>{html.escape(name)}</h2>'
                        f'<div class="caption">{markdown_html(caption)}</div>{plot}'
                        f'<div class="notes">{markdown_html(notes) if notes else "<p>(no notes)</p>"}</div></section>')
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(sections) +
            f'\n<div class="bar"><strong>{html.escape(title)}</strong> · <span id="where"></span> · ← → to step, '
            f"n for notes</div><script>{SCRIPT}</script></body></html>\n")
