"""Sampler benchmark: server-side time to answer a slider move, from cached logits (no model run).

    python bench/bench_sampler.py

Measures the Sampler tab's render (the whole chain in both orders, stages, figures, table)
plus Gradio's serialisation of the figures. Target: under 30 ms. Also one generation step
(one token through the model with the KV cache).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402

from model import load  # noqa: E402
from model.allocator import keep_freed_memory  # noqa: E402
from playground import tab_sampler  # noqa: E402
from playground.gen_session import GenSession  # noqa: E402
from playground.runner import ModelRunner  # noqa: E402

SETTINGS = [
    ["HF transformers", 1.0, 0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0],
    ["HF transformers", 0.7, 40, 0.9, 0.05, 1.0, 1.1, 0.0, 0.0],
    ["llama.cpp", 0.8, 50, 0.95, 0.02, 0.9, 1.2, 0.5, 0.2],
    ["HF transformers", 1.3, 0, 0.8, 0.0, 0.95, 1.0, 0.0, 0.0],
]


def main() -> None:
    keep_freed_memory()
    net, enc = load()
    runner = ModelRunner(net, enc)
    trace = runner.analyze("The capital of France is Paris. The capital of Germany is")
    sess = GenSession.start(runner, trace)
    plot = gr.Plot(render=False)
    times = []
    for repeat in range(10):
        for controls in SETTINGS:
            start = time.perf_counter()
            bars, matrix, orders, export, table, message = tab_sampler.render(runner, sess, *controls, 15, False)
            for fig in (bars, matrix, orders):
                plot.postprocess(fig)
            times.append(time.perf_counter() - start)
    times = times[len(SETTINGS):]  # the first round warms up
    print(f"slider move (chain in both orders + figures + serialise): median {statistics.median(times) * 1000:.1f} ms, "
          f"worst {max(times) * 1000:.1f} ms  (target < 30 ms)")
    steps = []
    for token in enc.encode(" Berlin. It is a city in the east of the country")[:12]:
        start = time.perf_counter()
        sess.push(runner, token, 1.0)
        steps.append(time.perf_counter() - start)
    print(f"one generation step with the KV cache: median {statistics.median(steps) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
