"""Every tab in Chromium on a second model shape: the app served on the tiny model unlike SmolLM2 in every way a
tab could assume (3 layers, 4 query heads on one key/value head, head size 12, untied, biases, q/k norm, a
sliding window, a no-RoPE layer, RoPE scaling). Each tab's main figure draws, nothing on the page is an error,
and the controls that count layers and heads stop at this model's."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from ..conftest import serve
from ..helpers import other_config, random_model
from .test_browser import main_figure_ready, open_tab, shot

PROMPT = "the cat sat on the mat. the cat sat on the mat and the dog"


@pytest.fixture(scope="module")
def other_server(tiny_enc):
    from app import create_app
    from playground.runner import ModelRunner

    runner = ModelRunner(random_model(other_config(), seed=3), tiny_enc)
    app = create_app(runner, "other: a tiny random model of a second shape")
    yield from serve(app, runner)


def slider_max(page, elem_id: str) -> int:
    return int(page.locator(f"#{elem_id} input[type=range]").first.get_attribute("max"))


def test_browser_every_tab_on_a_second_shape(browser, other_server):
    from playground.registry import TABS

    cfg = other_config()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{other_server}?prompt={quote(PROMPT)}")
        page.wait_for_selector("#token-spans .tok", timeout=60_000)
        for tab in TABS:
            open_tab(page, tab.label)
            main_figure_ready(page, tab.figure)
            page.wait_for_timeout(300)
            panel = page.locator(f"#{tab.figure}").locator("xpath=ancestor::div[contains(@class, 'tabitem')]")
            text = panel.first.inner_text()
            assert "⚠️" not in text and "Error" not in text, (tab.id, text[:400])
            toasts = page.locator(".toast-body.error")
            assert toasts.count() == 0, (tab.id, toasts.all_inner_texts())
            if tab.id == "attention":
                assert slider_max(page, "attn-layer") == cfg.n_layers - 1
                assert slider_max(page, "attn-head") == cfg.n_heads - 1
            shot(page, f"shape-{tab.id}")
        assert errors == [], errors[:3]
    finally:
        context.close()


@pytest.fixture(scope="module")
def gemma_server(gemma):
    from app import create_app
    from model import GEMMA_MODEL, NOTICES
    from playground.runner import ModelRunner

    net, enc = gemma
    runner = ModelRunner(net, enc)
    app = create_app(runner, f"Google's Gemma 3 270M base model. {NOTICES[GEMMA_MODEL]}")
    yield from serve(app, runner)


@pytest.mark.parametrize("width", [1280, 390])
def test_browser_every_tab_on_gemma(browser, gemma_server, width):
    """The second real model in Chromium, at a presenter's 1280 x 720 and a phone's 390 px: every tab's main figure
    draws without an error; the model line carries Gemma's notice; the chat switch says there is no template; the
    Attention tab names the global layers."""
    from playground.registry import TABS

    context = browser.new_context(viewport={"width": width, "height": 720 if width > 400 else 844})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{gemma_server}?prompt={quote('The Eiffel Tower is in the city of')}")
        page.wait_for_selector("#token-spans .tok", timeout=60_000)
        line = page.locator("#model-line").inner_text()
        assert "Gemma Terms of Use" in line and "Prohibited Use Policy" in line and "sliding window 512" in line
        assert "none (a base model)" in page.locator("#chat").inner_text()
        assert page.locator("#chat input").is_disabled()
        assert page.locator("#token-spans .tok").first.inner_text().startswith("<bos>")
        for tab in TABS:
            open_tab(page, tab.label)
            main_figure_ready(page, tab.figure)
            page.wait_for_timeout(300)
            panel = page.locator(f"#{tab.figure}").locator("xpath=ancestor::div[contains(@class, 'tabitem')]")
            text = panel.first.inner_text()
            assert "⚠️" not in text and "Error" not in text, (tab.id, text[:400])
            assert page.locator(".toast-body.error").count() == 0, tab.id
            if tab.id == "attention":
                assert "Global layers, which see every key: 5, 11, 17" in page.locator("#attn-summary").inner_text()
            shot(page, f"gemma-{width}-{tab.id}")
        assert errors == [], errors[:3]
    finally:
        context.close()


@pytest.fixture(scope="module")
def two_model_server(real, gemma):
    from app import create_app
    from playground.runner import ModelRunner

    runner = ModelRunner(*real)
    second = ModelRunner(*gemma, gate=runner.gate)
    second.budget = runner.budget
    app = create_app(runner, "compared with gemma3-270m", second=second)
    yield from serve(app, runner)


@pytest.mark.parametrize("width", [1280, 390])
def test_browser_compare_two_models_side_by_side(browser, two_model_server, width):
    """Compare in Chromium, SmolLM2 beside Gemma: at 1280 x 720 the columns stand side by side, on a 390 px phone
    they stack and the page does not scroll sideways; the tokenization note says where the tokenizers split, and
    the lens view says from which depth each answer holds."""
    phone = width < 400
    context = browser.new_context(viewport={"width": width, "height": 844 if phone else 720}, is_mobile=phone,
                                  has_touch=phone)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{two_model_server}?prompt={quote('The Eiffel Tower is in the city of')}")
        page.wait_for_selector("#token-spans .tok", timeout=60_000)
        open_tab(page, "Compare")
        for side in ("left", "right"):
            page.wait_for_selector(f"#cmp-{side} .js-plotly-plot", timeout=60_000)
        assert page.locator("#cmp-left-title").inner_text() == "smollm2-135m-instruct"
        assert page.locator("#cmp-right-title").inner_text() == "gemma3-270m"
        note = page.locator("#cmp-note").inner_text()
        assert "9 tokens" in note and "split alike at 7 places" in note and "The E|iffel" in note, note
        left, right = (page.locator(f"#cmp-{s}-title").bounding_box() for s in ("left", "right"))
        if phone:
            assert right["y"] > left["y"] + 100 and abs(right["x"] - left["x"]) < 5  # stacked
            assert page.evaluate("document.documentElement.scrollWidth") <= width
        else:
            assert abs(right["y"] - left["y"]) < 5 and right["x"] > left["x"] + 300  # side by side
        page.locator("#cmp-view input").click()
        page.get_by_role("option", name="Logit lens (where the answer settles)").click()
        page.wait_for_function("document.querySelector('#cmp-note').innerText.includes('of its depth')",
                               timeout=60_000)
        assert page.locator("#cmp-note").inner_text().count("answers “ Paris”") == 2
        shot(page, f"compare-{width}")
        assert errors == [], errors[:3]
    finally:
        context.close()
