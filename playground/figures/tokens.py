"""Token text for figures: bytes shown honestly (partial UTF-8 as hex), short axis labels, coloured spans."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
from plotly.colors import sample_colorscale

WHITESPACE = {" ": "·", "\t": "→", "\n": "↵", "\r": "␍"}


def token_pieces(data: bytes) -> list[tuple[str, bool]]:
    """A token's bytes as (text, is_raw_bytes) pieces: valid UTF-8 as text, the rest as hex.

    Emoji and CJK characters are often split across tokens; such fragments are shown as the
    bytes they are ("<F0 9F>"), never as a replacement character.
    """
    pieces: list[tuple[str, bool]] = []
    text, raw = [], []
    for ch in data.decode("utf-8", errors="surrogateescape"):
        if "\udc80" <= ch <= "\udcff":  # an undecodable byte, smuggled through as a surrogate
            if text:
                pieces.append(("".join(text), False))
                text = []
            raw.append(f"{ord(ch) - 0xDC00:02X}")
        else:
            if raw:
                pieces.append(("<" + " ".join(raw) + ">", True))
                raw = []
            text.append(ch)
    if text:
        pieces.append(("".join(text), False))
    if raw:
        pieces.append(("<" + " ".join(raw) + ">", True))
    return pieces


def show_whitespace(text: str) -> str:
    return "".join(WHITESPACE.get(ch, ch) for ch in text)


def token_label(data: bytes, visible_whitespace: bool = True, max_len: int = 16) -> str:
    """A short one-line label for a token, for axes."""
    text = "".join(show_whitespace(t) if not raw and visible_whitespace else t for t, raw in token_pieces(data))
    text = text.replace("\n", "↵")
    return text if len(text) <= max_len else text[: max_len - 1] + "…"


def markdown_token(data: bytes, max_len: int = 20) -> str:
    """A token for Markdown text: as code, so that `<filename>` or `*` shows as itself."""
    return "`" + token_label(data, True, max_len).replace("`", "ˋ") + "`"


def axis_labels(token_bytes: Sequence[bytes]) -> list[str]:
    """Tick labels 'i token' for each position, unique by construction."""
    return [f"{i} {token_label(b)}" for i, b in enumerate(token_bytes)]



PALETTE = ["#cde7f0", "#f9d9b5", "#d5ecc2", "#f4c7d3", "#e0d4f5", "#fbeaa8", "#c9e4de", "#f6cfc2"]


def token_spans_html(
    token_bytes: Sequence[bytes],
    ids: Sequence[int],
    special: Sequence[bool] | None = None,
    surprisal: Sequence[float] | None = None,
    visible_whitespace: bool = False,
    large: bool = False,
) -> str:
    """The text as coloured token spans with ids underneath; hover shows id, bytes and text.

    With `surprisal` (bits per token), the colour shows how surprised the model was by each
    token given what came before it, instead of alternating colours.
    """
    special = special if special is not None else [False] * len(ids)
    finite = [s for s in (surprisal if surprisal is not None else []) if np.isfinite(s)]
    top = max(max(finite, default=1.0), 1.0)
    out = [f'<div class="tokens{" large" if large else ""}">']
    for i, (data, token_id, is_special) in enumerate(zip(token_bytes, ids, special)):
        pieces = token_pieces(data)
        body = []
        for text, raw in pieces:
            if raw:
                body.append(f'<span class="raw">{html.escape(text)}</span>')
            else:
                shown = show_whitespace(text) if visible_whitespace else text
                body.append(html.escape(shown).replace("\n", "↵<br>" if visible_whitespace else "<br>"))
        hover = [f"position {i}", f"id {token_id}", "bytes " + (data.hex(" ").upper() or "(none)"),
                 f"text {''.join(t for t, _ in pieces)!r}"]
        if surprisal is not None:
            s = surprisal[i]
            hover.append(f"surprisal {s:.2f} bits" if np.isfinite(s) else "surprisal: no prefix to predict from")
            color = sample_colorscale("YlOrRd", [min(s / top, 1.0)])[0] if np.isfinite(s) else "#eeeeee"
        else:
            color = PALETTE[i % len(PALETTE)]
        classes = "tok special" if is_special else "tok"
        out.append(
            f'<span class="{classes}" style="background:{color}" title="{html.escape(chr(10).join(hover))}">'
            f'<span class="txt">{"".join(body) or "&nbsp;"}</span><span class="id">{token_id}</span></span>'
        )
    out.append("</div>")
    return "".join(out)


TOKENS_CSS = """
.tokens { line-height: 2.6; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 15px;
  color: #111; }
.tokens.large { font-size: 26px; }
.tokens .tok { display: inline-flex; flex-direction: column; align-items: center; margin: 1px; padding: 0 3px;
  border-radius: 4px; vertical-align: top; white-space: pre; }
.tokens .tok.special { outline: 2px solid #444; font-weight: 600; }
.tokens .tok .id { font-size: 0.62em; color: #444; line-height: 1.1; }
.tokens .tok .txt { line-height: 1.5; }
.tokens .raw { font-size: 0.75em; color: #7a1f1f; border: 1px dashed #7a1f1f; border-radius: 3px; padding: 0 2px; }
"""


