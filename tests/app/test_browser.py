"""The running app in headless Chromium, as a visitor uses it.

These need Debian's Chromium (/usr/bin/chromium) and the `playwright` package; they are
skipped without them, unless PLAYGROUND_REQUIRE_BROWSER=1 (as CI sets), which turns a
missing browser or playwright into a failure. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from playground import tab_attention, tab_intervene

from ..conftest import ROOT

SHOTS = ROOT / "artifacts" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.requests = []
    page.on("request", lambda r: page.requests.append(r.url))
    yield page
    context.close()


def assert_only_local_requests(page) -> None:
    outside = [u for u in page.requests if urlparse(u).scheme in ("http", "https", "ws",
                                                                  "wss") and urlparse(u).hostname not in LOCAL_HOSTS]
    assert not outside, f"the page fetched from outside this machine: {outside[:5]}"
    assert page.requests, "no requests were recorded at all"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_app(page, url: str) -> None:
    """Load the page and wait for the example prompt's analysis, which runs on load."""
    page.goto(url)
    page.wait_for_selector("#token-spans .tok", timeout=60_000)


def wait_text(page, selector: str, text: str, timeout: int = 30_000) -> None:
    """Wait until the element's visible text contains `text`."""
    page.wait_for_function(f"document.querySelector({selector!r}).innerText.includes({text!r})", timeout=timeout)


def run_section(page, section: str, button: str, plot: str, numbers: dict[str, str] | None = None,
                timeout: int = 60_000) -> None:
    """Open a folded section, type its `numbers` (elem_id: value), press its button, and wait for its plot."""
    page.locator("button.label-wrap", has_text=section).click()
    for elem_id, value in (numbers or {}).items():
        set_number(page, elem_id, value)
    page.locator(f"#{button}").click()
    page.wait_for_selector(f"#{plot} .js-plotly-plot", timeout=timeout)


def set_number(page, elem_id: str, value: str) -> None:
    """Type a value into a slider's number box and submit it, as a user would."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Enter")


def slider_value(page, elem_id: str) -> int:
    return int(page.locator(f"#{elem_id} input[type=number]").input_value())


def test_browser_tokenization_and_attention(page, server, real):
    enc = real[1]
    open_app(page, server)

    prompt = "Hello world. Hello world! 2024 ☕"
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#analyze").click()
    n = len(enc.encode(prompt))
    page.wait_for_function(f"document.querySelectorAll('#token-spans .tok').length === {n}", timeout=30_000)
    assert f"{n} tokens" in page.locator("#token-counts").inner_text()
    ids = [int(t) for t in page.locator("#token-spans .tok .id").all_inner_texts()]
    assert ids == enc.encode(prompt)
    page.get_by_label("Show whitespace").check()
    page.wait_for_function("document.querySelector('#token-spans').innerText.includes('·')")
    assert page.locator("#token-compare .tok").count() > 0  # cl100k_base beside it
    shot(page, "tokenization")

    page.get_by_role("tab", name="Attention").click()
    page.wait_for_selector("#attn-heatmap .js-plotly-plot .heatmaplayer", timeout=30_000)
    page.wait_for_selector("#attn-layer-grid img", timeout=30_000)
    assert "layer 0, head 0" in page.locator("#attn-summary").inner_text()

    # Click the thumbnail of head 4 (the middle of the 3 x 3 grid): the head slider follows.
    img = page.locator("#attn-layer-grid img")
    box = img.bounding_box()
    img.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
    wait_text(page, "#attn-summary", "head 4")
    assert slider_value(page, "attn-head") == 4
    page.get_by_text("Q, K and V of this head").click()
    page.wait_for_selector("#attn-vectors .js-plotly-plot .heatmaplayer", timeout=30_000)
    assert page.locator("#attn-stages .js-plotly-plot .heatmaplayer").count() == 4  # one per stage
    shot(page, "attention")

    # The layers x heads overview: click layer 2, head 7.
    page.get_by_text("All layers × heads").click()
    overview = page.locator("#attn-overview img")
    overview.wait_for(timeout=30_000)
    box = overview.bounding_box()
    natural = overview.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    sx, sy = box["width"] / natural[0], box["height"] / natural[1]
    cell = tab_attention.OVERVIEW_CELL + 2
    overview.click(position={"x": (2 + 2 * cell + 15) * sx,
                             "y": (2 + 7 * cell + 15) * sy})  # column = layer, row = head
    wait_text(page, "#attn-summary", "layer 2, head 7")
    assert (slider_value(page, "attn-layer"), slider_value(page, "attn-head")) == (2, 7)
    shot(page, "attention-overview")

    # The head-statistics table, sorted by previous-token attention: its first row opens that head.
    page.get_by_text("Head statistics").click()
    first = page.locator("#attn-stats [data-testid=cell-0-0]")
    first.wait_for(timeout=30_000)
    layer, head = (int(page.locator(f"#attn-stats [data-testid=cell-0-{c}]").inner_text()) for c in (0, 1))
    first.click()
    page.wait_for_function(f"document.querySelector('#attn-summary').innerText.includes('layer {layer}, head {head}')",
                           timeout=30_000)
    assert_only_local_requests(page)


def test_browser_rope_and_logit_lens(page, server):
    open_app(page, server)
    page.get_by_role("tab", name="RoPE").click()
    page.wait_for_selector("#rope-pairs .js-plotly-plot", timeout=30_000)
    page.wait_for_selector("#rope-relative .js-plotly-plot", timeout=30_000)
    assert page.locator(".katex").count() > 0  # the formulas are typeset, from the page's own bundle
    before = page.locator("#rope-pairs .gtitle").text_content()
    set_number(page, "rope-base", "3")
    page.wait_for_function("document.querySelector('#rope-pairs .gtitle').textContent.includes('base 1e+03')",
                           timeout=30_000)
    assert "model's base" in before
    shot(page, "rope")

    page.get_by_role("tab", name="Logit lens").click()
    page.wait_for_selector("#lens-grid .js-plotly-plot .heatmaplayer", timeout=60_000)
    page.wait_for_selector("#lens-watch .js-plotly-plot .scatterlayer", timeout=30_000)
    assert "L29" in page.locator("#lens-grid").inner_text()
    shot(page, "logit-lens")
    assert_only_local_requests(page)


def test_browser_sampler(page, server):
    open_app(page, server)
    page.get_by_role("tab", name="Sampler").click()
    page.wait_for_selector("#samp-bars .js-plotly-plot", timeout=30_000)
    page.wait_for_function("document.querySelector('#samp-bars .gtitle').textContent.includes('49,152 of 49,152')",
                           timeout=30_000)

    set_number(page, "samp-topk", "5")
    page.wait_for_function("document.querySelector('#samp-bars .gtitle').textContent.includes('5 of 49,152')",
                           timeout=30_000)
    assert "top-k" in page.locator("#samp-stages").inner_text()

    prompt_only = page.locator("#samp-text").inner_text()
    page.locator("#samp-sample").click()
    page.wait_for_selector("#samp-text .gtok", timeout=30_000)
    assert page.locator("#samp-text .gtok").count() == 1
    page.wait_for_function("document.querySelector('#samp-bars .gtitle').textContent.includes('step 2')",
                           timeout=30_000)
    page.locator("#samp-back").click()
    page.wait_for_function("document.querySelectorAll('#samp-text .gtok').length === 0", timeout=30_000)
    assert page.locator("#samp-text").inner_text() == prompt_only

    page.locator("#samp-table [data-testid=cell-2-0]").click()  # force the third most likely token
    page.wait_for_selector("#samp-text .gtok", timeout=30_000)
    shot(page, "sampler")
    assert_only_local_requests(page)


def test_browser_empty_prompt_gets_a_message(page, server):
    open_app(page, server)
    page.locator("#prompt textarea").fill("   ")
    page.locator("#analyze").click()
    wait_text(page, "#status", "Type a prompt")
    page.wait_for_function("document.querySelectorAll('#token-spans .tok').length === 0", timeout=30_000)
    assert "Analyze a prompt" in page.locator("#token-spans").inner_text()
    assert_only_local_requests(page)


def test_browser_link_opens_prompt_tab_and_presenter_mode(page, server):
    page.goto(f"{server}?prompt=Hello%20there%2C%20general%20Kenobi&tab=attention&large=1")
    page.wait_for_selector("#attn-heatmap .js-plotly-plot", timeout=60_000)
    assert page.locator("#prompt textarea").input_value() == "Hello there, general Kenobi"
    page.wait_for_function("document.body.classList.contains('presenter')", timeout=30_000)
    assert "·general" in page.locator("#attn-heatmap").inner_text()  # the heatmap is of this prompt
    assert "tab=attention" in page.locator("#share-link").inner_text()
    shot(page, "presenter")
    page.locator("#download-trace").click()
    page.wait_for_selector("#trace-file a", timeout=30_000)
    assert_only_local_requests(page)


def test_browser_two_sessions_see_only_their_own_prompt(browser, server, real):
    enc = real[1]
    """Two visitors analyze different prompts at the same moment; each page shows its own tokens."""
    prompts = ["Apples are red and bananas are yellow.", "Zebras run across the wide savanna at dawn."]
    contexts = [browser.new_context() for _ in prompts]
    pages = [c.new_page() for c in contexts]
    try:
        for page in pages:
            open_app(page, server)
        for page, prompt in zip(pages, prompts):
            page.locator("#prompt textarea").fill(prompt)
        for page in pages:  # both requests in flight together
            page.locator("#analyze").click()
        for page, prompt in zip(pages, prompts):
            n = len(enc.encode(prompt))
            page.wait_for_function(f"document.querySelectorAll('#token-spans .tok').length === {n}", timeout=60_000)
            text = page.locator("#token-spans").inner_text()
            ids = [int(t) for t in page.locator("#token-spans .tok .id").all_inner_texts()]
            assert ids == enc.encode(prompt)
            other = prompts[1 - prompts.index(prompt)]
            assert other.split()[0] not in text
    finally:
        for c in contexts:
            c.close()


def test_browser_enter_analyzes_and_shift_enter_starts_a_new_line(page, server, real):
    enc = real[1]
    open_app(page, server)
    box = page.locator("#prompt textarea")
    box.fill("")
    box.type("First line")
    box.press("Shift+Enter")
    box.type("second line")
    assert box.input_value() == "First line\nsecond line"
    box.press("Enter")
    n = len(enc.encode("First line\nsecond line"))
    page.wait_for_function(f"document.querySelectorAll('#token-spans .tok').length === {n}", timeout=30_000)
    assert box.input_value() == "First line\nsecond line"  # Enter analyzed; it added no line
    assert_only_local_requests(page)


def open_tab(page, label: str) -> None:
    """Click a tab, through the 'More tabs' menu where a narrow screen folds it away."""
    tab = page.get_by_role("tab", name=label)
    if tab.is_visible():
        tab.click()
    else:
        page.locator('button[aria-label="More tabs"]').click()
        page.locator(".overflow-dropdown button", has_text=label).click()


def test_browser_a_phone_uses_every_tab_without_sideways_scrolling(browser, server):
    from playground.registry import TABS

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        open_app(page, server)
        for spec in TABS:
            open_tab(page, spec.label)
            figure = page.locator(f"#{spec.figure}")
            figure.locator(".js-plotly-plot, .tok, img, table").first.wait_for(timeout=60_000)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, f"{spec.id}: the page scrolls sideways"
            box = figure.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, f"{spec.id}: {box}"
            if spec.id in ("tokenization", "attention", "routes", "sampler"):  # a few to look at
                figure.scroll_into_view_if_needed()
                shot(page, f"phone-{spec.id}")
        for selector in ("#prompt textarea", "#analyze"):
            box = page.locator(selector).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    finally:
        context.close()


def test_browser_intervene_ablate_patch_attribute(page, server):
    open_app(page, server)
    open_tab(page, "Intervene")
    grid = page.locator("#int-grid img")
    grid.wait_for(timeout=60_000)
    box = grid.bounding_box()
    natural = grid.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    sx, sy = box["width"] / natural[0], box["height"] / natural[1]
    cell = tab_intervene.CELL + 2
    grid.click(position={"x": (2 + 3 * cell + 15) * sx, "y": (2 + 1 * cell + 15) * sy})  # layer 3, head 1
    wait_text(page, "#int-picked", "L3H1")
    page.locator("#int-ablate").click()
    page.wait_for_selector("#int-ablate-plot .js-plotly-plot", timeout=60_000)
    assert "Logit difference" in page.locator("#int-ablate-note").inner_text()

    page.get_by_text("Activation patching: where does the answer live?").click()
    page.locator("#int-patch").click()
    wait_text(page, "#int-patch-note", "done", 120_000)
    assert page.locator("#int-patch-plot .js-plotly-plot .heatmaplayer").count() == 1

    run_section(page, "Direct logit attribution", "int-attribute", "int-attribute-plot")
    assert "the parts sum to" in page.locator("#int-attribute-note").inner_text()
    shot(page, "intervene")
    assert_only_local_requests(page)


def test_browser_the_concept_tabs(page, server):
    """Embeddings, Inside a block, Arithmetic and Train BPE each open on the analysed prompt and answer a control."""
    open_app(page, server)
    open_tab(page, "Embeddings")
    page.wait_for_selector("#emb-neighbours .js-plotly-plot", timeout=60_000)
    assert "embedding norm" in page.locator("#emb-note").inner_text()
    page.wait_for_selector("#emb-pca .js-plotly-plot", timeout=30_000)
    shot(page, "embeddings")

    open_tab(page, "Inside a block")
    page.wait_for_selector("#blk-neurons .js-plotly-plot", timeout=60_000)
    set_number(page, "blk-layer", "3")
    wait_text(page, "#blk-note", "Layer 3")
    shot(page, "block")

    open_tab(page, "Arithmetic")
    page.wait_for_selector("#ar-flops .js-plotly-plot", timeout=60_000)
    assert "counted from the weights" in page.locator("#ar-params").inner_text()
    page.locator("#ar-measure").click()
    wait_text(page, "#ar-measured", "MFU", 60_000)
    shot(page, "arithmetic")

    open_tab(page, "Train BPE")
    wait_text(page, "#bpe-replay", "capital", 60_000)
    page.locator("#bpe-train").click()
    page.wait_for_selector("#bpe-compression .js-plotly-plot", timeout=60_000)
    assert "merges" in page.locator("#bpe-summary").inner_text()
    shot(page, "bpe")
    assert_only_local_requests(page)


def test_browser_decoding_strategies(page, server):
    """The Decoding tab draws the beam tree on opening, then each strategy runs once, and Stop stops a sweep."""
    open_app(page, server)
    open_tab(page, "Decoding")
    page.wait_for_selector("#dec-tree .js-plotly-plot", timeout=60_000)
    assert "Beam search" in page.locator("#dec-summary").inner_text()
    assert page.locator("#dec-side tbody tr").count() == 3  # greedy, beam, sampled
    set_number(page, "dec-width", "2")
    page.locator("#dec-go").click()
    wait_text(page, "#dec-side", "width 2", 60_000)

    page.locator("button.label-wrap", has_text="Speculative decoding").click()
    set_number(page, "dec-new", "3")  # six draft depths, each decoding this many tokens
    page.locator("#dec-spec").click()
    wait_text(page, "#dec-spec-note", "Measured 1 of", 60_000)
    page.locator("#dec-spec-stop").click()
    wait_text(page, "#dec-spec-note", "Stopped by you")
    page.locator("#dec-spec").click()
    wait_text(page, "#dec-spec-note", "Done.", 120_000)
    assert "the same tokens as greedy decoding" in page.locator("#dec-spec-note").inner_text()
    assert page.locator("#dec-spec-rounds li").count() >= 1

    run_section(page, "DoLa and contrastive search", "dec-contrast", "dec-contrast-plot")
    assert page.locator("#dec-contrast-side tbody tr").count() == 3

    run_section(page, "The KV cache", "dec-kv", "dec-kv-timing", {"dec-kv-n": "8"})
    assert "bytes per token" in page.locator("#dec-kv-note").inner_text()
    shot(page, "decoding")
    assert_only_local_requests(page)


# -- presenter mode: one screen per view, legible, keys, slides -------------------------------------------

SMALL_TEXT = """() => {
  const vh = window.innerHeight, out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let n;
  while ((n = walker.nextNode())) {
    if (!n.textContent.trim()) continue;
    const el = n.parentElement;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || r.bottom < 0 || r.top > vh) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden' || cs.opacity === '0') continue;
    const size = parseFloat(cs.fontSize);
    if (size < 18) out.push(size + 'px ' + el.tagName + ' "' + n.textContent.trim().slice(0, 30) + '"');
  }
  return out;
}"""


def main_figure_ready(page, figure: str) -> None:
    page.wait_for_selector(f"#{figure} .js-plotly-plot, #{figure} img, #{figure} .tok, #{figure} p", timeout=90_000)


SETTLED = """([id, height]) => {  // the figure fits under the bars, and has not moved for 400 ms
    const f = document.getElementById(id).getBoundingClientRect(),
      bar = document.querySelector('.tabs > .tab-wrapper').getBoundingClientRect().bottom,
      where = [f.top, f.bottom, bar].join(), seen = (window.__settled = window.__settled || {});
    if (!seen[id] || seen[id].where !== where) seen[id] = {where, since: performance.now()};
    return f.height > 50 && f.top >= bar - 1 && f.bottom <= height + 1 && performance.now() - seen[id].since >= 400;
}"""


def test_browser_presenter_every_main_figure_fits_one_screen_in_large_text(browser, server):
    """On a projector (1280x720 and 1920x1080) each tab's main figure is whole on screen with no scrolling by the
    speaker, under the prompt line and the tab bar, and no text in view (page or figure) is under 18 px. The two
    screens are two pages driven side by side: one draws while the other is checked."""
    from playground.registry import TABS

    sizes = [(1280, 720), (1920, 1080)]
    contexts = [browser.new_context(viewport={"width": w, "height": h}) for w, h in sizes]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            page.goto(f"{server}?large=1")
        for page in pages:
            page.wait_for_selector("#token-spans .tok", timeout=60_000)
            page.wait_for_function("document.body.classList.contains('presenter')", timeout=30_000)  # large=1
        for tab in TABS:
            for page in pages:
                open_tab(page, tab.label)
            for page, (width, height) in zip(pages, sizes):
                main_figure_ready(page, tab.figure)
                try:  # drawn, scrolled under the bars (a figure that grows later too: the page's ResizeObserver)
                    page.wait_for_function(SETTLED, arg=[tab.figure, height], polling=100, timeout=8_000)
                except Exception:
                    pass  # the assertions below say what is wrong
                box = page.locator(f"#{tab.figure}").bounding_box()
                bar = page.evaluate(
                    "() => document.querySelector('.tabs > .tab-wrapper').getBoundingClientRect().bottom")
                assert box["height"] > 50, (tab.id, width)
                assert box["y"] >= bar - 1 and box["y"] + box["height"] <= height + 1, (tab.id, width, box, bar)
                assert page.evaluate(SMALL_TEXT) == [], (tab.id, width)
                if width == 1280:
                    shot(page, f"presenter-{tab.id}")
    finally:
        for context in contexts:
            context.close()


def left_steps_back(page, figure: str, slider: str) -> None:
    """Once the tab has drawn, ← moves the slider one step down."""
    page.wait_for_selector(f"#{figure} .js-plotly-plot", timeout=60_000)
    before = slider_value(page, slider)
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"document.querySelector('#{slider} input[type=number]').value == '{before - 1}'",
                           timeout=30_000)


def test_browser_presenter_keys_step_the_view(page, server):
    page.goto(f"{server}?tab=attention&large=1")
    page.wait_for_selector("#attn-heatmap .js-plotly-plot", timeout=60_000)
    title = lambda: page.locator("#attn-heatmap .gtitle").first.text_content()  # noqa: E731
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('#attn-heatmap .gtitle').textContent.includes('head 1 ')",
                           timeout=30_000)
    page.keyboard.press("ArrowUp")
    page.wait_for_function("document.querySelector('#attn-heatmap .gtitle').textContent.includes('layer 1,')",
                           timeout=30_000)
    page.keyboard.press("PageUp")  # a clicker's "back"
    page.wait_for_function("document.querySelector('#attn-heatmap .gtitle').textContent.includes('head 0 ')",
                           timeout=30_000)
    page.locator("#prompt textarea").focus()  # typing: the arrows move the caret, not the view
    page.keyboard.press("ArrowRight")
    page.locator("#attn-heatmap").click(position={"x": 5, "y": 5})
    page.keyboard.press("ArrowUp")  # the page's keys again: the view follows this key, drawn after the one typed
    page.wait_for_function("document.querySelector('#attn-heatmap .gtitle').textContent.includes('layer 2,')",
                           timeout=30_000)
    assert "head 0 " in title() and slider_value(page, "attn-head") == 0
    page.keyboard.press("?")
    assert "next head" in page.locator("#key-help").inner_text()
    page.keyboard.press("Escape")
    assert page.locator("#key-help").count() == 0

    page.keyboard.press("]")  # the next tab: RoPE
    left_steps_back(page, "rope-pairs", "rope-query")
    open_tab(page, "Logit lens")
    left_steps_back(page, "lens-grid", "lens-position")

    open_tab(page, "Sampler")
    page.wait_for_selector("#samp-bars .js-plotly-plot", timeout=60_000)
    page.keyboard.press("ArrowRight")  # sample the next token
    page.wait_for_selector("#samp-text .gtok", timeout=30_000)
    page.keyboard.press("ArrowLeft")  # and take it back
    page.wait_for_function("document.querySelectorAll('#samp-text .gtok').length === 0", timeout=30_000)

    page.keyboard.press("p")  # presenter mode off
    page.wait_for_function("!document.body.classList.contains('presenter')", timeout=10_000)
    assert not page.locator("#large input").is_checked()


def test_browser_presenter_slide_downloads_are_16_by_9(page, server, tmp_path):
    import struct

    page.goto(f"{server}?tab=lens&large=1")
    page.wait_for_selector("#lens-grid .js-plotly-plot", timeout=60_000)
    with page.expect_download(timeout=60_000) as png:
        page.keyboard.press("s")
    path = tmp_path / "slide.png"
    png.value.save_as(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1920, 1080)
    assert png.value.suggested_filename == "playground-lens.png"
    with page.expect_download(timeout=60_000) as svg:
        page.locator("#slide-svg").click()
    path = tmp_path / "slide.svg"
    svg.value.save_as(path)
    text = path.read_text()
    assert text.startswith("<svg") and 'width="1920"' in text and "Logit lens" in text


def test_browser_prepared_link_restores_layer_head_position_settings_and_continuation(page, server):
    page.goto(f"{server}?tab=attention&large=1&layer=3&head=5")
    page.wait_for_function("(document.querySelector('#attn-heatmap .gtitle') || {}).textContent"
                           "?.includes('layer 3, head 5')", timeout=60_000)
    page.wait_for_function("document.querySelector('#share-link a').getAttribute('href').includes('layer=3&head=5')",
                           timeout=10_000)

    page.goto(f"{server}?tab=lens&pos=4")
    page.wait_for_function("document.querySelector('#lens-position input[type=number]')?.value === '4'",
                           timeout=60_000)

    page.goto(f"{server}?tab=sampler&order=llama.cpp&temperature=0.7&top_p=0.9&seed=3&gen=12,873,1542")
    page.wait_for_function("document.querySelectorAll('#samp-text .gtok').length === 3", timeout=60_000)
    ids = page.eval_on_selector_all("#samp-text .gtok", "ts => ts.map(t => t.dataset.id)")
    assert ids == ["12", "873", "1542"]
    assert page.locator("#samp-temp input[type=number]").input_value() == "0.7"
    assert page.locator("#samp-order input:checked").get_attribute("value") == "llama.cpp"
    assert page.locator("#samp-seed input").input_value() == "3"
    page.wait_for_function("document.querySelector('#share-link a').getAttribute('href')"
                           ".includes('gen=12%2C873%2C1542')", timeout=10_000)
    href = page.locator("#share-link a").get_attribute("href")
    for part in ("tab=sampler", "order=llama.cpp", "temperature=0.7", "top_p=0.9", "seed=3"):
        assert part in href
    # the link's continuation is shown with each token's probability under these settings: the chain's numbers
    titles = page.eval_on_selector_all("#samp-text .gtok", "ts => ts.map(t => t.title)")
    assert all(t.startswith(f"step {i + 1}: p = ") for i, t in enumerate(titles))


POINT = """([figure, trace, index]) => {
  document.getElementById(figure).scrollIntoView({block: 'center'});
  const gd = document.querySelector('#' + figure + ' .js-plotly-plot');
  const t = gd.data.find((d) => d.name === trace), L = gd._fullLayout, box = gd.getBoundingClientRect();
  return [box.left + L._size.l + L.xaxis.d2p(t.x[index]), box.top + L._size.t + L.yaxis.d2p(t.y[index]),
          t.customdata[index]];
}"""


def click_point(page, figure: str, trace: str, index: int) -> str:
    """Hover a Plotly point, then click it, as a visitor would: its customdata."""
    x, y, data = page.evaluate(POINT, [figure, trace, index])
    page.mouse.move(x, y)
    page.wait_for_timeout(300)
    page.mouse.click(x, y)
    return data


def test_browser_routes_click_an_edge_and_a_node_then_open_the_head(page, server):
    page.goto(f"{server}?prompt=The%20capital%20of%20France%20is%20Paris.%20The%20capital%20of%20Germany%20is"
              "&tab=routes")
    page.wait_for_selector("#routes-graph .js-plotly-plot", timeout=90_000)
    assert "edges" in page.locator("#routes-note").inner_text()
    page.wait_for_selector("#routes-why .js-plotly-plot", timeout=30_000)
    edge = json.loads(click_point(page, "routes-graph", "attention", 0))["attn"]
    wait_text(page, "#routes-details", f"Attention in L{edge[0]}")
    assert "promotes" in page.locator("#routes-details").inner_text()
    page.wait_for_function(f"document.querySelector('#routes-query input[type=number]').value == '{edge[2]}' && "
                           f"document.querySelector('#routes-key input[type=number]').value == '{edge[1]}'",
                           timeout=30_000)
    # the split of the clicked edge's strongest head replaces the one shown before (it follows the sliders)
    wait_text(page, "#routes-why-note", f"(query {edge[2]}) to")
    wait_text(page, "#routes-why-note", f"(key {edge[1]})")
    assert "attends from" in page.locator("#routes-why-note").inner_text()
    node = json.loads(click_point(page, "routes-graph", "residual state", 0))["node"]
    wait_text(page, "#routes-details", "read through the final norm and the unembedding")
    shot(page, "routes")
    layer, head = slider_value(page, "routes-layer"), slider_value(page, "routes-head")
    page.locator("#routes-open-head").click()
    page.wait_for_function("document.querySelector('[role=tab][aria-selected=true]').dataset.tabId === 'attention'",
                           timeout=30_000)
    page.wait_for_function(f"document.querySelector('#attn-layer input[type=number]').value == '{layer}' && "
                           f"document.querySelector('#attn-head input[type=number]').value == '{head}'",
                           timeout=30_000)
    assert node[0] >= 0
    assert_only_local_requests(page)


def step_text(page) -> str:
    return page.locator("#tour-progress").inner_text()


def test_browser_the_tour_walks_ten_steps_in_presenter_mode_at_720p(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    try:
        page.goto(f"{server}?tab=tour&large=1&prompt=The%20capital%20of%20France%20is%20Paris.%20The%20capital%20of"
                  "%20Germany%20is")
        page.wait_for_selector("#tour-progress", timeout=90_000)
        for step in range(1, 11):
            wait_text(page, "#tour-progress", f"Step {step} of 10", 90_000)
            page.wait_for_selector("#tour-figure .js-plotly-plot .main-svg", timeout=90_000)
            try:  # drawn, then scrolled under the bars (later on a loaded machine: wait for it, then assert)
                page.wait_for_function("""() => { const f = document.getElementById('tour-figure')
                    .getBoundingClientRect(); return f.height > 50 && f.top < 720 - 50; }""", timeout=10_000)
                page.wait_for_timeout(300)
            except Exception:
                pass  # the assertions below say what is wrong
            box = page.locator("#tour-figure").bounding_box()
            assert box["height"] > 50 and box["y"] < 720 - 50, (step, box)  # a figure on the first screen
            words = page.locator("#tour-caption").bounding_box()  # and its caption beside it
            assert words["y"] >= 0 and words["y"] + 40 < 720, (step, words)
            assert "⚠️" not in page.locator("#tour-caption").inner_text(), step
            if step in (1, 4, 8):
                shot(page, f"tour-step-{step}")
            if step < 10:
                page.keyboard.press("ArrowRight")
        assert "Germany" in page.locator("#tour-caption").inner_text() or "“" in page.locator(
            "#tour-caption").inner_text()
        page.keyboard.press("ArrowLeft")
        wait_text(page, "#tour-progress", "Step 9 of 10", 60_000)
    finally:
        context.close()


def test_browser_a_deck_steps_with_the_clicker_and_exports(page, server):
    page.goto(f"{server}?deck=next-word")
    page.wait_for_selector("#tour-progress", timeout=90_000)
    wait_text(page, "#tour-progress", "Step 1 of 10", 90_000)
    assert "How a transformer predicts the next word" in step_text(page)
    assert page.get_by_role("tab", name="Tour").get_attribute("aria-selected") == "true"
    page.wait_for_selector("#tour-figure .js-plotly-plot", timeout=60_000)
    page.locator("#tour-figure").click(position={"x": 5, "y": 5})  # keys go to the page, not a text box
    page.keyboard.press("PageDown")
    wait_text(page, "#tour-progress", "Step 2 of 10", 60_000)
    page.keyboard.press("PageDown")
    wait_text(page, "#tour-progress", "Step 3 of 10", 60_000)
    page.keyboard.press("PageUp")
    wait_text(page, "#tour-progress", "Step 2 of 10", 60_000)
    page.get_by_text("Speaker notes").click()
    page.wait_for_selector("#tour-notes", timeout=30_000)  # the accordion's content appears once opened
    wait_text(page, "#tour-notes", "embedding is a lookup table")
    page.locator("#tour-open").click()  # the live view of this step: the Embeddings tab
    page.wait_for_function("document.querySelector('[role=tab][aria-selected=true]').dataset.tabId === "
                           "'embeddings'", timeout=30_000)
    open_tab(page, "Tour")
    page.locator("#tour-export").click()
    wait_text(page, "#tour-export-note", "Exported 10 slides", 180_000)
    page.wait_for_selector("#tour-file a[href]", timeout=30_000)
    assert_only_local_requests(page)


def test_browser_an_exported_deck_steps_offline_with_no_request_leaving(browser, runner, tmp_path):
    from playground import walk

    trace = runner.analyze("The capital of France is Paris. The capital of Germany is", lens=False)
    path, note = walk.export(runner, {}, trace, walk.Walk(), walk.THE_TOUR, False)
    path = Path(path)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, offline=True)
    page = context.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(path.as_uri())
        for step in range(1, 11):
            shown = page.locator(f"#slide-{step}")
            assert "shown" in shown.get_attribute("class")
            page.wait_for_function(f"document.querySelector('#slide-{step} .js-plotly-plot .main-svg') !== null && "
                                   f"document.querySelector('#slide-{step} .js-plotly-plot').getBoundingClientRect()"
                                   ".width > 300", timeout=10_000)
            assert page.locator(f"#slide-{step} .caption").inner_text().strip()
            page.keyboard.press("ArrowRight")
        page.keyboard.press("n")
        assert page.locator("#slide-10 .notes").is_visible()
        shot(page, "deck-export")
    finally:
        context.close()
    assert all(u.startswith("file://") or u.startswith("data:") for u in requests), requests[:5]
