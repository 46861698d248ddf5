"""Tokenization tab on the tiny model's trace: spans, counts, surprisal, comparison tokenizers."""

from __future__ import annotations

from playground import tab_tokenization


def test_render(tiny_runner, tiny_trace):
    spans, counts, compare = tab_tokenization.render(tiny_runner, tiny_trace, False, True, ["cl100k_base"], False)
    assert f"**{tiny_trace.n_tokens}** tokens" in counts and "mean surprisal" in counts
    assert spans.count('class="tok"') == tiny_trace.n_tokens
    assert "cl100k_base" in compare and compare.count('class="tok"') > 0
    assert tab_tokenization.render(tiny_runner, None, False, False, [], False)[0] == tab_tokenization.EMPTY


def test_chat_traces_count_the_template_text(tiny_runner):
    trace = tiny_runner.analyze("hi", chat=True)
    spans, counts, compare = tab_tokenization.render(tiny_runner, trace, True, False, [], True)
    text = tab_tokenization.model_text(tiny_runner, trace)
    assert text.startswith("<|im_start|>user") and f"**{len(text)}** characters" in counts
    assert spans.count("tok special") == 3 and "plain text" in compare
    assert 'class="tokens large"' in spans
