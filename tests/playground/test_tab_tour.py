"""The tour's captions come from the prompt's own numbers; decks parse, refuse what is wrong slide by slide, step
with the next slide analysed ahead, and export as one offline HTML file."""

from __future__ import annotations

import re
import time

import numpy as np
import plotly.graph_objects as go
import pytest

from playground import tour, walk
from playground.deck import TOUR_STEPS, built_in_decks, parse_deck
from playground.deck_export import deck_html, markdown_html
from playground.runner import ModelRunner

from ..conftest import TINY_PROMPT

OTHER_PROMPT = "on the mat the cat sat, and the dog sat on the cat"


@pytest.fixture(scope="module")
def runner(tiny_net, tiny_enc):
    return ModelRunner(tiny_net, tiny_enc, background_lens=False)


def test_every_step_draws_and_its_caption_follows_the_prompts_numbers(runner):
    a, b = runner.analyze(TINY_PROMPT, lens=False), runner.analyze(OTHER_PROMPT, lens=False)
    captions = {}
    for trace in (a, b):
        for step in range(1, TOUR_STEPS + 1):
            title, caption, figure, tab, values = tour.tour_step(runner, trace, step, False)
            assert figure is not None and caption and tab, (step, title)
            captions[trace.prompt, step] = caption
    for trace in (a, b):
        assert f"**{trace.n_tokens} tokens**" in captions[trace.prompt, 1]
        stats = np.nan_to_num(trace.head_stats)
        layer, head = np.unravel_index(int(stats[:, :, 1].argmax()), stats.shape[:2])
        assert f"**L{layer}H{head}** is a previous-token head" in captions[trace.prompt, 4]
        assert f"{stats[layer, head, 1]:.0%}" in captions[trace.prompt, 4]
        norms = np.linalg.norm(trace.resid[:, -1], axis=-1)
        assert f"**{norms[0]:.2f}**" in captions[trace.prompt, 5]
        rows, lens = runner.lens(trace, False)
        ranks = lens.rank_final[:, -1].tolist()  # each row's rank of the model's answer at the last position
        settled = next(r for r in range(len(rows)) if all(rank == 0 for rank in ranks[r:]))
        assert f"top-1 for good from row **{rows[settled]}** on" in captions[trace.prompt, 7] or \
            (f"top-1 guess from row **{rows[settled]}** on" in captions[trace.prompt, 7] and
             all(rank != 0 for rank in ranks[:settled]))
    changed = [step for step in range(1, TOUR_STEPS + 1) if captions[a.prompt, step] != captions[b.prompt, step]]
    assert changed == list(range(1, TOUR_STEPS + 1))  # no canned sentence: every step's text moved with the prompt


LINKS = {"tokenization": {}, "attention": {"layer": "slider", "head": "slider"}, "lens": {"pos": "slider"},
         "sampler": {"temperature": "slider", "order": "radio"}}

GOOD = """# A talk
Intro text is ignored.

## Tokens
prompt: the cat sat
tab: tokenization

The prompt becomes **tokens**.

Notes: ask the room first.

## A head
tab: attention
layer: 1
head: 2

Same prompt as before.

## Chat
prompt: hello
chat: yes
tab: sampler
temperature: 0.7
order: llama.cpp
"""


def test_a_deck_parses_into_slides_with_captions_notes_and_state():
    deck = parse_deck(GOOD, LINKS)
    assert deck.title == "A talk" and deck.problems == []
    first, second, third = deck.slides
    assert (first.prompt, first.tab, first.caption, first.notes) == ("the cat sat", "tokenization",
                                                                     "The prompt becomes **tokens**.",
                                                                     "ask the room first.")
    assert (second.prompt, second.state) == ("the cat sat", {"layer": 1.0, "head": 2.0})  # the prompt carries on
    assert third.chat and third.state == {"temperature": 0.7, "order": "llama.cpp"}


@pytest.mark.parametrize("slide,message", [
    ("## Bad tab\nprompt: x\ntab: nowhere\n", "slide 1 ('Bad tab') left out: tab must be one of"),
    ("## Bad field\nprompt: x\ntab: lens\nlayer: 3\n",
     "slide 1 ('Bad field') left out: layer is not a field of the lens tab"),
    ("## Bad number\nprompt: x\ntab: lens\npos: third\n", "slide 1 ('Bad number') left out: pos must be a number"),
    ("## No prompt\ntab: lens\n", "slide 1 ('No prompt') left out: prompt"),
    ("## Bad chat\nprompt: x\nchat: maybe\ntab: lens\n", "chat must be yes or no"),
    ("## Bad step\nprompt: x\ntab: tour\nstep: 11\n", "step must be a whole number 1..10"),
])
def test_a_bad_slide_is_left_out_with_a_message_naming_it_and_the_others_load(slide, message):
    deck = parse_deck(f"# Talk\n{slide}\n## Fine\nprompt: y\ntab: lens\npos: 1\n", LINKS)
    assert len(deck.problems) == 1 and message in deck.problems[0], deck.problems
    assert [s.title for s in deck.slides] == ["Fine"]
    assert "no slides" in parse_deck("just text", LINKS).problems[0]


def test_a_slide_whose_prompt_the_model_refuses_is_named(tiny_net, tiny_enc):
    small = ModelRunner(tiny_net, tiny_enc, max_tokens=8, background_lens=False)
    deck = walk.load_deck("# T\n## Long\nprompt: " + "the cat sat on the mat " * 4 + "\ntab: lens\n"
                              "## Short\nprompt: the cat\ntab: lens\n")
    walk.checked_decks(small, {"t": deck})
    assert [s.title for s in deck.slides] == ["Short"]
    assert re.search(r"slide 1 \('Long'\) left out: prompt: That prompt is \d+ tokens; the limit is 8",
                     deck.problems[0])


def test_the_built_in_deck_loads_whole():
    decks = built_in_decks()
    assert "next-word" in decks
    deck = walk.load_deck(decks["next-word"].read_text())
    assert deck.problems == [] and len(deck.slides) == TOUR_STEPS
    assert all(s.notes for s in deck.slides) and deck.title == "How a transformer predicts the next word"


def test_stepping_a_deck_analyses_the_next_slide_ahead(runner, monkeypatch):
    deck = walk.load_deck(f"# T\n## One\nprompt: {TINY_PROMPT}\ntab: attention\nlayer: 1\nhead: 2\n"
                              f"## Two\nprompt: {OTHER_PROMPT}\ntab: lens\npos: 3\n")
    decks = {"t": deck}
    visitor = walk.Walk()
    analysed = []
    real = runner.analyze
    monkeypatch.setattr(runner, "analyze", lambda prompt, chat=False, **kw: analysed.append(prompt) or
                        real(prompt, chat, **kw))
    progress, caption, figure, notes, where, step = walk.show(runner, decks, None, visitor, "t", 1, False)
    assert progress.startswith("**Step 1 of 2** · One") and figure is not None and step == 1
    deadline = time.monotonic() + 30
    while OTHER_PROMPT not in analysed or visitor._pending:  # the next slide's analysis, in the background
        assert time.monotonic() < deadline
        time.sleep(0.01)
    before = list(analysed)
    progress, caption, figure, notes, where, step = walk.show(runner, decks, None, visitor, "t", 2, False)
    assert analysed == before and step == 2 and '"tab": "lens"' in where  # shown from what was analysed ahead
    assert walk.show(runner, decks, None, visitor, "t", 9, False)[-1] == 2  # stepping past the end stays


def test_the_export_is_one_page_with_every_slide_and_plotly_inlined_once(runner):
    trace = runner.analyze(TINY_PROMPT, lens=False)
    path, note = walk.export(runner, {}, trace, walk.Walk(), walk.THE_TOUR, False)
    page = open(path, encoding="utf-8").read()
    assert note == f"Exported {TOUR_STEPS} slides."
    assert page.count('<section class="slide"') == TOUR_STEPS and page.count("plotly.js v") == 1
    assert "https://" not in page.split("<script")[0] and 'src="http' not in page
    assert markdown_html("**a** `b` *c*\n\n- one\n- two") == \
        "<p><strong>a</strong> <code>b</code> <em>c</em></p>\n<ul><li>one</li><li>two</li></ul>"
    assert "&lt;script&gt;" in deck_html("t", [("x", "<script>", "", go.Figure())])  # captions are escaped
