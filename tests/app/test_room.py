"""A room over HTTP, as the speaker's and followers' pages and a script use it: who may change it, what followers
are sent, the guesses and their numbers (against transformers on the same weights), the limits, and faults.

The mechanics run on the tiny model's app; the numbers on the default model's (the session's `server`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from playground import room as room_module
from playground.room import Rooms, checked_view, safe_html

from ..conftest import serve
from ..helpers import random_model, tiny_config

XSS = "<img/src=x/onerror=alert(1)>"


@pytest.fixture(scope="module")
def tiny_app(tiny_enc):
    from app import create_app
    from playground.runner import ModelRunner

    runner = ModelRunner(random_model(tiny_config(), seed=5), tiny_enc, background_lens=False)
    app = create_app(runner, "tiny: a random model")
    for url in serve(app, runner):
        yield url, app, runner


@pytest.fixture
def http(tiny_app):
    with httpx.Client(base_url=tiny_app[0], timeout=30) as client:
        yield client


def open_room(http) -> dict:
    r = http.post("room/new")
    assert r.status_code == 200, r.text
    return r.json()


def view(tab="attention", **values) -> dict:
    return {"tab": tab, "label": tab.title(), "prompt": "the cat sat", "values": values, "slide": "",
            "parts": [{"html": "<p class='x'>a view</p><div data-plot='0'></div>"},
                      {"plot": {"data": [{"type": "bar", "x": [1, 2], "y": [3, 4]}], "layout": {"height": 300}}}]}


def test_only_the_speakers_key_changes_the_room(http):
    room = open_room(http)
    code, key = room["code"], room["key"]
    follower = http.post(f"room/{code}/join").json()["follower"]
    for action, body in [("view", {"view": view()}), ("question", {"prompt": "the cat"}), ("close", {}),
                         ("reveal", {}), ("end", {})]:
        for headers in ({}, {"x-room-key": "not-the-key"}, {"x-room-key": follower}):
            r = http.post(f"room/{code}/{action}", json=body, headers=headers)
            assert r.status_code == 403, (action, r.text)
            assert "Only the speaker" in r.json()["error"]
    assert http.get(f"room/{code}").json()["view"] is None  # nothing changed
    r = http.post(f"room/{code}/view", json={"view": view(layer=3, head=5)}, headers={"x-room-key": key})
    assert r.status_code == 200
    state = http.get(f"room/{code}", params={"since": -1}).json()
    assert state["view"]["values"] == {"layer": "3", "head": "5"} and state["view"]["tab"] == "attention"
    assert state["view"]["parts"][1]["plot"]["data"][0]["y"] == [3, 4]
    assert key not in json.dumps(state) and key not in room["follow_url"]  # the follow link never holds the key
    assert room["speaker_url"].endswith("#key=" + key)  # the speaker's link carries it in the fragment only


def test_a_long_poll_answers_at_the_change_not_at_its_timeout(http, tiny_app):
    room = open_room(http)
    code, key = room["code"], room["key"]
    version = http.get(f"room/{code}").json()["version"]
    answered = {}

    def poll():
        start = time.monotonic()
        with httpx.Client(base_url=tiny_app[0], timeout=30) as c:
            answered["state"] = c.get(f"room/{code}", params={"since": version, "hold": 15}).json()
        answered["after"] = time.monotonic() - start

    waiting = threading.Thread(target=poll)
    waiting.start()
    app = tiny_app[1]
    for _ in range(200):  # until the poll is waiting on the room
        if len(app.rooms.get(code).changes):
            break
        time.sleep(0.02)
    assert len(app.rooms.get(code).changes) == 1
    http.post(f"room/{code}/view", json={"view": view(head=2)}, headers={"x-room-key": key})
    waiting.join(20)
    assert answered["state"]["version"] == version + 1 and answered["state"]["view"]["values"] == {"head": "2"}
    assert answered["after"] < 10  # woken by the change, not by the 15 s hold


def test_an_unknown_room_says_so_and_the_app_runs(http, tiny_app):
    from app import analyze_on_load

    r = http.get("room/ZZZZ9")
    assert r.status_code == 404 and "no room 'ZZZZ9'" in r.json()["error"]
    _, app, runner = tiny_app

    class Request:
        query_params = {"room": "ZZZZ9"}

    trace, status = analyze_on_load(runner, app.rooms, "the cat sat", False, Request())
    assert trace is not None and "no room 'ZZZZ9'" in status and "Analyzed" in status
    code = open_room(http)["code"]
    Request.query_params = {"room": code.lower()}  # any case
    assert analyze_on_load(runner, app.rooms, "the cat sat", False, Request()) == (None, "")  # a follower: no run


def test_guesses_bad_input_is_refused_with_a_message(http):
    room = open_room(http)
    code, key = room["code"], room["key"]
    follower = http.post(f"room/{code}/join").json()["follower"]
    r = http.post(f"room/{code}/guess", json={"follower": follower, "text": "cat"})
    assert r.status_code == 409 and "No question is open" in r.json()["error"]
    assert http.post(f"room/{code}/question", json={"prompt": "the cat sat on the"},
                     headers={"x-room-key": key}).status_code == 200
    cases = {"": "empty", "   ": "empty", "x" * 10_000: "at most 32", "a\x00b": "control", "the mat": "One word",
             "\x04": "control", "é\u200bx": "control", 42: "is text", None: "is text"}
    for text, says in cases.items():
        r = http.post(f"room/{code}/guess", json={"follower": follower, "text": text})
        assert r.status_code == 400 and says in r.json()["error"], (text, r.text)
    assert http.post(f"room/{code}/guess", json={"follower": "someone", "text": "mat"}).status_code == 403
    assert http.post(f"room/{code}/guess", content=b"not json").status_code == 400
    assert http.post(f"room/{code}/guess", content=b'{"follower": NaN}').status_code == 403
    r = http.post(f"room/{code}/guess", json={"follower": follower, "text": XSS})  # one word of markup: kept as text
    assert r.status_code == 200 and r.json()["text"] == XSS
    r = http.post(f"room/{code}/guess", json={"follower": follower, "text": "mat"})
    assert r.status_code == 429 and "One guess a second" in r.json()["error"]
    tallies = http.get(f"room/{code}/question", params={"figure": 1}).json()
    assert [t["text"] for t in tallies["tallies"]] == [XSS]
    labels = tallies["figure"]["data"][0]["y"]
    assert labels == ["&lt;img/src=x/onerror=alert(1)&gt;"]  # Plotly shows the entities as the characters
    assert "<img" not in json.dumps(tallies["figure"])
    assert http.get("/").status_code == 200  # and the server goes on


def test_unencodable_guess_is_refused(http):
    room = open_room(http)
    code, key = room["code"], room["key"]
    follower = http.post(f"room/{code}/join").json()["follower"]
    http.post(f"room/{code}/question", json={"prompt": "the cat"}, headers={"x-room-key": key})
    r = http.post(f"room/{code}/guess", json={"follower": follower, "text": "\x04"})
    assert r.status_code == 400  # a control character, refused before the tokenizer
    unencodable = room_module.checked_guess
    with pytest.raises(room_module.RoomError, match="no bytes for U\\+0004"):
        unencodable("ab", lambda word: [(1, "\x04")])


def test_bad_views_and_questions_are_refused(http):
    room = open_room(http)
    code, key = room["code"], room["key"]
    speaker = {"x-room-key": key}
    for body, says in [({"view": "x"}, "JSON object"), ({"view": {"values": [1]}}, "values"),
                       ({"view": {"parts": [{"x": 1}]}}, "Each part"), ({"view": {"parts": [{}] * 13}}, "at most 12")]:
        r = http.post(f"room/{code}/view", json=body, headers=speaker)
        assert r.status_code == 400 and says in r.json()["error"], body
    r = http.post(f"room/{code}/view", content=b"{" + b" " * (room_module.MAX_VIEW_BYTES + 10_000) + b"}",
                  headers=speaker)
    assert r.status_code == 413 and "MB" in r.json()["error"]
    for body, says in [({"prompt": ""}, "Type a prompt"), ({"prompt": "the cat", "position": 99}, "between 0 and"),
                       ({"prompt": "the cat", "position": -5}, "between 0 and")]:
        r = http.post(f"room/{code}/question", json=body, headers=speaker)
        assert r.status_code == 400 and says in r.json()["error"], body
    for action in ("close", "reveal"):
        r = http.post(f"room/{code}/{action}", json={}, headers=speaker)
        assert r.status_code == 409 and "No question" in r.json()["error"]
    assert http.get(f"room/{code}/nothing").status_code == 404
    assert http.get("room/new").status_code == 405


def test_views_are_sanitized_for_followers():
    probes = ['<img src=x onerror="alert(1)">', "<script>alert(1)</script>", '<a href="javascript:alert(1)">x</a>',
              '<div onclick="alert(1)" style="background:url(http://evil/x)">y</div>', "<iframe src=//evil></iframe>",
              '<svg onload=alert(1)><circle/></svg>', "<style>body{display:none}</style>", '<input value=x>',
              '<span style="x:expression(alert(1))">z</span>']
    for probe in probes:
        out = safe_html(probe)
        for bad in ("<img", "<script", "javascript:", "onerror", "onclick", "url(", "<iframe", "<svg", "onload",
                    "<style", "<input", "expression", "alert(1)</"):
            assert bad not in out.lower(), (probe, out)
    kept = safe_html('<span class="tok" style="background:#abc" title="id 7">the</span>&lt;b&gt;')
    assert kept == '<span class="tok" style="background:#abc" title="id 7">the</span>&lt;b&gt;'
    assert checked_view({"parts": [{"html": probes[0]}]})["parts"][0]["html"] == ""


def test_limits_followers_rooms_and_idle_rooms(monkeypatch, tiny_runner):
    now = [0.0]
    rooms = Rooms(tiny_runner, clock=lambda: now[0])
    monkeypatch.setattr(room_module, "MAX_ROOMS", 2)
    monkeypatch.setattr(room_module, "MAX_FOLLOWERS", 3)
    a = rooms.create()
    rooms.create()
    with pytest.raises(room_module.RoomError, match="has 2 rooms open"):
        rooms.create()
    for _ in range(3):
        a.join()
    with pytest.raises(room_module.RoomError, match="This room is full \\(3 followers\\)"):
        a.join()
    now[0] += room_module.FOLLOWER_GONE_S + 1  # followers not heard from are no longer counted
    assert a.n_followers() == 0
    a.join()
    now[0] += room_module.ROOM_IDLE_S + 1  # rooms unused for an hour close
    with pytest.raises(room_module.RoomError, match="no room"):
        rooms.get(a.code)
    assert rooms.rooms == {} and rooms.create()


def test_the_follow_link_reaches_the_audience(monkeypatch, tiny_runner):
    rooms = Rooms(tiny_runner)
    monkeypatch.delenv("SPACE_HOST", raising=False)
    url, note = rooms.base_url("http://127.0.0.1:7860")
    assert url == "http://127.0.0.1:7860/" and "--host 0.0.0.0" in note  # said: phones cannot reach it
    rooms.configure(host="0.0.0.0", port=7861)
    monkeypatch.setattr(room_module, "lan_address", lambda: "192.168.1.20")
    assert rooms.base_url("http://127.0.0.1:7861") == ("http://192.168.1.20:7861/", "")
    monkeypatch.setenv("SPACE_HOST", "someone-playground.hf.space")
    assert rooms.base_url("http://10.0.0.1:7860") == ("https://someone-playground.hf.space/", "")
    rooms.configure(public_url="https://talk.example.org/play")
    assert rooms.base_url()[0] == "https://talk.example.org/play/"
    room = rooms.create()
    assert room.follow_url == f"https://talk.example.org/play/?room={room.code}"
    import segno

    qr = segno.make(room.follow_url, error="m")  # the SVG drawn is segno's code of exactly the follow link
    assert room_module.qr_svg(room.follow_url) == qr.svg_inline(scale=1, border=2, dark="#000", light="#fff",
                                                                 omitsize=True)


def test_followers_dropping_at_once_leave_nothing_behind(tiny_app):
    """300 long polls waiting, then all gone at once: no waiter is left, and the server's memory comes back."""
    url, app, _ = tiny_app
    room = app.rooms.create()

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    async def crowd(n: int) -> None:
        host, port = url.split("//")[1].rstrip("/").split(":")
        conns = []
        for _ in range(n):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET /room/{room.code}?since={room.version}&hold=20 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            conns.append(writer)
        await asyncio.gather(*(w.drain() for w in conns))
        for _ in range(400):
            if len(room.changes) == n:
                break
            await asyncio.sleep(0.05)
        assert len(room.changes) == n
        for w in conns:  # all drop at once
            w.close()

    before = rss_mb()
    for _ in range(2):
        # its own thread: a browser test's Playwright may hold this thread's event loop open
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, crowd(300)).result()
        deadline = time.monotonic() + 10
        while len(room.changes) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(room.changes) == 0  # each waiter went with its connection, not at the 20 s hold
    assert rss_mb() - before < 20


# -- the numbers, on the default model against transformers ------------------------------------------------------

def test_guess_probabilities_and_the_reveal_against_transformers(server, hf_model, runner):
    prompt = "The capital of France is Paris. The capital of Germany is"
    with httpx.Client(base_url=server, timeout=60) as http:
        room = open_room(http)
        code, speaker = room["code"], {"x-room-key": room["key"]}
        q = http.post(f"room/{code}/question", json={"prompt": prompt}, headers=speaker).json()
        assert q["state"] == "open" and q["lead"] == " "
        guesses = ["Berlin", "Berlin", "berlin", "Munich", "Paris", XSS]
        followers = [http.post(f"room/{code}/join").json()["follower"] for _ in guesses]
        for follower, text in zip(followers, guesses):
            assert http.post(f"room/{code}/guess", json={"follower": follower, "text": text}).status_code == 200
        tallies = http.get(f"room/{code}/question", params={"figure": 1}).json()
        assert http.post(f"room/{code}/reveal", headers=speaker).status_code == 200
        results = http.get(f"room/{code}").json()["question"]["results"]
        notes = http.get(f"room/{code}/notes.md").text

    ids = runner.tokenize(prompt, False)[0]
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids])).logits[0, -1].double()
    p = torch.softmax(logits, -1).numpy()
    first = {text: runner.tokens(" " + text)[0] for text in set(guesses)}  # the first token after a word
    by_token = {}
    for text in guesses:
        by_token.setdefault(first[text], []).append(text)
    assert {t["token"]: t["count"] for t in tallies["tallies"]} == {t: len(v) for t, v in by_token.items()}
    for t in tallies["tallies"]:
        assert t["p"] == pytest.approx(p[t["token"]], abs=2e-4, rel=2e-3)
    # the bars drawn: the room's shares and the model's p, most guessed on top
    room_bars, model_bars = tallies["figure"]["data"]
    assert room_bars["x"][-1] == pytest.approx(2 / 6) and model_bars["x"][-1] == pytest.approx(p[first["Berlin"]],
                                                                                                   abs=2e-4)
    top = np.argsort(-p)[:10]
    assert [row["token"] for row in results["top"]] == [int(t) for t in top]
    assert results["guessed_top1"] == sum(first[g] == top[0] for g in guesses)
    assert results["favourite"]["text"] == "Berlin" and results["favourite"]["count"] == 2
    room_share = np.zeros_like(p)
    for g in guesses:
        room_share[first[g]] += 1 / len(guesses)
    assert results["overlap"] == pytest.approx(1 - 0.5 * np.abs(room_share - p).sum(), abs=1e-3)  # 1 - TV
    assert f"Room {code}" in notes and "guessed the model's top-1" in notes and "`·Berlin`" in notes


# -- in Chromium -----------------------------------------------------------------------------------------------------

PWNED = "<img/src=x/onerror=window.__pwned=1>"


def follower_page(browser, url: str, width: int = 1280):
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url)
    return page


def wait_text(page, selector: str, text: str, timeout: int = 30_000) -> None:
    try:
        page.wait_for_function("([s, t]) => { const e = document.querySelector(s); "
                               "return e && e.innerText.includes(t); }", arg=[selector, text], timeout=timeout)
    except Exception:
        shown = page.evaluate("(s) => { const e = document.querySelector(s); return e && e.innerText; }", selector)
        raise AssertionError(f"{selector} never said {text!r}; it says {shown!r}") from None


def test_browser_followers_cost_no_model_run(browser, tiny_app, monkeypatch):
    """Three followers (one on a phone) open the room and follow two of the speaker's views: the model never runs
    for them. The check waits until each page's load has reached the step where a page analyses its prompt (and a
    follower's does not); the same counter sees an ordinary visitor's page run it."""
    from playground import server

    url, app, runner = tiny_app
    runs, loads = [], []
    acquire = runner.gate.acquire
    monkeypatch.setattr(runner.gate, "acquire", lambda *a, **k: runs.append(1) or acquire(*a, **k))
    on_load = server.analyze_on_load
    monkeypatch.setattr(server, "analyze_on_load", lambda *a, **k: loads.append(on_load(*a, **k)) or loads[-1])
    with httpx.Client(base_url=url, timeout=30) as http:
        room = open_room(http)
        code, speaker = room["code"], {"x-room-key": room["key"]}
        http.post(f"room/{code}/view", json={"view": view(layer=1)}, headers=speaker)
        pages = [follower_page(browser, f"{url}?room={code}", width) for width in (1280, 1280, 390)]
        for page in pages:
            wait_text(page, "#room-where", "layer 1")
            page.wait_for_selector("#room-view .room-plot .main-svg", timeout=30_000)
        http.post(f"room/{code}/view", json={"view": view(layer=2)}, headers=speaker)
        for page in pages:
            wait_text(page, "#room-where", "layer 2")
        assert app.rooms.get(code).n_followers() == 3
        deadline = time.monotonic() + 30
        while len(loads) < 3 and time.monotonic() < deadline:  # every page's load has come to its analysis step
            time.sleep(0.05)
        assert len(loads) == 3 and all(trace is None for trace, _ in loads), loads
        assert runs == [], f"followers ran the model {len(runs)} times"
        for page in pages:
            assert page.errors == [] and page.evaluate("document.querySelector('.gradio-container').offsetHeight") == 0
            assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"] + 1
            page.context.close()
    visitor = follower_page(browser, url)  # an ordinary visit analyses its prompt: the counter counts
    visitor.wait_for_selector("#token-spans .tok", timeout=60_000)
    assert runs and len(loads) == 4 and loads[-1][0] is not None
    visitor.context.close()


def test_browser_a_room_follows_the_speaker_and_guesses(browser, server):
    """The speaker (presenter mode, 1280 x 720) opens a room; three followers (one on a phone) follow a tab, a head,
    a prompt and a slide; a question goes round and is revealed; a guess of markup stays text; the speaker's page
    closed and reopened runs the room on."""
    from .test_browser import SHOTS, open_tab

    speaker_context = browser.new_context(viewport={"width": 1280, "height": 720})
    speaker = speaker_context.new_page()
    speaker.errors = []
    speaker.on("pageerror", lambda e: speaker.errors.append(str(e)))
    speaker.goto(server + "?large=1")
    speaker.wait_for_selector("#token-spans .tok", timeout=60_000)
    speaker.click("#room-start")
    speaker.wait_for_selector("#room-qr svg", timeout=30_000)
    assert speaker.locator("#room-qr svg").bounding_box()["height"] > 300  # large, for the back of the hall
    code = speaker.locator("#room-bar strong").inner_text().split()[-1]
    SHOTS.mkdir(parents=True, exist_ok=True)
    speaker.screenshot(path=str(SHOTS / "room-qr.png"))
    speaker.keyboard.press("Escape")
    followers = [follower_page(browser, f"{server}?room={code}", width) for width in (1280, 1280, 390)]
    try:
        for page in followers:
            wait_text(page, "#room-where", "Tokenization")
        open_tab(speaker, "Attention")
        for page in followers:
            wait_text(page, "#room-where", "Attention · layer 0 · head 0")
            page.wait_for_selector("#room-view .room-plot .main-svg", timeout=30_000)
        speaker.keyboard.press("ArrowRight")  # the next head
        for page in followers:
            wait_text(page, "#room-where", "head 1")
        speaker.fill("#prompt textarea", "The capital of Italy is Rome. The capital of Spain is")
        speaker.keyboard.press("Enter")
        for page in followers:
            wait_text(page, "#room-prompt", "capital of Spain", 60_000)
        open_tab(speaker, "Tour")
        speaker.wait_for_selector("#tour-progress p", timeout=60_000)
        speaker.click("#tour-next button, button#tour-next")
        speaker.wait_for_function("document.querySelector('#tour-progress').innerText.includes('Step 2 of')",
                                  timeout=30_000)
        lines = speaker.locator("#tour-progress").inner_text().splitlines()
        slide = next(line for line in lines if "Step 2 of" in line)  # not the progress timer beside it
        for page in followers:
            wait_text(page, "#room-where", slide)
        phone = followers[2]
        phone.wait_for_selector("#room-view .room-plot .gtitle", timeout=30_000)
        assert phone.locator("#room-view [data-testid=block-label]").count() == 0  # Gradio's tag is not the view
        title = phone.locator("#room-view .room-plot .gtitle").first.bounding_box()
        assert title["x"] >= 0 and title["x"] + title["width"] <= 390, title  # shrunk to the phone's width
        phone.screenshot(path=str(SHOTS / "room-follower-phone.png"), full_page=True)

        # a question round trip
        speaker.click("#room-ask")
        for page, guess in zip(followers, ["Madrid", PWNED, "Barcelona"]):
            page.wait_for_selector("#room-guess-input", timeout=60_000)
            page.fill("#room-guess-input", guess)
            page.click("#room-guess-send")
            wait_text(page, "#room-guess-says", "Your guess")
        wait_text(speaker, "#room-results", "3 guesses so far")
        speaker.wait_for_function("document.querySelector('#room-guesses').textContent.includes('<img/src=x')")
        speaker.screenshot(path=str(SHOTS / "room-guesses.png"))
        speaker.click("#room-reveal")
        wait_text(speaker, "#room-results", "guessed it")
        for page in followers:
            wait_text(page, "#room-ask-box", "The model's top guess")
        speaker.screenshot(path=str(SHOTS / "room-reveal.png"))
        shown = speaker.locator("#room-results").inner_text()
        assert "of 3 guessed it" in shown and "Overlap" in shown
        for page in [speaker, *followers]:
            assert page.evaluate("window.__pwned") is None  # the markup never ran
        assert followers[1].locator("#room-guess-says, #room-ask-box").first.inner_text().count("<img/src=x") == 1

        # the speaker's page closed and reopened: the room goes on
        speaker.close()
        speaker = speaker_context.new_page()
        speaker.goto(f"{server}?room={code}&large=1")
        speaker.wait_for_selector("#room-bar", timeout=30_000)
        speaker.wait_for_selector("#token-spans .tok", timeout=60_000)  # its own analysis, not a follower's view
        open_tab(speaker, "Logit lens")
        for page in followers:
            wait_text(page, "#room-where", "Logit lens", 60_000)
        for page in followers:
            assert page.errors == []
    finally:
        for page in followers:
            page.context.close()
        speaker_context.close()
