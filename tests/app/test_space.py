"""A public Space, tried as a new user and as an unfriendly one: the API exactly as the README shows it, no uploads,
bad values answered as errors, and no visitor able to starve the others."""

from __future__ import annotations

import ast
import inspect
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from playground import api

from ..conftest import free_port
from ..helpers import random_model, raw_call, tiny_config

ROOT = Path(__file__).resolve().parents[2]


# -- the API as documented ---------------------------------------------------------------------


def readme_api_calls() -> list[tuple[str, str, set[str]]]:
    """Each client.predict(...) in the README's API block: (its source, the endpoint, the keys its `->` comment
    promises at the top level of the answer)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## API\n.*?```python\n(.*?)```", text, re.S)[1]
    lines = block.splitlines()
    calls = [node for node in ast.walk(ast.parse(block)) if isinstance(node, ast.Call)
             and ast.unparse(node.func) == "client.predict"]
    found = []
    for i, call in enumerate(sorted(calls, key=lambda c: c.lineno)):
        end = calls[i + 1].lineno - 1 if i + 1 < len(calls) else len(lines)
        comment = " ".join(lines[call.end_lineno - 1 : end])
        promised = comment[comment.index("->"):]
        body = promised[promised.index("{") + 1 :]
        depth, part, keys = 0, "", set()
        for ch in body:  # the top-level names of {a, b[x], c: {...}, d (note)}
            if ch in "{[(":
                depth += 1
            elif ch in "}])":
                if depth == 0:
                    break
                depth -= 1
            if ch == "," and depth == 0:
                keys.add(re.match(r"\s*(\w+)", part)[1])
                part = ""
            else:
                part += ch
        keys.add(re.match(r"\s*(\w+)", part)[1])
        name = next(k.value.value for k in call.keywords if k.arg == "api_name")
        found.append((ast.unparse(call), name, keys))
    return found


def test_the_readme_documents_every_endpoint_with_the_keys_it_answers():
    calls = readme_api_calls()
    assert [name for _, name, _ in calls] == ["/tokenize", "/attention", "/next_token", "/lens", "/attribute",
                                               "/routes", "/why_attend", "/ablate", "/patch"]
    assert all(len(keys) >= 3 for _, _, keys in calls), calls


def _rest(server: str, name: str, data: list) -> list[str]:
    """An endpoint through Gradio's REST queue API: the event stream's events as (kind, data) lines."""
    posted = httpx.post(f"{server}gradio_api/call{name}", json={"data": data}, timeout=30)
    assert posted.status_code == 200, posted.text
    stream = httpx.get(f"{server}gradio_api/call{name}/{posted.json()['event_id']}", timeout=300).text
    return re.findall(r"event: (\w+)\ndata: (.*)", stream)


def test_every_readme_api_call_answers_as_documented_through_the_client_and_rest(server, client):
    """Run exactly as written (only the address changed) with gradio_client, then the same call over the REST queue
    API by the same name (all arguments given: REST has no defaults): an answer with the promised keys, no error."""
    for source, name, keys in readme_api_calls():
        out = eval(source, {"client": client})  # noqa: S307 (the README's own code)
        assert isinstance(out, dict) and "error" not in out and keys <= set(out), (source, out)
        call = ast.parse(source, mode="eval").body
        args = [ast.literal_eval(a) for a in call.args]
        params = [p for p in inspect.signature(getattr(api, name[1:])).parameters.values()
                  if p.name not in ("runner", "request")]
        data = args + [p.default for p in params[len(args):]]
        events = _rest(server, name, data)
        assert events and events[-1][0] == "complete", (name, events[-3:])
        rest = json.loads(events[-1][1])[0]
        assert keys <= set(rest) and "error" not in rest, (name, rest)


def test_the_readmes_curl_body_is_answered(server):
    """The README's plain-HTTP example, its body as written: every argument /next_token takes, in order."""
    from ..helpers import raw_call

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = re.search(r"-d '(\{\"data\".*?\})'", text, re.S)[1]
    out = raw_call(server, "next_token", body)
    assert "error" not in out and out["text"][0] == " Paris", out


def test_the_api_names_are_the_apis_own(server):
    """A tab's event never takes an API endpoint's name (it would answer /patch with the tab's handler)."""
    config = httpx.get(f"{server}config", timeout=30).json()
    names = {d["api_name"] for d in config["dependencies"] if d.get("api_name")}
    assert {"tokenize", "attention", "next_token", "lens", "attribute", "routes", "why_attend", "ablate",
            "patch"} <= names
    info = httpx.get(f"{server}gradio_api/info", timeout=30).json()
    assert set(info["named_endpoints"]) == {"/tokenize", "/attention", "/next_token", "/lens", "/attribute",
                                            "/routes", "/why_attend"}


@pytest.mark.parametrize("name,args,message", [
    ("/attention", ("Hello world", 30, 0, False), "layer must be in 0..29"),
    ("/attention", ("", 3, 5, False), "Type a prompt"),
    ("/lens", ("Hello", 7, False, 5), "position must be in"),
    ("/next_token", ("   ", 0.7, 40, 0.9), "Type a prompt"),
    ("/attribute", ("The capital of France is", "", " Rome", False), "a must be a non-empty text"),
    ("/ablate", ("The capital of France is", "L30H0", [], [], "zero", "", "", False), "head layer must be in 0..29"),
    ("/patch", ("", "The capital of Italy is", " Paris", " Rome", "resid"), "Type a prompt"),
    ("/routes", ("The capital of France is", 9, 0.04, False), "position must be in"),
    ("/routes", ("The capital of France is", -1, 1.5, False), "threshold must be in 0..1"),
    ("/routes", ("The capital of France is", -1, 0, False), "threshold must be between 0 and 1"),
    ("/routes", ("", -1, 0.04, False), "Type a prompt"),
    ("/why_attend", ("The capital of France is", 14, 4, 1, 3, False), "key must be at or before the query"),
    ("/why_attend", ("The capital of France is", 14, 9, -1, 0, False), "head must be in 0..8"),
    ("/patch", ("The capital of France is", "The capital of Italy is", " Paris", " Rome", "everything"),
     "sweep must be one of"),
])
def test_readme_calls_with_bad_values_answer_an_error(client, name, args, message):
    assert message in client.predict(*args, api_name=name)["error"]


def test_nan_through_the_rest_api_is_an_error(server):
    body = '{"data": ["Hello world", NaN, 0, false]}'
    assert "layer must be a whole number" in raw_call(server, "attention", body)["error"]


# -- nothing to upload -------------------------------------------------------------------------


def test_uploads_are_refused_before_a_byte_is_stored(server):
    import tempfile

    before = {p.name for p in Path(tempfile.gettempdir(), "gradio").rglob("*")}
    for path in ("gradio_api/upload", "gradio_api/upload/", "gradio_api/process_recording"):
        answer = httpx.post(f"{server}{path}", files={"files": ("big.bin", b"x" * 1_000_000)}, timeout=30)
        assert answer.status_code == 403 and "no uploads" in answer.text, (path, answer.status_code)
    after = {p.name for p in Path(tempfile.gettempdir(), "gradio").rglob("*")}
    assert not {n for n in after - before if n.endswith(".bin")}


def test_the_app_also_sets_gradios_own_limits():
    from app import CACHE_AGE_S, CACHE_SWEEP_S, launch_options

    options = launch_options()
    assert options["max_file_size"] == 0  # the second fence: Gradio's own limit, the smallest it allows
    assert CACHE_SWEEP_S <= CACHE_AGE_S <= 3600


# -- fair turns --------------------------------------------------------------------------------


STEP_S = 0.6  # each layer of a patching sweep is made to take this long (the tiny model's would take milliseconds)


@pytest.fixture()
def slow_server(tiny_enc, monkeypatch):
    """The app on a 6-layer tiny model whose patching sweeps take STEP_S a layer (a step held at the model, as a real
    one is), so that who waits for whom can be seen."""
    from gradio_client import Client

    import playground.runner as runner_module
    from app import create_app, launch_options, queued
    from playground.runner import ModelRunner

    real_sweep = runner_module.patching_sweep

    def slow_sweep(*args, **kwargs):
        for item in real_sweep(*args, **kwargs):
            time.sleep(STEP_S)
            yield item

    monkeypatch.setattr(runner_module, "patching_sweep", slow_sweep)
    runner = ModelRunner(random_model(tiny_config(n_layers=6)), tiny_enc, background_lens=False)
    app = create_app(runner)
    port = free_port()
    queued(app, runner=runner).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                                      quiet=True, **launch_options())
    url = f"http://127.0.0.1:{port}/"
    try:
        yield url, runner, lambda: Client(url, verbose=False)
    finally:
        app.close()


PATCH = ("the cat sat on the", "the mat sat on the", " cat", " mat", "resid")


def test_one_visitor_with_six_sweeps_runs_one_and_others_are_answered_between_its_steps(slow_server):
    url, runner, new_client = slow_server
    hog, others = new_client(), [new_client() for _ in range(3)]
    jobs = [hog.submit(*PATCH, api_name="/patch") for _ in range(6)]
    deadline = time.monotonic() + 30
    while runner.jobs.of(hog.session_hash) is None:  # the first sweep is under way
        assert time.monotonic() < deadline
        time.sleep(0.02)
    answered: list[float] = []

    def analyse(client) -> None:
        out = client.predict("the cat sat on the mat", 1, 2, False, api_name="/attention")
        assert out["ids"]
        answered.append(time.monotonic())

    threads = [threading.Thread(target=analyse, args=(c,)) for c in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outcomes = [job.result(timeout=60) for job in jobs]
    finished = time.monotonic()
    done = [o for o in outcomes if "values" in o]
    refused = [o for o in outcomes if "error" in o]
    assert len(done) == 1 and len(refused) == 5, outcomes
    assert all(o["error"].startswith("You already have a patching sweep (/patch) running") for o in refused)
    assert len(answered) == 3
    # Everyone else was answered while the sweep still had several steps to go, not after it.
    assert max(answered) < finished - 2 * STEP_S, (finished - max(answered))


def test_a_visitor_who_leaves_mid_sweep_frees_the_model_within_a_step(slow_server):
    url, runner, new_client = slow_server
    posted = httpx.post(f"{url}gradio_api/call/patch", json={"data": list(PATCH)}, timeout=30).json()
    with httpx.stream("GET", f"{url}gradio_api/call/patch/{posted['event_id']}", timeout=30) as stream:
        for line in stream.iter_lines():
            if "progress" in line:  # the sweep is under way: leave
                break
    left = time.monotonic()
    while len(runner.jobs) or runner.gate.locked():
        assert time.monotonic() - left < 4 * STEP_S, "the model stayed taken after the visitor left"
        time.sleep(0.02)
    steps_after = runner.gate.taken
    time.sleep(3 * STEP_S)
    assert runner.gate.taken == steps_after  # the sweep did not go on without anyone to see it


def test_each_limit_in_the_readme_is_a_named_constant_with_the_value_it_states():
    import importlib

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    limits = re.search(r"- \*\*Limits\*\*(.*?)\n- \*\*", text, re.S)[1]
    modules = [importlib.import_module(m) for m in ("app", "playground.runner", "playground.ui",
                                                       "playground.tab_sampler", "playground.gen_session")]
    names = re.findall(r"`([A-Z][A-Z_]+)`", limits)
    assert len(names) >= 9, names
    for name in names:
        value = next(getattr(m, name) for m in modules if hasattr(m, name))
        stated = re.search(rf"([\d,]+)[^\d]*?`{name}`", limits)  # the number that precedes its name
        assert stated and int(stated[1].replace(",", "")) == value, (name, value, stated and stated[1])
