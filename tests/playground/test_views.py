"""Views are named pure functions: every one is callable by name without the app, refuses bad state with a
PromptError, and is what the tour, decks and the notebook show; text from a visitor, a deck or the model is text."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from playground import deck_export, tour, views, walk
from playground.errors import PromptError
from playground.runner import ModelRunner
from playground.view import View

from ..conftest import TINY_PROMPT

ROOT = Path(__file__).resolve().parents[2]
EVIL = 'Look at <img src="http://192.0.2.7/pixel.png?who=visitor"> please <b>now</b>'
# Gradio renders Markdown with raw HTML allowed (then sanitises, keeping <img src>): render as CommonMark does.
MARKDOWN = MarkdownIt("commonmark")

# A state each view draws in (beyond the runner and the trace), and bad values for its settings.
GOOD = {("routes", "why"): dict(layer=1, head=2), ("intervene", "ablation"): dict(heads=["L0H1"]),
        ("intervene", "patching"): dict(clean="the cat sat on the", corrupted="the mat sat on the", a=" cat",
                                        b=" mat", kind="heads")}
BAD = {"layer": 10**6, "head": -1, "pos": 10**6, "query": 10**6, "key": float("nan"), "threshold": 1.0, "k": 0,
       "tokens": 0, "statistic": "nonsense", "with_mid": None, "top_n": 10**6, "order": "vllm", "heads": ["L0H99"],
       "attention_layers": [99], "mlp_layers": [-1], "mode": "resample", "a": ["x"], "kind": "everything",
       "clean": ["not text"], "corrupted": 3, "temperature": 1e9, "top_k": 1e9, "merges": 0, "step": 10**6,
       "new_tokens": 0, "width": 99, "length_penalty": 99, "early_stopping": "sometimes", "top_p": 0, "seed": -1,
       "window": 0, "sinks": -1, "layers": "0-999", "pattern": "diagonal", "bq": 0, "bk": 10**6, "budget": 99,
       "experiment": "everything"}


def registered() -> list[tuple[str, str]]:
    return [(tab, name) for tab, module in views.BY_TAB.items() for name in module.VIEWS]


@pytest.fixture(scope="module")
def runner(tiny_net, tiny_enc):
    return ModelRunner(tiny_net, tiny_enc, background_lens=False)


@pytest.fixture(scope="module")
def trace(runner):
    return runner.analyze(TINY_PROMPT, lens=False)


def _call(runner, trace, tab: str, name: str, **state) -> View:
    fn = views.view(tab, name)
    if name == "patching":  # a view of two prompts, not of one trace
        return fn(runner, **{**GOOD[tab, name], **state})
    return fn(runner, trace, **{**GOOD.get((tab, name), {}), **state})


@pytest.mark.parametrize("tab,name", registered())
def test_every_registered_view_draws_by_name_without_the_app(runner, trace, tab, name):
    shown = _call(runner, trace, tab, name)
    assert isinstance(shown, View) and shown.figure is not None and shown.note, (tab, name)
    assert hasattr(shown.figure, "to_dict")  # a Plotly figure, shown inline in a notebook
    assert "⚠️" not in shown.note  # errors are raised, never written as text


@pytest.mark.parametrize("tab,name", registered())
def test_every_registered_view_refuses_each_bad_setting_with_a_prompt_error(runner, trace, tab, name):
    parameters = set(inspect.signature(views.view(tab, name)).parameters)
    parameters |= {"temperature", "top_k"} if name == "next_token" else set()
    tried = [p for p in parameters if p in BAD]
    assert tried or name in ("table", "norms", "flops", "kv_cache", "data"), (tab, name)  # a view's settings are tried
    for parameter in tried:
        with pytest.raises(PromptError) as refused:
            _call(runner, trace, tab, name, **{parameter: BAD[parameter]})
        assert str(refused.value).strip(), (tab, name, parameter)


def test_an_unknown_view_or_tab_is_named():
    with pytest.raises(PromptError, match="its views: pattern"):
        views.view("attention", "heatmap")
    with pytest.raises(PromptError, match="no tab 'tour' has views"):
        views.view("tour", "step")


def test_a_slide_of_every_slide_tab_is_its_slide_view(runner, trace):
    for tab, module in views.BY_TAB.items():
        if module.SLIDE is None:
            continue
        deck = walk.load_deck(f"# T\n## S\nprompt: {TINY_PROMPT}\ntab: {tab}\n")
        assert not deck.problems, deck.problems
        caption, figure, shown_tab, _ = walk.slide_view(runner, trace, deck.slides[0], False)
        expected = views.show(tab, module.SLIDE, runner, trace, {}, False).figure
        assert shown_tab == tab and figure.to_json() == expected.to_json(), tab


def test_the_tour_decks_and_the_notebook_call_views_and_no_tabs_handler(runner):
    from app import create_app

    handlers = {(fn.fn.__module__, fn.fn.__name__) for fn in create_app(runner).fns.values() if fn.fn}
    assert ("playground.tab_attention", "render_head") in handlers  # bind keeps a handler's module and name
    tab_modules = {module.__name__ for module in views.BY_TAB.values()}
    for name in ("tour", "walk", "deck", "notebook", "views"):
        tree = ast.parse((ROOT / "playground" / f"{name}.py").read_text(encoding="utf-8"))
        used = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and f"playground.{node.module}" in tab_modules:
                used |= {(f"playground.{node.module}", alias.name) for alias in node.names}
        assert not used & handlers, (name, used & handlers)
        assert all(callable(getattr(sys.modules[m], n)) or n.isupper() for m, n in used)


def _rendered(markdown: str) -> str:
    return MARKDOWN.render(markdown)


def test_markup_in_a_prompt_or_the_models_text_never_becomes_html_in_a_tour_caption(runner, monkeypatch):
    evil = runner.analyze(EVIL + " the cat sat", lens=False)
    monkeypatch.setattr(runner, "decode", lambda ids: '<img src="http://192.0.2.7/x.png">\n**bold** <b>b</b>')
    for step in range(1, len(tour.STEPS) + 1):
        progress, caption, _, notes, _, _ = walk.show(runner, {}, evil, walk.Walk(), walk.THE_TOUR, step, False)
        for text in (progress, caption, notes):
            html = _rendered(text)
            assert "<img" not in html and "<b>" not in html, (step, html)
    _, caption, *_ = tour.tour_step(runner, evil, len(tour.STEPS), False)
    html = _rendered(caption)
    assert "&lt;img src=" in html and "⏎" in html  # shown as the characters they are, on one line
    assert "**bold**" in html  # the model's asterisks too


def test_a_decks_markup_is_text_in_the_live_page_and_in_the_export(runner):
    deck = walk.load_deck(f"# <b>Talk</b>\n## <i>One</i>\nprompt: {TINY_PROMPT}\ntab: attention\n\n{EVIL} "
                          "![pixel](http://192.0.2.7/p.png) `<code>` **fine**\n\nNotes: <script>alert(1)</script>\n")
    progress, caption, figure, notes, _, _ = walk.show(runner, {"t": deck}, None, walk.Walk(), "t", 1, False)
    for text in (progress, caption, notes):
        html = _rendered(text)
        assert not any(tag in html for tag in ("<img", "<b>", "<i>", "<script")), html
    assert "<strong>fine</strong>" in _rendered(caption) and "<code>&lt;code&gt;</code>" in _rendered(caption)
    page = deck_export.deck_html("<b>Talk</b>", [("<i>One</i>", deck.slides[0].caption, deck.slides[0].notes,
                                                   figure)])
    body = page.split("<script")[0]
    assert not any(tag in body for tag in ("<img", "<b>", "<i>")) and "<strong>fine</strong>" in body


def test_a_word_is_what_split_finds_and_indentation_is_no_word(tiny_net, tiny_enc):
    from playground.tab_tokenization import words

    code = "def f(x):\n    return x  # done\n\n\tprint(f(2))"
    small = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    trace = small.analyze(code, lens=False)
    assert len(words(trace)) == len(code.split())
    assert f"({len(code.split())} words)" in tour.tour_step(small, trace, 1, False)[1]


def test_a_tour_step_reads_the_views_it_draws_and_not_the_model():
    """tour.py asks the runner for nothing but its config: every number in a caption is a fact of the step's view
    (or of the analysis itself), so a caption cannot drift from the figure beside it."""
    tree = ast.parse((ROOT / "playground" / "tour.py").read_text(encoding="utf-8"))
    read = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id in ("runner", "r")}
    assert read == {"cfg"}, read


def test_each_tour_step_draws_its_tabs_view(runner, trace):
    for number, step in enumerate(tour.STEPS, 1):
        title, caption, figure, tab, _ = tour.tour_step(runner, trace, number, False)
        view = views.show(step.tab, step.view, runner, trace, step.state(runner, trace))
        assert tab == step.tab and figure.to_json() == view.figure.to_json(), number


def test_every_tab_but_the_tour_offers_its_views_by_name():
    from playground.registry import TABS

    # the Tour shows the others' views; Compare's are of two sides (compare.COMPARISONS), drawn by those same views
    assert {tab.id for tab in TABS} - {"tour", "compare"} == set(views.BY_TAB)
    assert all(tab.views == dict(views.BY_TAB[tab.id].VIEWS) for tab in TABS if tab.id not in ("tour", "compare"))
