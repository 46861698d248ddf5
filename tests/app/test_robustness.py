"""Many visitors, odd text, limits, the command line: clear messages, a server that keeps serving, no leaks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import psutil

from ..conftest import ROOT
from ..helpers import next_token_body, raw_call


def test_awkward_text_is_handled_through_the_api(client, real):
    enc = real[1]
    out = client.predict("bell\x04 ring", False, api_name="/tokenize")
    assert "replaced by U+FFFD" in out["notes"][0]
    out = client.predict("<|im_start|>user", False, api_name="/tokenize")
    assert out["ids"] == enc.encode("<|im_start|>user") and 1 not in out["ids"]  # typed specials stay text


def test_the_server_keeps_serving_after_bad_input(server, client):
    body = '{"data": ' + next_token_body(temperature="NaN") + "}"
    assert "temperature" in raw_call(server, "next_token", body)["error"]
    assert "error" in client.predict("", api_name="/next_token")
    out = client.predict("The capital of France is", 0.7, 40, 0.9, 0.0, 1.0, 1.0, "hf", False, 200,
                         api_name="/next_token")
    assert out["text"][0] == " Paris" and 1 <= out["kept"] <= 40
    assert len(out["probs"]) == out["kept"] and abs(sum(out["probs"]) - 1) < 1e-5  # every kept token is listed


WORDS = ["alpha", "beta", "gamma", "delta", "omega"]
PROMPTS = [f"Session {s} prompt {p}: {' '.join(WORDS[: 1 + (s + p) % 5])} {s * 7 + p}"
           for s in range(8) for p in range(5)]


def test_eight_concurrent_sessions_each_get_their_own_results(server, real):
    """8 clients (8 sessions) x 5 different prompts at once: every answer is for its own prompt."""
    net, enc = real
    cfg = net.cfg
    from gradio_client import Client

    errors: list[str] = []

    def visitor(s: int) -> None:
        client = Client(server, verbose=False)
        for p in range(5):
            prompt = PROMPTS[s * 5 + p]
            ids = enc.encode(prompt)
            tokens = client.predict(prompt, False, api_name="/tokenize")
            att = client.predict(prompt, s % cfg.n_layers, p % cfg.n_heads, False, api_name="/attention")
            if tokens["ids"] != ids or att["ids"] != ids:
                errors.append(f"session {s} got tokens of another prompt for {prompt!r}")
            weights = np.array(att["weights"])
            if weights.shape != (len(ids), len(ids)) or not np.allclose(weights.sum(-1), 1, atol=1e-4):
                errors.append(f"session {s}: attention of the wrong shape for {prompt!r}")

    threads = [threading.Thread(target=visitor, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "some sessions never finished"
    assert not errors, errors[:3]


REQUESTS = 120  # after a warm-up, memory may grow by at most 1 MB a request: a kept trace or figure would pass that


def test_memory_stays_bounded_over_many_requests(client, runner):
    L, H = runner.cfg.n_layers, runner.cfg.n_heads
    process = psutil.Process(os.getpid())  # the test server runs in this process
    for i in range(20):  # warm up allocator pools and caches
        client.predict(f"warm up number {i}", i % L, i % H, False, api_name="/attention")
    before = process.memory_info().rss
    for i in range(REQUESTS):  # one after another: from several visitors at once glibc's per-thread arenas add
        out = client.predict(f"Request {i}: the quick brown fox number {i} jumps", i % L, i % H, False,  # ~200 MB
                             api_name="/attention")
        assert "weights" in out
    growth_mb = (process.memory_info().rss - before) / 2**20
    assert growth_mb < REQUESTS, f"memory grew by {growth_mb:.0f} MB over {REQUESTS} requests"


def run_app(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_unknown_model_or_path_outside_allowed_locations_is_a_clear_error():
    from concurrent.futures import ThreadPoolExecutor

    cases = ((["--model", "no-such-model"], "no model called"),
             (["--model", "/etc/passwd"], "outside the allowed model locations"),
             (["--device", "cuda"], "Start it with --device cpu"))
    with ThreadPoolExecutor(len(cases)) as pool:  # three start-ups at once: each spends seconds importing
        runs = list(pool.map(lambda case: run_app(*case[0]), cases))
    for (args, expect), done in zip(cases, runs):
        assert done.returncode == 1, args
        assert expect in done.stderr and "Traceback" not in done.stderr, (args, done.stderr[-500:])
    import torch

    why = "views run on the CPU for now" if torch.cuda.is_available() else "PyTorch sees no GPU here"
    assert why in done.stderr  # --device cuda says which of the two it is


def test_the_app_listens_where_a_space_tells_it():
    """Spaces start `python app.py` with GRADIO_SERVER_NAME=0.0.0.0 and GRADIO_SERVER_PORT: it must listen there."""
    import urllib.request

    from ..conftest import free_port

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as page:
                    assert page.status == 200
                    break
            except OSError:
                assert proc.poll() is None, "the app exited during start-up"
                time.sleep(0.2)
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
        assert ("0.0.0.0", port) in listening, listening
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_more_requests_than_the_queue_holds_get_the_queue_message(tiny_net, tiny_enc):
    from gradio_client import Client

    from app import create_app, launch_options, queued
    from playground.runner import ModelRunner
    from playground.turns import ModelGate

    from ..conftest import free_port

    lock = ModelGate()
    runner = ModelRunner(tiny_net, tiny_enc, wait_s=3, background_lens=False, gate=lock)
    app = create_app(runner)
    port = free_port()
    queued(app, max_size=2, runner=runner).launch(server_name="127.0.0.1", server_port=port,
                                                  prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        lock.acquire()  # the model is busy: two requests run (and wait), two queue, the rest are turned away
        jobs = [client.submit("the cat", api_name="/next_token") for _ in range(7)]
        refused = None
        for _ in range(10):  # more requests until one finds the queue full: the server's own words, as a page gets them
            request = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/call/next_token",
                                             data=json.dumps({"data": ["the cat"]}).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=30).close()
            except urllib.error.HTTPError as e:
                refused = e
                break
        assert refused is not None, "the queue never filled"
        detail = json.loads(refused.read())["detail"]
        assert refused.code == 503 and detail.startswith("The playground is full right now: ")
        assert re.search(r"try again in about \d+ s\.$", detail), detail
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(str(job.result(timeout=60)))
            except Exception as e:  # gradio_client words a full queue its own way
                outcomes.append(f"{type(e).__name__}: {e}")
        lock.release()
        assert any("Queue is full" in o for o in outcomes), outcomes
        assert client.predict("the cat", api_name="/next_token")["ids"]  # and then it serves again
    finally:
        if lock.locked():
            lock.release()
        app.close()


def test_a_visitor_who_leaves_mid_analysis_harms_no_one(server, client, real):
    from gradio_client import Client

    leaving = Client(server, verbose=False)
    job = leaving.submit("A visitor who closes the page while the model runs on this prompt.", False,
                         api_name="/analyze")
    job.cancel()
    leaving.close()
    status = client.predict("Someone else's prompt, analysed right after.", False, api_name="/analyze")
    assert isinstance(status, str) and "Analyzed" in status  # the trace itself is session state, not an output
    assert client.predict("Hello", 0, 0, False, api_name="/attention")["ids"] == real[1].encode("Hello")


def test_a_lecture_hall_burst_of_100_analyses_is_served(tiny_net, tiny_enc):
    """A hundred visitors press Analyze at once (REST queue API, light clients): every one is answered, none is
    turned away (the queue holds them, and they reach the runner together to run as a few batched forwards)."""
    from app import create_app, launch_options, queued
    from playground.runner import ModelRunner

    from ..conftest import free_port

    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    app = create_app(runner)
    port = free_port()
    queued(app, runner=runner).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                                      quiet=True, **launch_options())
    answers: list[str] = []
    start = threading.Barrier(100)

    def press(v: int) -> None:
        body = json.dumps({"data": [f"visitor {v}: the cat sat on the mat", False]}).encode()
        post = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/call/analyze", data=body,
                                      headers={"Content-Type": "application/json"})
        start.wait()
        try:
            with urllib.request.urlopen(post, timeout=120) as r:
                event = json.load(r)["event_id"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/call/analyze/{event}", timeout=120) as r:
                answers.append(r.read().decode())
        except Exception as e:
            answers.append(f"{type(e).__name__}: {e}")

    try:
        threads = [threading.Thread(target=press, args=(v,)) for v in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
    finally:
        app.close()
    served = [a for a in answers if "event: complete" in a and "Analyzed" in a]
    assert len(served) == 100, [a for a in answers if a not in served][:3]


def test_sessions_build_the_same_component_configs_lazily(tiny_runner):
    """`lighter_sessions` defers Gradio's per-session config build; every entry it builds equals Gradio's own."""
    from gradio import state_holder

    from app import create_app

    app = create_app(tiny_runner)
    session_class = state_holder.SessionState
    assert session_class.lazy_configs
    lazy = session_class(app)
    assert not dict.__len__(lazy.config_values)  # nothing built yet
    eager = object.__new__(session_class)
    session_class.eager_init(eager, app)
    assert len(eager.config_values) > 100
    assert dict(lazy.config_values.items()) == eager.config_values
    assert list(lazy.components) == list(eager.components)
    assert lazy.blocks_config.blocks.keys() == eager.blocks_config.blocks.keys()
    assert lazy.state_data == eager.state_data and lazy.is_closed == eager.is_closed
