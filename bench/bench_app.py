"""App benchmark: server-side time to answer a layer or head switch, reading the trace only.

    python bench/bench_app.py

Measures, for a 128-token prompt, the Attention tab's render (figures and both clickable
grids) plus Gradio's own serialisation of those outputs, i.e. everything the server does
between receiving the slider value and sending the answer. Target: under 100 ms.
Also: the one model run behind Analyze, and the Tokenization tab's render.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from model import load  # noqa: E402
from model.allocator import keep_freed_memory  # noqa: E402
from playground import (  # noqa: E402
    tab_arithmetic, tab_attention, tab_block, tab_bpe, tab_embeddings, tab_lens, tab_tokenization,
)
from playground.runner import ModelRunner  # noqa: E402

TEXT = ("Rotary position embeddings rotate each pair of query and key dimensions by an angle "
        "proportional to the token's position, so attention scores depend on relative distance. ") * 20


def timed(fn, repeats: int = 15) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, max(times) * 1000


def analyze_cost(runner: ModelRunner, net, enc) -> None:
    """Analyze at 512 tokens against a bare run_with_cache (every hook kept), and where its time goes."""
    prompt = enc.decode(enc.encode(TEXT * 3)[:512])
    tokens = torch.tensor([enc.encode(prompt)])
    with torch.inference_mode():
        bare, _ = timed(lambda: net.run_with_cache(tokens), repeats=5)
        forward, _ = timed(lambda: net(tokens), repeats=5)
    ours, _ = timed(lambda: runner.analyze(prompt, lens=False), repeats=5)
    print(f"Analyze at {tokens.shape[1]} tokens: {ours:.0f} ms; bare run_with_cache (all hooks): {bare:.0f} ms; "
          f"ratio {ours / bare:.2f} (target <= 1.3); a plain forward: {forward:.0f} ms")
    profile = cProfile.Profile()
    profile.runcall(runner.analyze, prompt, lens=False)
    stats = {f"{Path(f).name}:{name}": tottime for (f, _, name), (_, _, tottime, _, _) in
             pstats.Stats(profile).stats.items()}
    total = sum(stats.values())
    print("  where it goes: " + ", ".join(f"{name} {100 * t / total:.0f}%" for name, t in
                                          sorted(stats.items(), key=lambda kv: -kv[1])[:5]))


def main() -> None:
    keep_freed_memory()
    net, enc = load()
    runner = ModelRunner(net, enc, background_lens=False)
    analyze_cost(runner, net, enc)
    prompt = enc.decode(enc.encode(TEXT)[:128])
    analyze_ms, _ = timed(lambda: runner.analyze(prompt), repeats=5)
    trace = runner.analyze(prompt)
    print(f"prompt: {trace.n_tokens} tokens; Analyze (one model run + trace): {analyze_ms:.0f} ms")

    # Gradio serialises outputs in each component's postprocess; include it.
    plot, image, markdown = gr.Plot(render=False), gr.Image(render=False), gr.Markdown(render=False)
    image.format = "png"  # as the tab's images
    post = [plot, plot, plot, plot, image, markdown]
    switches = [(l, h) for l in (0, 7, 15, 29) for h in (0, 4, 8)]
    position = iter(range(10**9))

    def switch():
        l, h = switches[next(position) % len(switches)]
        outputs = tab_attention.render_head(runner, trace, l, h, False)
        for component, value in zip(post, outputs):
            component.postprocess(value)

    median, worst = timed(switch, repeats=len(switches) * 2)
    print(f"layer/head switch (render + serialise): median {median:.0f} ms, worst {worst:.0f} ms  (target < 100 ms)")
    median, worst = timed(lambda: tab_attention.render_head(runner, trace, 3, 5, False))
    print(f"  of which render only: median {median:.0f} ms")
    median, worst = timed(lambda: tab_tokenization.render(runner, trace, True, True, ["cl100k_base"], False))
    print(f"tokenization tab render: median {median:.0f} ms, worst {worst:.0f} ms")

    # Logit lens: computed once per prompt when its tab is first shown, then read from the trace.
    for with_mid, rows in ((False, 1 + net.cfg.n_layers), (True, 1 + 2 * net.cfg.n_layers)):
        def compute():
            trace.lens.clear()
            trace.resid_mid = None
            runner.lens(trace, with_mid)
        median, _ = timed(compute, repeats=3)
        print(f"logit lens, {rows} rows x {trace.n_tokens} positions, exact float32: {median:.0f} ms  "
              f"(target < 500 ms for 30 x 128)")
    median, _ = timed(lambda: tab_lens.render(runner, trace, "rank_next", False, 100, " the", False))
    print(f"logit-lens tab redraw (statistic or position change, lens cached): {median:.0f} ms")

    # The concept tabs: one interaction each, figures serialised as Gradio would (target < 100 ms each).
    def serialised(outputs):
        for value in outputs:
            if hasattr(value, "to_plotly_json"):
                plot.postprocess(value)
        return outputs

    training = tab_bpe.train(runner, tab_bpe.TEXT, 40, False)[0]
    layers = iter(range(10**9))
    for name, fn in (
        ("Embeddings: another token", lambda: serialised(tab_embeddings.render_token(runner, " London", 12,
                                                                                      tab_embeddings.WORDS, False))),
        ("Inside a block: another layer", lambda: serialised(tab_block.render(runner, trace, next(layers) % 30, 100,
                                                                              False))),
        ("Arithmetic: redraw", lambda: serialised(tab_arithmetic.render(runner, trace, False))),
        ("Train BPE: another merge shown", lambda: serialised([tab_bpe.step_view(runner, training, 7, False)])),
        ("Train BPE: train 40 merges", lambda: serialised(tab_bpe.train(runner, tab_bpe.TEXT, 40, False))),
        ("Train BPE: replay a word", lambda: tab_bpe.replay(runner, " tokenization")),
    ):
        median, worst = timed(fn, repeats=10)
        print(f"{name}: median {median:.0f} ms, worst {worst:.0f} ms")


if __name__ == "__main__":
    main()
