"""Text that someone else wrote, shown as text: one rule for the live page and the exported deck.

Captions, notes and titles are Markdown **without raw HTML or images**. Whatever a visitor, a deck author or the
model supplies is shown as the characters it is: `quoted` makes a visitor's or the model's text a literal piece of
Markdown (no formatting, no tags, no line breaks), and `no_html` turns raw HTML and Markdown images left in a
Markdown text (a deck's caption, say) into visible characters before the live page renders it, so the page
fetches nothing it was not built with. The exported page applies the same rule by escaping its text
(`deck_export.markdown_html`, which knows no images); a test sends markup through both.
"""

from __future__ import annotations

import re

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)  # a Markdown code span: its text is shown as it is already
_SPECIAL = re.compile(r"([\\`*_\[\]{}()#+\-.!>|~&])")  # Markdown's punctuation, escaped with a backslash


def quoted(text: str, max_len: int | None = None) -> str:
    """A visitor's or the model's text as literal Markdown on one line: Markdown's punctuation escaped, `<` as an
    entity (never a tag), line breaks shown as ⏎ (a newline inside **bold** would end it), cut to max_len."""
    text = str(text)
    if max_len is not None and len(text) > max_len:
        text = text[: max_len - 1] + "…"
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ⏎ ").replace("\t", " ")
    return _SPECIAL.sub(r"\\\1", text).replace("<", "&lt;")


def no_html(markdown: str) -> str:
    """The Markdown with raw HTML and images shown as text: outside code spans (whose text is shown as it is),
    `<` becomes an entity, so `<img src=...>` shows as itself, and `![alt](url)` loses its `!`'s meaning."""
    out, at = [], 0
    for span in _CODE_SPAN.finditer(markdown):
        out.append(_escape(markdown[at:span.start()]))
        out.append(span.group(0))
        at = span.end()
    out.append(_escape(markdown[at:]))
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("<", "&lt;").replace("![", "!\\[")
