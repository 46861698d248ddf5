"""A room on one server, with light clients (run by hand):

    python bench/bench_room.py                   # 300 followers
    python bench/bench_room.py --followers 100

Starts the real `python app.py`, opens a room, and connects N followers as light HTTP clients (asyncio, two
connections each, as a browser opens more than one; doing what a follower's page does: join, then
one long poll after another). Then:

- delivery: the speaker sends a view (an attention heatmap's figure of 64 x 64 cells, about as large as a view
  gets at that prompt length) ten times, a second apart; each follower's time from the speaker's send to its poll
  answering with that version: p50 / p95 / max over all deliveries;
- idle: the server's CPU over 20 s with the N followers connected and nothing changing (% of one core), beside the
  same 20 s with no follower; resident memory with them connected minus before they joined, per follower;
- guesses: a question is opened (one model run) and every follower sends a guess at once: how long until all are
  answered, and whether the room counted every one;
- an analysis by another visitor (over Gradio's REST queue API) with the followers connected and nothing changing,
  and while the room runs (a view sent to them every second), against the same analyses with no room, measured in
  this run: the ratios;
- drop: every follower disconnects at once; resident memory a few seconds later against before they joined.

The clients run on the same machine as the server (they cost CPU too), so the times are pessimistic. They run at
a lower priority (nice 10) than the server, as the phones' work is not the server's: what the analysis loses is
then the server's own cost of the room (`--same-priority` runs them beside it instead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_audience import analyses_while, percentile, start_server  # noqa: E402

WORDS = "Berlin Paris Madrid Rome London Vienna Munich Bonn Hamburg Prague".split()


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return re.search(r"model name\s*:\s*(.*)", text)[1].strip()
    except (OSError, TypeError):
        return platform.processor() or "unknown CPU"


def heatmap_view(layer: int, t: int = 64) -> dict:
    """A view as the speaker's page sends it: the tab, its controls, and one heatmap's Plotly JSON."""
    import numpy as np

    rng = np.random.default_rng(layer)
    z = np.tril(rng.random((t, t)))
    z = (z / z.sum(1, keepdims=True)).round(5)
    labels = [f"{i} tok{i}" for i in range(t)]
    plot = {"data": [{"type": "heatmap", "z": z.tolist(), "x": labels, "y": labels, "colorscale": "Viridis"}],
            "layout": {"height": 600, "title": {"text": f"Attention pattern, layer {layer}"}}}
    return {"tab": "attention", "label": "Attention", "prompt": "a prompt " * 30, "values": {"layer": layer, "head": 0},
            "slide": "", "parts": [{"html": "<p>Attention pattern</p><div data-plot='0'></div>"}, {"plot": plot}]}


class Follower:
    def __init__(self, client: httpx.AsyncClient, code: str):
        self.client, self.code = client, code
        self.id, self.version, self.seen = "", -1, {}  # version -> when it arrived

    async def run(self, stop: asyncio.Event) -> None:
        self.id = (await self.client.post(f"room/{self.code}/join")).json()["follower"]
        while not stop.is_set():
            try:
                r = await self.client.get(f"room/{self.code}", params={"since": self.version, "follower": self.id})
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
                continue
            arrived = time.perf_counter()
            version = int(re.search(rb'"version":(\d+)', r.content)[1])
            if version > self.version:
                self.seen[version] = arrived
                self.version = version


def phase(text: str) -> None:
    print(f"  ... {text}", file=sys.stderr, flush=True)


async def room_bench(url: str, proc, n: int) -> dict:
    server = psutil.Process(proc.pid)
    out: dict = {}
    async with httpx.AsyncClient(base_url=url, timeout=60) as speaker_http:
        room = (await speaker_http.post("room/new")).json()
        code, speaker = room["code"], {"x-room-key": room["key"]}

        async def show(layer: int) -> tuple[int, float]:
            sent = time.perf_counter()
            r = await speaker_http.post(f"room/{code}/view", json={"view": heatmap_view(layer)}, headers=speaker)
            return r.json()["version"], sent

        await show(0)
        phase("the idle server, no follower (20 s)")
        # the idle server with no follower
        await asyncio.sleep(3)
        cpu0 = sum(server.cpu_times()[:2])
        await asyncio.sleep(20)
        out["idle_cpu_without"] = (sum(server.cpu_times()[:2]) - cpu0) / 20
        rss_before = server.memory_info().rss
        phase("followers join")
        stop = asyncio.Event()
        clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=2))
                   for _ in range(n)]
        followers = [Follower(c, code) for c in clients]
        tasks = [asyncio.create_task(f.run(stop)) for f in followers]
        deadline = time.perf_counter() + 60
        while sum(1 for f in followers if f.version >= 1) < n:
            failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
            if failed or time.perf_counter() > deadline:
                raise SystemExit(f"bench_room: {sum(f.version >= 1 for f in followers)} of {n} followers joined; "
                                 f"{len(failed)} failed, the first with {failed[0]!r}" if failed else "")
            await asyncio.sleep(0.1)
        out["connected"] = n
        await asyncio.sleep(2)
        phase("ten views, a second apart")
        # delivery of ten changes, a second apart
        delays = []
        cpu0 = sum(server.cpu_times()[:2])
        for layer in range(1, 11):
            version, sent = await show(layer)
            deadline = time.perf_counter() + 10
            while any(version not in f.seen for f in followers) and time.perf_counter() < deadline:
                await asyncio.sleep(0.02)
            delays += [f.seen[version] - sent for f in followers if version in f.seen]
            out.setdefault("missed", 0)
            out["missed"] += sum(1 for f in followers if version not in f.seen)
            await asyncio.sleep(1)
        out["delays"] = delays
        out["cpu_per_delivery"] = (sum(server.cpu_times()[:2]) - cpu0) / (10 * n)  # the views' posts included
        phase("the idle server with the followers (20 s)")
        # idle with the followers connected
        await asyncio.sleep(3)
        cpu0 = sum(server.cpu_times()[:2])
        await asyncio.sleep(20)
        out["idle_cpu_with"] = (sum(server.cpu_times()[:2]) - cpu0) / 20
        out["rss_per_follower"] = (server.memory_info().rss - rss_before) / n
        phase("analyses with the followers connected, nothing changing")
        out["analysis_idle"] = await asyncio.to_thread(analyses_while, url, 8)
        phase("a question, and every follower guesses")
        # every follower guesses at once
        await speaker_http.post(f"room/{code}/question", json={"prompt": "The capital of Germany is"},
                                headers=speaker)
        began = time.perf_counter()
        posts = [f.client.post(f"room/{code}/guess", json={"follower": f.id, "text": WORDS[i % len(WORDS)]})
                 for i, f in enumerate(followers)]
        answers = await asyncio.wait_for(asyncio.gather(*posts), timeout=120)
        out["guess_s"] = time.perf_counter() - began
        out["guess_ok"] = sum(r.status_code == 200 for r in answers)
        tallies = (await speaker_http.get(f"room/{code}/question")).json()
        out["guess_counted"] = tallies["question"]["guesses"]
        phase("analyses while the room runs")
        # an analysis by another visitor, while the room runs (a view a second)
        busy = asyncio.Event()

        async def speaker_loop() -> None:
            layer = 20
            while not busy.is_set():
                await show(layer)
                layer += 1
                await asyncio.sleep(1)

        loop_task = asyncio.create_task(speaker_loop())
        out["analysis_with"] = await asyncio.to_thread(analyses_while, url, 8)
        busy.set()
        await loop_task
        phase("every follower drops")
        # every follower drops at once
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in clients))
        await asyncio.sleep(5)
        out["rss_after_drop"] = server.memory_info().rss - rss_before
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=300)
    parser.add_argument("--same-priority", action="store_true",
                        help="run the light clients at the server's priority (default: nice 10, below it)")
    args = parser.parse_args()
    print(f"bench_room: {args.followers} followers, light clients on this machine; CPU: {cpu_name()} "
          f"({psutil.cpu_count()} cores)")
    proc, url = start_server()
    if not args.same_priority:
        os.nice(10)  # this process (the clients), after the server has started at the usual priority
    print("  the clients run at " + ("the server's priority" if args.same_priority else "nice 10, below the server"))
    try:
        analyses_while(url, 2, 0.2)  # warm up
        without = analyses_while(url, 8)
        out = asyncio.run(room_bench(url, proc, args.followers))
    finally:
        proc.terminate()
        proc.wait()
    d = out["delays"]
    with_room = out["analysis_with"]
    print(f"  delivery of a view (a 64 x 64 heatmap) to {out['connected']} followers, 10 changes: "
          f"p50 {statistics.median(d) * 1000:.0f} ms   p95 {percentile(d, 0.95) * 1000:.0f} ms   "
          f"max {max(d) * 1000:.0f} ms   missed {out['missed']}")
    print(f"  the server's CPU for those ten changes: {out['cpu_per_delivery'] * 1e3:.2f} ms per follower per change")
    print(f"  idle: {out['idle_cpu_with'] * 100:.1f}% of one core with them connected "
          f"({out['idle_cpu_without'] * 100:.1f}% with no follower); "
          f"{out['rss_per_follower'] / 2**10:.0f} KB resident per follower")
    print(f"  {args.followers} guesses at once: all answered in {out['guess_s']:.2f} s; {out['guess_ok']} accepted, "
          f"{out['guess_counted']} counted")
    idle_room = out["analysis_idle"]
    print(f"  another visitor's analysis: median {statistics.median(without):.3f} s with no room; "
          f"{statistics.median(idle_room):.3f} s with the followers connected and nothing changing (ratio "
          f"{statistics.median(idle_room) / statistics.median(without):.2f}); {statistics.median(with_room):.3f} s "
          f"with a view a second sent to them (ratio {statistics.median(with_room) / statistics.median(without):.2f})")
    print(f"  all {args.followers} drop at once: resident memory {out['rss_after_drop'] / 2**20:+.1f} MB against "
          f"before they joined")
    print(json.dumps({k: v for k, v in out.items() if k not in ("delays", "analysis_with", "analysis_idle")}))


if __name__ == "__main__":
    main()
