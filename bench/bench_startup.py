"""Start-up time and memory under load, for the real `python app.py` (run by hand).

    python bench/bench_startup.py

Start-up: from launching `python app.py` (weights already cached) to the page answering,
and to the first API answer. Target: a usable page in under 10 s. Memory: the server's
resident memory idle, at the peak of 8 concurrent clients x 25 requests, and after.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int) -> tuple[subprocess.Popen, float, float]:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the app exited during start-up")
            time.sleep(0.05)
    page = time.perf_counter() - started
    from gradio_client import Client

    Client(url, verbose=False).predict("Hello world", False, api_name="/tokenize")
    return proc, page, time.perf_counter() - started


def main() -> None:
    pages, apis = [], []
    for _ in range(3):
        proc, page, api = start(free_port())
        pages.append(page)
        apis.append(api)
        proc.terminate()
        proc.wait()
    print(f"start-up, weights cached: page answers after {statistics.median(pages):.1f} s, "
          f"first API answer after {statistics.median(apis):.1f} s (median of 3; target < 10 s)")

    port = free_port()
    proc, _, _ = start(port)
    server = psutil.Process(proc.pid)
    from gradio_client import Client

    idle = server.memory_info().rss
    peak = [idle]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak.append(server.memory_info().rss)
            time.sleep(0.1)

    def visitor(v: int):
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for i in range(25):
            client.predict(f"Visitor {v} asks question {i} about attention heads and rotary embeddings.",
                           i % 30, v % 9, False,
                           api_name="/attention")

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    threads = [threading.Thread(target=visitor, args=(v,)) for v in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    done.set()
    watcher.join()
    after = server.memory_info().rss
    proc.terminate()
    proc.wait()
    mb = lambda b: b / 2**20  # noqa: E731
    print(f"memory: idle {mb(idle):.0f} MB, peak under 8 clients x 25 requests {mb(max(peak)):.0f} MB, "
          f"after {mb(after):.0f} MB; "
          f"200 requests in {elapsed:.1f} s ({200 / elapsed:.1f} requests/s)")


if __name__ == "__main__":
    main()
