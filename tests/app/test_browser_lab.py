"""The Lab in Chromium: a prepared link opens an experiment in its state and the page's own link carries it back; in
presenter mode at 1280 x 720 a mask runs, the sweep streams, and every figure fits the projector. Screenshots go to
artifacts/screenshots/ (and assets/lab.png, the README's)."""

from __future__ import annotations

import re

from .test_browser import SHOTS, shot

PROMPT = ("The%20Eiffel%20Tower%20is%20in%20Paris.%20The%20Colosseum%20is%20in%20Rome.%20The%20Brandenburg%20Gate%20"
          "is%20in%20Berlin.%20Big%20Ben%20is%20in")


def wait_text(page, selector: str, text: str, timeout: int = 30_000) -> None:
    """Wait until the element exists and its visible text contains `text` (the Lab's parts appear once it opens)."""
    page.wait_for_function(f"(document.querySelector({selector!r}) || {{}}).innerText?.includes({text!r})",
                           timeout=timeout)


def _presenter(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    return context, context.new_page()


def _fits(page, elem_id: str, width: int = 1280) -> None:
    box = page.locator(f"#{elem_id} .js-plotly-plot").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, (elem_id, box)
    assert box["width"] > 0.8 * width, (elem_id, box)  # drawn at the column's width, not Plotly's default 700 px


def test_browser_a_prepared_link_opens_flash_attention_at_its_tile(browser, server):
    context, page = _presenter(browser)
    try:
        page.goto(f"{server}?tab=lab&large=1&prompt={PROMPT}&experiment=flash&layer=3&head=4&bq=4&bk=4&step=9")
        wait_text(page, "#lab-flash-note", "Layer 3 head 4", timeout=90_000)
        wait_text(page, "#lab-flash-note", "Step 9:", timeout=30_000)
        note = page.locator("#lab-flash-note").inner_text()
        assert "tiles of 4 queries × 4 keys" in note
        error = float(re.search(r"model's own attention \(pattern × V from the forward\) to (\d\.\de[+-]\d+)", note)[1])
        assert error < 1e-5
        _fits(page, "lab-flash")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.wait_for_function("document.querySelector('#share-link a').getAttribute('href')"
                               ".includes('step=9')", timeout=15_000)  # the link follows the page every 0.7 s
        href = page.locator("#share-link a").get_attribute("href")
        for part in ("tab=lab", "layer=3", "head=4", "bq=4", "bk=4", "step=9"):
            assert part in href, (part, href)
        page.locator("#lab-flash").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "lab-flash-presenter.png"))

        page.locator("#lab-experiment input[value=scaling]").click()
        wait_text(page, "#lab-scaling-note", "This model", timeout=30_000)
        page.wait_for_timeout(1500)
        for figure in ("lab-kaplan", "lab-kaplan-d", "lab-isoflop"):
            _fits(page, figure)  # drawn while hidden, refitted when shown
        assert "134,515,008 parameters" in page.locator("#lab-scaling-note").inner_text()
    finally:
        context.close()


def test_browser_masks_run_and_the_sweep_streams_in_presenter_mode(browser, server):
    context, page = _presenter(browser)
    try:
        page.goto(f"{server}?tab=lab&large=1&prompt={PROMPT}&pattern=window&window=8")
        wait_text(page, "#lab-pattern-note", "window 8", timeout=90_000)
        _fits(page, "lab-mask")
        page.locator("#lab-run").click()
        wait_text(page, "#lab-result-note", "nats", timeout=60_000)
        assert "**" not in page.locator("#lab-result-note").inner_text()  # Markdown drawn, not shown raw
        _fits(page, "lab-result")
        page.locator("#lab-sweep").click()
        wait_text(page, "#lab-sweep-note", "done", timeout=120_000)
        note = page.locator("#lab-sweep-note").inner_text()
        without, with_sinks = map(float, re.search(r"W=8: ([\d.]+) vs ([\d.]+)", note).groups())
        assert without > with_sinks  # on this prompt, as the deck says
        _fits(page, "lab-sweep-plot")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.locator("#lab-sweep-plot").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "lab-sweep-presenter.png"))
        shot(page, "lab-presenter-full")
        page.locator("#lab-window input[type=number]").fill("500")  # bad input in the page: past the prompt
        page.locator("#lab-window input[type=number]").press("Enter")
        wait_text(page, "#lab-pattern-note", "A window of 500 is past the", timeout=30_000)  # cut to it, said
    finally:
        context.close()
