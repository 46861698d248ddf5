"""Token figures: bytes shown honestly, never a replacement character; spans escape text and carry ids."""

from __future__ import annotations

import numpy as np

from playground.figures.tokens import axis_labels, token_label, token_pieces, token_spans_html


def test_token_pieces_show_partial_utf8_as_bytes_never_replacement_chars():
    assert token_pieces(b" the") == [(" the", False)]
    assert token_pieces("😀".encode()[:2]) == [("<F0 9F>", True)]
    assert token_pieces(b"a\xe4\xb8") == [("a", False), ("<E4 B8>", True)]
    assert token_pieces(b"\x98\x80b") == [("<98 80>", True), ("b", False)]
    assert "\ufffd" not in token_label("😀".encode()[:3])
    assert token_label(b" a\n") == "·a↵"


def test_token_spans_html_has_ids_bytes_and_escapes_text():
    html = token_spans_html([b"<script>", b" x", "é".encode()[:1]], [10, 20, 30], [False, True, False])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count('class="tok"') == 2 and html.count('class="tok special"') == 1
    for i in (10, 20, 30):
        assert f'<span class="id">{i}</span>' in html
    assert "bytes 3C 73 63 72 69 70 74 3E" in html
    assert "&lt;C3&gt;" in html  # the lone lead byte of é, shown as bytes
    ws = token_spans_html([b" a\tb\n"], [1], visible_whitespace=True)
    assert "·a→b↵" in ws


def test_token_spans_colour_by_surprisal():
    html = token_spans_html([b"a", b"b", b"c"], [1, 2, 3], surprisal=np.array([np.nan, 1.0, 8.0]))
    assert "surprisal 8.00 bits" in html and "no prefix" in html


def test_axis_labels_are_unique_for_repeated_tokens():
    labels = axis_labels([b" the", b" cat", b" the"])
    assert labels == ["0 \u00b7the", "1 \u00b7cat", "2 \u00b7the"] and len(set(labels)) == 3
