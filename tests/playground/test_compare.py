"""Comparisons of two sides, each checked against an independent reading: the tokenizers' own encodings, the
model's own logits and hooks."""

from __future__ import annotations

from types import SimpleNamespace
import json

import pytest
import torch
from plotly.utils import PlotlyJSONEncoder

from playground.compare import COMPARISONS, Side, compare
from playground.errors import PromptError
from playground.room import Rooms
from playground.runner import ModelRunner

TEXT = "Unbelievably, the tokenizer's 2024 splits differ: naïve café 🤖 ≠ plain."


@pytest.fixture(scope="module")
def two_models(real, gemma):
    runners = [ModelRunner(*pair, background_lens=False) for pair in (real, gemma)]
    runners[1].gate = runners[0].gate  # one gate serves both, as in the app
    return [Side(r, r.analyze(TEXT), r.cfg.name) for r in runners]


def _ends(enc, text: str) -> set[int]:
    """Where each token of `text` ends, in bytes, from the tokenizer's own encoding (the last end left out)."""
    at, ends = 0, set()
    for i in enc.encode(text):
        at += len(enc.token_bytes(i))
        ends.add(at)
    ends.discard(len(text.encode()))
    return ends


def test_tokenization_says_where_two_tokenizers_split_alike_and_apart(two_models, real, gemma):
    smol, gem = two_models
    shown = compare("tokenization", smol, gem)
    a, b = _ends(real[1], TEXT), _ends(gemma[1], TEXT)
    assert shown.facts["shared_splits"] == len(a & b) > 0
    assert shown.facts["only_left"] == len(a - b) and shown.facts["only_right"] == len(b - a)
    assert shown.facts["left_tokens"] == len(real[1].encode(TEXT)) and \
        shown.facts["right_tokens"] == len(gemma[1].encode(TEXT)) + 1  # Gemma's BOS
    assert f"split alike at {len(a & b)} places" in shown.note
    assert ("Only smollm2\\-135m\\-instruct splits at" in shown.note) == bool(a - b)  # the label, as Markdown text
    assert "inside “🤖”" in shown.note  # byte-level BPE cuts the emoji's bytes; Gemma keeps it whole
    assert shown.left.facts["tokens"] == shown.facts["left_tokens"]


def test_next_token_compares_each_models_own_top_tokens(two_models, real, gemma):
    shown = compare("next_token", *two_models, top_n=10)
    tops = []
    for net, enc, add in ((*real, []), (*gemma, [gemma[1].bos_token_id])):
        logits = net(torch.tensor([add + enc.encode(TEXT)]))[0, -1]
        tops.append([enc.decode([int(i)]) for i in logits.topk(10).indices])
    assert (shown.facts["left_best"], shown.facts["right_best"]) == (tops[0][0], tops[1][0])
    assert shown.facts["shared_top"] == len(set(tops[0]) & set(tops[1]))
    assert ("agree" in shown.note) == (tops[0][0] == tops[1][0])


def test_the_lens_says_from_which_relative_depth_each_answer_holds(two_models, real, gemma):
    shown = compare("lens", *two_models)
    for key, (net, enc), add in (("left", real, []), ("right", gemma, [gemma[1].bos_token_id])):
        tokens = torch.tensor([add + enc.encode(TEXT)])
        _, cache = net.run_with_cache(tokens, names_filter=r"hook_resid_post$|hook_embed$")
        states = [cache["hook_embed"][0, -1]] + [cache[f"blocks.{l}.hook_resid_post"][0, -1]
                                                 for l in range(net.cfg.n_layers)]
        top1 = [int(net.output(net.ln_final(s)).argmax()) for s in states]  # each row through the final norm
        settle = len(top1)
        while settle > 0 and top1[settle - 1] == top1[-1]:
            settle -= 1
        assert shown.facts[f"{key}_settles_row"] == settle, key
        assert shown.facts[f"{key}_depth"] == pytest.approx(settle / net.cfg.n_layers)
        assert shown.facts[f"{key}_answer"] == top1[-1]


def test_attention_takes_the_layer_at_the_same_relative_depth(two_models):
    for depth, layers in ((0.0, (0, 0)), (1.0, (29, 17)), (0.5, (14, 8))):
        shown = compare("attention", *two_models, depth=depth, head=2)
        assert (shown.facts["left_layer"], shown.facts["right_layer"]) == layers
        assert shown.right.facts["window"] == (None if layers[1] in (5, 11, 17) else 512)
    with pytest.raises(PromptError, match="depth"):
        compare("attention", *two_models, depth=2.0)


def test_two_prompts_on_one_model(tiny_net, tiny_enc):
    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    a, b = (Side(runner, runner.analyze(p, lens=False), label) for p, label in
            (("the cat sat on the mat", "prompt A"), ("the dog sat on the rug and the cat", "prompt B")))
    for name in COMPARISONS:
        shown = compare(name, a, b)
        assert shown.left.figure is not None and shown.right.figure is not None and shown.note
    tokens = compare("tokenization", a, b)
    counts = [len(tiny_enc.encode(p)) for p in ("the cat sat on the mat", "the dog sat on the rug and the cat")]
    assert [tokens.facts["left_tokens"], tokens.facts["right_tokens"]] == counts
    assert "shared_splits" not in tokens.facts  # two texts: no split to compare
    with pytest.raises(PromptError, match="no comparison named 'everything'"):
        compare("everything", a, b)


def test_the_tour_side_by_side_quotes_each_models_own_numbers(two_models):
    """Every tour step draws on both models; step 4's caption counts each model's own query heads per key/value
    head (SmolLM2: 3, Gemma: 4), and step 1's each side's own tokens."""
    for step in range(1, 11):
        shown = compare("tour", *two_models, step=step)
        assert "⚠️" not in shown.left.note + shown.right.note and shown.left.figure and shown.right.figure, step
        assert f"Tour step {step} of 10" in shown.note
    heads = compare("tour", *two_models, step=4)
    assert "3 query heads share each key/value head" in heads.left.note
    assert "4 query heads share each key/value head" in heads.right.note
    tokens = compare("tour", *two_models, step=1)
    left_n, right_n = (side.trace.n_tokens for side in two_models)
    assert str(left_n) in tokens.left.note and str(right_n) in tokens.right.note


def test_compare_model_at_start_up_shares_the_gate_and_budget_or_says_why_not(tiny_net, tiny_enc, monkeypatch,
                                                                               capsys):
    from model import CheckpointError
    from playground import server

    started = {}
    loads = []

    def choose(model, dtype):
        loads.append(model)
        if model == "too-big":
            raise CheckpointError("too-big: 70.6 B parameters need about 525.6 GB to load")
        return tiny_net, tiny_enc, f"weights: {model}"

    monkeypatch.setattr(server, "choose_model", choose)
    monkeypatch.setattr(server, "create_app", lambda runner, note, decks, deck, second=None: started.update(
        runner=runner, note=note, second=second) or SimpleNamespace(rooms=Rooms(runner)))
    monkeypatch.setattr(server, "queued", lambda app, runner: type("App", (), {"launch": lambda *a, **k: None})())
    monkeypatch.setattr("sys.argv", ["app.py", "--compare-model", "other"])
    assert server.main() == 0 and loads == [None, "other"]
    first, second = started["runner"], started["second"]
    assert second is not first and second.gate is first.gate and second.budget is first.budget
    assert "compared with" in started["note"] and "weights: other" in started["note"]
    monkeypatch.setattr("sys.argv", ["app.py", "--compare-model", "too-big"])
    assert server.main() == 1
    assert "error: --compare-model: too-big: 70.6 B parameters need about 525.6 GB" in capsys.readouterr().err


DECK = """# Two prompts
## Tokens
prompt: the cat sat on the mat
tab: compare
prompt_b: the dog sat on the rug
## Next
tab: compare
prompt_b: the mat sat on the cat
view: next_token
## Missing
tab: compare
## Odd view
tab: compare
prompt_b: the cat
view: everything
"""


def test_a_deck_slide_compares_two_prompts_in_one_figure(tiny_net, tiny_enc):
    """A deck's compare slide: the slide's prompt against prompt_b, both sides' traces in one figure of two columns,
    the joint note as its caption; a slide without prompt_b, or with an unknown view, is left out naming the field."""
    from playground import walk

    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    deck = walk.checked_decks(runner, {"two": walk.load_deck(DECK)})["two"]
    assert [s.title for s in deck.slides] == ["Tokens", "Next"]
    assert any("slide 3 ('Missing') left out: prompt_b: Type a prompt first" in p for p in deck.problems)
    assert any("slide 4 ('Odd view') left out: view: must be one of" in p for p in deck.problems)
    for slide, name in zip(deck.slides, ("tokenization", "next_token")):
        trace = runner.analyze(slide.prompt, lens=False)
        caption, figure, tab, values = walk.slide_view(runner, trace, slide, large=True)
        right = runner.analyze(slide.state["prompt_b"], lens=False)
        shown = compare(name, Side(runner, trace, "prompt A"), Side(runner, right, "prompt B"), large=True)
        assert tab == "compare" and values["prompt_b"] == slide.state["prompt_b"] and caption == shown.note
        assert [a.text for a in figure.layout.annotations][:2] == ["prompt A", "prompt B"]
        plain = lambda t: json.loads(json.dumps(t.to_plotly_json(), cls=PlotlyJSONEncoder))  # noqa: E731
        ours = [plain(t) for t in figure.data]
        theirs = [plain(t) for t in (*shown.left.figure.data, *shown.right.figure.data)]
        for mine, source in zip(ours, theirs):  # the same data, placed in the two columns
            assert {k: v for k, v in mine.items() if k not in ("domain", "xaxis", "yaxis", "showscale")} == \
                {k: v for k, v in source.items() if k not in ("domain", "xaxis", "yaxis", "showscale")}
        assert len(ours) == len(theirs)
        assert all(a.font.size >= 18 for a in figure.layout.annotations) and figure.layout.font.size >= 18
