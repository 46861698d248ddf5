"""Decoding strategies: step times against transformers' generate on the same weights, in one run.

    python bench/bench_decoding.py            # 32 new tokens, 3 repeats
    python bench/bench_decoding.py --quick    # 16 new tokens, 1 repeat

Prints, for each strategy, the median time per generated token, ours and transformers' where it has the strategy
(greedy, beam search of width 4; DoLa and contrastive search are hub-only in transformers now), the ratio ours / HF
(<= 1.0 is the target), a beam step against one batched forward of 4 tokens with the cache (the issue's "about one
batched forward" target), self-speculative decoding's acceptance and speed-up for several draft depths, and the
time per token with and without the KV cache. Run by hand: the machines are shared, so only ratios measured in the
same run mean anything.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import KVCache, load  # noqa: E402
from model.contrast import contrastive, dola, dola_candidate_layers  # noqa: E402
from model.decoding import beam_search, greedy, speculative, time_kv_cache  # noqa: E402
from model.weights import default_gguf  # noqa: E402
from timing import median  # noqa: E402 (bench/timing.py)

EOS = 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, repeats = (16, 1) if args.quick else (32, 3)
    torch.set_num_threads(torch.get_num_threads())
    net, enc = load()
    prompt = enc.apply_chat_template("Write a short paragraph about the sea.")
    print(f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; prompt "
          f"{len(prompt)} tokens, {n} new tokens, median of {repeats}")

    from transformers import AutoModelForCausalLM

    path = default_gguf()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, attn_implementation="eager",
                                              dtype=torch.float32).eval()
    tokens = torch.tensor([prompt])

    def hf_generate(**kw):
        with torch.no_grad():
            return hf.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, pad_token_id=EOS, **kw)

    low = dola_candidate_layers(net.cfg.n_layers, net.cfg.tie_embeddings)["low"]
    rows = [("greedy", median(lambda: greedy(net, prompt, n), repeats), median(lambda: hf_generate(), repeats)),
            ("beam search, width 4", median(lambda: beam_search(net, prompt, 4, n), repeats),
             median(lambda: hf_generate(num_beams=4, early_stopping=False), repeats)),
            ("DoLa (low layers)", median(lambda: dola(net, prompt, n, low, repetition=1.2), repeats), None),
            ("contrastive search, k 4", median(lambda: contrastive(net, prompt, n, 4, 0.6), repeats), None)]
    print(f"\n{'strategy':28} {'ours ms/token':>14} {'HF ms/token':>12} {'ours/HF':>8}")
    for name, ours, ref in rows:
        ratio = f"{ours / ref:8.2f}" if ref else "       –"
        print(f"{name:28} {1000 * ours / n:14.1f} {1000 * ref / n if ref else float('nan'):12.1f} {ratio}")

    # a beam step against one batched forward of 4 tokens with the cache, at this context
    cache = KVCache.empty(net.cfg, 4, len(prompt) + 2, torch.float32, "cpu")
    with torch.no_grad():
        net(tokens.expand(4, -1), kv_cache=cache)

    def one_batched_step():
        cache.length = len(prompt)
        with torch.no_grad():
            net(torch.tensor([[prompt[-1]]] * 4), kv_cache=cache)

    step = median(one_batched_step, max(5, repeats * 5))
    beam_per_step = rows[1][1] / n
    print(f"\nbeam step (width 4) {1000 * beam_per_step:.1f} ms against one batched 4-token forward with the cache "
          f"{1000 * step:.1f} ms: ratio {beam_per_step / step:.2f}")

    plain = rows[0][1]
    print(f"\n{'draft layers':>12} {'accepted':>9} {'speed-up over greedy':>22}")
    for k in (6, 12, 18, 24, 27, 29):
        result = speculative(net, prompt, k, 4, n)
        per_token = median(lambda k=k: speculative(net, prompt, k, 4, n), repeats) / max(1, len(result.tokens))
        print(f"{k:12d} {100 * result.acceptance:8.0f}% {plain / n / per_token:21.2f}×")

    timing = time_kv_cache(net, prompt, 48, budget_s=30)
    print(f"\nKV cache: {1000 * statistics.mean(timing.with_cache):.1f} ms a token with it, "
          f"{1000 * statistics.mean(timing.without_cache):.1f} ms without (context {timing.context[0]} to "
          f"{timing.context[-1]}): ×{statistics.mean(timing.without_cache) / statistics.mean(timing.with_cache):.1f}")


if __name__ == "__main__":
    main()
