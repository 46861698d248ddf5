"""An audience on one server: N visitors at once, through the same events the page sends (run by hand).

    python bench/bench_audience.py --visitors 30 --tokens 16
    python bench/bench_audience.py --visitors 10 --tokens 500
    python bench/bench_audience.py --visitors 100 --phase burst    # a lecture hall pressing Analyze at once
    python bench/bench_audience.py --phase heavy                   # long jobs queued while others analyse

Starts the real `python app.py` and, for each visitor, a gradio_client session that does what a
browser does: Analyze and the draw that follows it (the tab showing draws the trace), then
opens three tabs (each draws the trace when opened) and moves one control in each (a layer
on Attention, the query on RoPE, the temperature on the Sampler): six interactions.
The clients run on the same machine as the server, and gradio_client costs about twice the
server's CPU per event, so these times are pessimistic for visitors on their own machines.

Two phases, each on a fresh server:
- latency: all visitors start together; p50 / p95 / max of the analysis alone, of the page
  ready (analysis and every tab drawn), and of the interactions; errors; peak resident memory.
- memory: the visitors arrive one after another and stay; resident memory after each. What
  each visitor adds is the slope after the first two (the allocator keeps freed memory, so the
  first analyses also pay for the transient peak, once).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("attention rotary position embedding residual stream layer norm query key value head token logit lens "
         "sampler temperature probability softmax gradient weight matrix vector").split()

# Every tab's controls at their starting values, in the order the page sends them: the tabs in registry order
# (tokenization, attention, RoPE, logit lens, sampler, intervene, embeddings, inside a block, arithmetic, train BPE),
# then the link's prompt, chat and presenter mode. State components are not sent.
CONTROLS = (False, False, ["cl100k_base"], False,  0, 0, False, "previous token",  0, 0, 1, 0, 5.0, False,
            "top_prob", False, 1, "", False,
            "HF transformers", 1.0, 0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 64, 15, False,
            False,  " Paris", 12, " Paris, London, Berlin, cat, dog, red", False,  15, 1, False,  False,  " capital")
INTERACTIONS = [  # open a tab (it draws the trace), then move one of its controls
    ("/open_attention", None), ("/attention_head", (7, 4, False)),
    ("/open_rope", None), ("/rope", (7, 4, 3, 1, 5.0, False)),
    ("/open_sampler", None),
    ("/sampler", ("HF transformers", 0.7, 40, 0.9, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 64, 15, False)),
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the app exited during start-up")
            time.sleep(0.1)


def prompt_of(visitor: int, tokens: int) -> str:
    """About `tokens` tokens of text, different for every visitor (these words are about 1.1 tokens each)."""
    words = [WORDS[(visitor * 7 + i * 3) % len(WORDS)] for i in range(int((tokens - 5) / 1.1))]
    return f"Visitor {visitor}: " + " ".join(words)


def visit(url: str, visitor: int, tokens: int, times: dict, errors: list, start: threading.Barrier | None,
          keep: list | None = None) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    if keep is not None:
        keep.append(client)  # the session stays open (its state stays on the server)
    if start is not None:
        start.wait()
    try:
        began = time.perf_counter()
        prompt = prompt_of(visitor, tokens)
        status = client.predict(prompt, False, api_name="/analyze")
        times["analysis"].append(time.perf_counter() - began)
        if "Analyzed" not in str(status):
            errors.append(f"visitor {visitor}: {status}")
        client.predict(*CONTROLS, prompt, False, False, api_name="/draw")
        times["page ready"].append(time.perf_counter() - began)
        for name, args in INTERACTIONS:
            t = time.perf_counter()
            client.predict(*(CONTROLS + (prompt, False, False) if args is None else args), api_name=name)
            times["interaction"].append(time.perf_counter() - t)
    except Exception as e:  # what a visitor would see as an error
        errors.append(f"visitor {visitor}: {type(e).__name__}: {e}")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def latency_phase(visitors: int, tokens: int) -> None:
    proc, url = start_server()
    server = psutil.Process(proc.pid)
    times = {"analysis": [], "page ready": [], "interaction": []}
    errors: list[str] = []
    peak, done = [server.memory_info().rss], threading.Event()

    def watch():
        while not done.is_set():
            peak.append(server.memory_info().rss)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = threading.Barrier(visitors)
    threads = [threading.Thread(target=visit, args=(url, v, tokens, times, errors, start)) for v in range(visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    proc.terminate()
    proc.wait()
    print(f"latency, {visitors} visitors at once, prompts of about {tokens} tokens:")
    for name, values in times.items():
        if values:
            print(f"  {name:12s} p50 {statistics.median(values):6.2f} s   p95 {percentile(values, 0.95):6.2f} s   "
                  f"max {max(values):6.2f} s   ({len(values)} measured)")
    print(f"  errors: {len(errors)}{'  ' + errors[0] if errors else ''}")
    print(f"  peak resident memory of the server: {max(peak) / 2**20:.0f} MB")


def memory_phase(visitors: int, tokens: int) -> None:
    proc, url = start_server()
    server = psutil.Process(proc.pid)
    idle = server.memory_info().rss
    times = {"analysis": [], "page ready": [], "interaction": []}
    errors: list[str] = []
    clients: list = []
    rss = []
    for v in range(visitors):
        visit(url, v, tokens, times, errors, None, keep=clients)
        time.sleep(0.5)  # let the background lens finish for this visitor
        rss.append(server.memory_info().rss)
    proc.terminate()
    proc.wait()
    mb = [r / 2**20 for r in rss]
    per_visitor = (mb[-1] - mb[1]) / (visitors - 2) if visitors > 2 else float("nan")
    print(f"memory, {visitors} visitors one after another, each staying, prompts of about {tokens} tokens:")
    print(f"  idle {idle / 2**20:.0f} MB; after each visitor: {' '.join(f'{m:.0f}' for m in mb)} MB")
    print(f"  each visitor adds about {per_visitor:.1f} MB (slope after the first two); errors: {len(errors)}")


def call(url: str, api: str, data: list, session: str | None = None) -> str:
    """One event through Gradio's REST queue API (POST, then its event stream): the stream's text."""
    import json

    body = json.dumps({"data": data, **({"session_hash": session} if session else {})}).encode()
    request = urllib.request.Request(f"{url}gradio_api/call/{api}", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        event = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event}", timeout=120) as r:
        return r.read().decode()


def burst(url: str, visitors: int, tokens: int, open_pages: bool = False) -> tuple[list[float], list[str]]:
    """Every visitor presses Analyze at the same moment, as a light HTTP client through Gradio's REST queue API:
    (seconds to each answer, errors). With `open_pages`, each visitor's session exists before the burst (as a
    browser's does from the page's load); else each press opens a new session (Gradio builds its state then)."""
    times: list[float] = []
    errors: list[str] = []
    start = threading.Barrier(visitors)

    def one(v: int) -> None:
        session = f"visitor-{v}-{time.monotonic_ns()}" if open_pages else None
        try:
            if session:
                call(url, "tokenize", ["hello", False], session)
            start.wait()
            began = time.perf_counter()
            stream = call(url, "analyze", [prompt_of(v, tokens), False], session)
            if "event: complete" not in stream or "Analyzed" not in stream:
                errors.append(f"visitor {v}: {stream[-200:]}")
            else:
                times.append(time.perf_counter() - began)
        except Exception as e:  # a refusal (503 with the server's message) or a time-out
            detail = e.read().decode()[:200] if hasattr(e, "read") else ""
            errors.append(f"visitor {v}: {type(e).__name__}: {e} {detail}")

    threads = [threading.Thread(target=one, args=(v,)) for v in range(visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, errors


def burst_phase(visitors: int, tokens: int) -> None:
    print(f"burst, {visitors} Analyze presses at once over the REST queue API, prompts of about {tokens} tokens:")
    for open_pages in (True, False):
        proc, url = start_server()
        try:
            burst(url, 2, tokens)  # warm up
            times, errors = burst(url, visitors, tokens, open_pages)
        finally:
            proc.terminate()
            proc.wait()
        what = "pages already open" if open_pages else "each press a new session"
        if times:
            print(f"  {what:26s} answered {len(times)}: p50 {statistics.median(times):6.2f} s   "
                  f"p95 {percentile(times, 0.95):6.2f} s   max {max(times):6.2f} s")
        print(f"  {'':26s} errors: {len(errors)}{'  ' + errors[0] if errors else ''}")


HEAVY_PATCH = ("The capital of France is Paris, and the capital of Germany is", "The capital of Italy is Rome, and "
               "the capital of Germany is", " Berlin", " Rome", "resid")  # a 13-token residual sweep


def analyses_while(url: str, tries: int, gap_s: float = 1.0) -> list[float]:
    """One visitor presses Analyze `tries` times, a press every gap_s: seconds to each answer."""
    times = []
    for i in range(tries):
        began = time.perf_counter()
        stream = call(url, "analyze", [prompt_of(1000 + i, 16), False])
        if "Analyzed" not in stream:
            raise SystemExit(f"an analysis failed: {stream[-300:]}")
        times.append(time.perf_counter() - began)
        time.sleep(gap_s)
    return times


def heavy_phase(tries: int = 10) -> None:
    """Six patching sweeps queued by one client (the issue's hog), then by six clients, while another visitor
    presses Analyze ten times: p50 / p95 of that visitor's answers, against the same presses on an idle server."""
    from gradio_client import Client

    print(f"long jobs: 6 patching sweeps (13-token residual) queued, another visitor analysing {tries} times:")
    proc, url = start_server()
    try:
        analyses_while(url, 2, 0)  # warm up
        idle = analyses_while(url, tries)
        print(f"  {'idle server':30s} p50 {statistics.median(idle):5.2f} s   p95 {percentile(idle, 0.95):5.2f} s")
        for hogs in (1, 6):
            clients = [Client(url, verbose=False) for _ in range(hogs)]
            began = time.perf_counter()
            jobs = [clients[i % hogs].submit(*HEAVY_PATCH, api_name="/patch") for i in range(6)]
            time.sleep(2)  # the first sweeps are under way
            times = analyses_while(url, tries)
            outcomes = [job.result(timeout=600) for job in jobs]
            took = time.perf_counter() - began
            done = sum("values" in o for o in outcomes)
            who = "one client" if hogs == 1 else "six clients"
            print(f"  {'6 sweeps from ' + who:30s} p50 {statistics.median(times):5.2f} s   "
                  f"p95 {percentile(times, 0.95):5.2f} s   max {max(times):5.2f} s   "
                  f"(p95 {percentile(times, 0.95) / percentile(idle, 0.95):.1f}x idle; {done} sweeps ran, "
                  f"{6 - done} refused, all done in {took:.0f} s)")
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--phase", choices=("both", "latency", "memory", "burst", "heavy"), default="both")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{psutil.virtual_memory().total / 2**30:.0f} GB")
    if args.phase in ("both", "latency"):
        latency_phase(args.visitors, args.tokens)
    if args.phase in ("both", "memory"):
        memory_phase(args.visitors, args.tokens)
    if args.phase == "burst":
        burst_phase(args.visitors, args.tokens)
    if args.phase == "heavy":
        heavy_phase()


if __name__ == "__main__":
    main()
