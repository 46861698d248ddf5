"""The tour's captions come from the prompt's own numbers; decks parse, refuse what is wrong slide by slide, step
with the next slide analysed ahead, and export as one offline HTML file."""

from __future__ import annotations

from types import SimpleNamespace
import math
import re
import time

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from playground import tour, walk
from playground.deck import TOUR_STEPS, built_in_decks, parse_deck
from playground.deck_export import deck_html, markdown_html
from playground.errors import PromptError
from playground.room import Rooms
from playground.runner import ModelRunner

from ..conftest import TINY_PROMPT
from ..helpers import attention_parts_from_hooks

OTHER_PROMPT = "on the mat the cat sat, and the dog sat on the cat"


@pytest.fixture(scope="module")
def runner(tiny_net, tiny_enc):
    return ModelRunner(tiny_net, tiny_enc, background_lens=False)


def test_every_step_draws_and_its_caption_follows_the_prompts_numbers(runner, tiny_net, tiny_enc):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    """Each caption's numbers against the model's own hooks on the same prompt (run_with_cache), not the trace the
    tour reads: the token count, the previous-token head and its share, the residual norms, where the lens's
    answer settles (each layer's resid_post through ln_final and the unembedding, computed here)."""
    a, b = runner.analyze(TINY_PROMPT, lens=False), runner.analyze(OTHER_PROMPT, lens=False)
    captions = {}
    for trace in (a, b):
        for step in range(1, TOUR_STEPS + 1):
            title, caption, figure, tab, values = tour.tour_step(runner, trace, step, False)
            assert figure is not None and caption and tab, (step, title)
            captions[trace.prompt, step] = caption
    for prompt in (TINY_PROMPT, OTHER_PROMPT):
        ids = tiny_enc.encode(prompt)
        logits, cache = tiny_net.run_with_cache(torch.tensor([ids]))
        L = tiny_net.cfg.n_layers
        assert f"**{len(ids)} tokens**" in captions[prompt, 1]
        previous = torch.stack([torch.diagonal(cache[f"blocks.{l}.attn.hook_pattern"][0], -1, -2, -1).mean(-1)
                                for l in range(L)])  # (L, H): mean weight on the token just before
        layer, head = divmod(int(previous.argmax()), previous.shape[1])
        assert f"**L{layer}H{head}** is a previous-token head: on average it puts " \
               f"**{float(previous[layer, head]):.0%}**" in captions[prompt, 4]
        embed, top = cache["hook_embed"][0, -1].norm(), cache[f"blocks.{L - 1}.hook_resid_post"][0, -1].norm()
        assert f"from **{float(embed):.2f}** after the embedding to **{float(top):.1f}**" in captions[prompt, 5]
        answer = int(logits[0, -1].argmax())
        rows = [cache["hook_embed"]] + [cache[f"blocks.{l}.hook_resid_post"] for l in range(L)]
        hits = [int(tiny_net.output(tiny_net.ln_final(r[0, -1])).argmax()) == answer for r in rows]
        settled = min(r for r in range(len(rows)) if all(hits[r:]))
        names = ["embed"] + [f"L{l}" for l in range(L)]
        assert f"**{names[settled]}** on" in captions[prompt, 7]
        assert ("lost again" in captions[prompt, 7]) == any(hits[:settled])
        last, cfg = len(ids) - 1, tiny_net.cfg  # step 3: how far RoPE's fastest and slowest pair turned, by formula
        fastest, slowest = math.degrees(last) % 360, math.degrees(last * cfg.rope_base ** (-(cfg.d_head - 2) /
                                                                                            cfg.d_head))
        assert f"**{fastest:.0f}°** past whole turns) and the slowest only **{slowest:.3f}°**" in captions[prompt, 3]
        writes = torch.stack([cache[f"blocks.{l}.hook_mlp_out"][0, -1].norm() for l in range(L)])  # step 6
        layer = int(writes.argmax())
        size = cache[f"blocks.{layer}.mlp.hook_post"][0, -1].abs() * tiny_net.blocks[layer].mlp.w2.weight.norm(dim=0)
        assert f"layer **{layer}**'s (‖out‖ = {float(writes[layer]):.1f}); its strongest neuron, " \
               f"**n{int(size.argmax())}**, writes {float(size.max()):.2f}" in captions[prompt, 6]
        shares = np.stack([attention_parts_from_hooks(tiny_net, ids, l, last).sum(-1) for l in range(L)])  # step 8
        layer, head = divmod(int(shares.argmax()), shares.shape[1])
        assert f"**L{layer}H{head}** ({shares[layer, head]:.0%} of its layer's state)" in captions[prompt, 8]
        warped = TopPLogitsWarper(0.9)(None, TemperatureLogitsWarper(0.7)(None, logits[:, -1]))  # step 9, as HF does
        plain, shaped = logits[0, -1].softmax(-1), warped[0].softmax(-1)
        best = int(plain.argmax())
        assert f"p = **{float(plain[best]):.3f}**" in captions[prompt, 9]
        assert f"**{int((shaped > 0).sum()):,}** of {len(plain):,} tokens stay" in captions[prompt, 9]
        assert f"now has p = **{float(shaped[best]):.3f}**" in captions[prompt, 9]
    changed = [step for step in range(1, TOUR_STEPS + 1) if captions[a.prompt, step] != captions[b.prompt, step]]
    assert changed == list(range(1, TOUR_STEPS + 1))  # no canned sentence: every step's text moved with the prompt


def test_the_lens_caption_says_when_the_answer_is_lost_again():
    """The rule for where the answer appears, on the rows the issue found (transformers agreed on the numbers)."""
    from playground.tab_lens import answer_sentence

    labels = ["embed"] + [f"L{l}" for l in range(30)]
    hits = np.zeros(31, bool)
    hits[26] = hits[28:] = True  # top-1 at L25, lost at L26, top-1 for good from L27
    assert answer_sentence(labels, hits) == ("is first the top-1 guess at row **L25**, lost again at L26, and top-1 "
                                             "for good from row **L27** on")
    hits[:] = False
    hits[1] = hits[24:] = True  # L0, lost from L1 to L22
    assert "lost again at L1–L22, and top-1 for good from row **L23** on" in answer_sentence(labels, hits)
    assert answer_sentence(labels, np.arange(31) >= 5) == "is the top-1 guess from row **L4** on"


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


def test_a_deck_given_at_start_up_reports_every_problem_on_the_console_and_keeps_its_own_name(
        tiny_net, tiny_enc, tmp_path, monkeypatch, capsys):
    """`--deck`: a slide over the token cap is named on the console (as a slide that does not parse is), and a deck
    called tour.md or next-word.md is offered beside the tour and the built-in deck, not in place of either."""
    from playground import server

    talk = tmp_path / "tour.md"
    talk.write_text(f"# Mine\n## Long\nprompt: {'the cat sat on the mat ' * 120}\ntab: lens\n"
                    f"## Fine\nprompt: {TINY_PROMPT}\ntab: lens\n## Odd\nprompt: x\ntab: nowhere\n")
    started = {}
    monkeypatch.setattr(server, "choose_model", lambda model, dtype: (tiny_net, tiny_enc, "tiny"))
    monkeypatch.setattr(server, "create_app", lambda runner, note, decks, deck, second=None: started.update(decks=decks,
                                                                                                    deck=deck)
                        or SimpleNamespace(rooms=Rooms(runner)))
    monkeypatch.setattr(server, "queued", lambda app, runner: type("App", (), {"launch": lambda *a, **k: None})())
    monkeypatch.setattr("sys.argv", ["app.py", "--deck", str(talk)])
    assert server.main() == 0
    console = capsys.readouterr().err
    assert re.search(r"slide 1 \('Long'\) left out: prompt: That prompt is [\d,]+ tokens; the limit is 512", console)
    assert "slide 3 ('Odd') left out: tab must be one of" in console
    assert started["deck"] == "tour-2" and "?deck=tour-2" in console
    assert [s.title for s in started["decks"]["tour-2"].slides] == ["Fine"]
    assert walk.deck_name(tmp_path / "next-word.md") == "next-word-2" and walk.deck_name(talk.with_stem("x")) == "x"


def test_the_notebook_takes_a_runner_for_its_model(tiny_net, tiny_enc):
    import playground as pg

    mine = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    t = pg.analyze(TINY_PROMPT, model=mine)  # as the README's comment suggests: model=pg.runner_for(...)
    assert t.runner is mine and pg.runner_for(mine) is mine
    assert t.view("rope", "pairs", layer=0, head=0, pos=-1).figure.to_json() == \
        tour.tour_step(mine, t.trace, 3, False)[2].to_json()  # the tour's RoPE step is that view
    with pytest.raises(PromptError, match="layer must be in 0..1"):
        t.attention(layer=2, head=0)
