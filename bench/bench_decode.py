"""Decode speed against the machine's memory bandwidth, measured in the same run.

    python bench/bench_decode.py             # the default model, float32
    python bench/bench_decode.py --quick     # fewer rounds

Decoding one token reads every weight once (the KV cache is small beside them), so the fastest a machine can
decode is its memory bandwidth divided by the weights' bytes. This bench measures that limit with a streaming
read of the same number of bytes (a sum over one buffer that size, on the same threads), and decodes greedily
(a) with `Transformer.step`, the one-token path decoding uses when no hook is attached, (b) the same step on
a copy of the model whose weights keep the (n, K) rows they are built with, not the loader's transposed layout
(`lay_out_for_decoding`), (c) the hooked forward (one hook attached, so every hook point is live) and (d)
Hugging Face `generate` on the same weights. Rounds
alternate between them so that a noisy neighbour slows them alike; each figure is the median of the rounds.
It prints tokens/s, the fraction of the limit, and the ratios. Run by hand; nothing in the tests times anything.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import load  # noqa: E402
from model.allocator import keep_freed_memory  # noqa: E402
from model.transformer import KVCache, Transformer  # noqa: E402

TOKENS = 64


def weight_bytes(net: Transformer) -> int:
    """Bytes decoding reads per token: every parameter once (a tied head counted once)."""
    return sum(p.numel() * p.element_size() for p in net.parameters())


def streaming_read(nbytes: int, dtype: torch.dtype) -> float:
    """Seconds for one streaming read of nbytes (a sum over a buffer that size)."""
    buffer = torch.ones(nbytes // torch.empty((), dtype=dtype).element_size(), dtype=dtype)
    buffer.sum()
    start = time.perf_counter()
    buffer.sum()
    return time.perf_counter() - start


@torch.inference_mode()
def decode(net: Transformer, prompt: list[int], n: int, hooked: bool) -> tuple[float, list[int]]:
    """Tokens/s of n greedy tokens after the prompt (the prompt's forward not timed), and the tokens."""
    cache = KVCache.for_model(net, 1, len(prompt) + n)
    hooks = [("blocks.0.hook_resid_pre", lambda x, hook: None)] if hooked else []
    with net.hooks(hooks):
        token = int(net(torch.tensor([prompt]), kv_cache=cache)[0, -1].argmax())
        out = []
        start = time.perf_counter()
        for _ in range(n):
            token = int(net(torch.tensor([[token]]), kv_cache=cache)[0, -1].argmax())
            out.append(token)
        return n / (time.perf_counter() - start), out


def as_built(net: Transformer) -> Transformer:
    """A copy of net with every linear's weight in its own contiguous (n, K) buffer, as built."""
    rows = copy.deepcopy(net)
    with torch.no_grad():
        for module in rows.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight = torch.nn.Parameter(module.weight.contiguous(), requires_grad=False)
        if rows.cfg.tie_embeddings:
            rows.tok_embeddings.weight = rows.output.weight
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-hf", action="store_true", help="leave Hugging Face generate out")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    keep_freed_memory()
    net, enc = load()
    nbytes = weight_bytes(net)
    dtype = net.tok_embeddings.weight.dtype
    prompt = enc.apply_chat_template("Write a short poem about the sea.")
    hf = None
    if not args.no_hf:
        from transformers import AutoModelForCausalLM

        from model.weights import default_gguf

        gguf = default_gguf()
        hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()

    def hf_decode() -> float:
        t = torch.tensor([prompt])
        start = time.perf_counter()
        with torch.no_grad():
            hf.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=TOKENS, min_new_tokens=TOKENS,
                        do_sample=False)
        return TOKENS / (time.perf_counter() - start)  # the prompt's forward included: a little generous to ours

    rows = as_built(net)
    runs: dict[str, list[float]] = {"limit": [], "step": [], "step, weights as built": [], "hooked forward": []}
    if hf is not None:
        runs["HF generate"] = []
    decode(net, prompt, 8, hooked=False)  # warm up
    decode(rows, prompt, 8, hooked=False)
    tokens = {}
    for _ in range(rounds):
        runs["limit"].append(1 / min(streaming_read(nbytes, dtype) for _ in range(3)))
        speed, tokens["step"] = decode(net, prompt, TOKENS, hooked=False)
        runs["step"].append(speed)
        speed, tokens["as built"] = decode(rows, prompt, TOKENS, hooked=False)
        runs["step, weights as built"].append(speed)
        speed, tokens["hooked"] = decode(net, prompt, TOKENS, hooked=True)
        runs["hooked forward"].append(speed)
        if hf is not None:
            runs["HF generate"].append(hf_decode())
    assert tokens["step"] == tokens["hooked"] == tokens["as built"], "the step and the hooked forward disagree"
    limit = statistics.median(runs["limit"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; weights {nbytes / 1e6:.0f} MB ({dtype}); "
          f"{TOKENS} greedy tokens after a {len(prompt)}-token prompt; median of {rounds} alternating rounds")
    print(f"streaming read of {nbytes / 1e6:.0f} MB: {nbytes * limit / 1e9:.1f} GB/s, "
          f"a limit of {limit:.1f} tokens/s")
    for name, speeds in runs.items():
        if name == "limit":
            continue
        speed = statistics.median(speeds)
        fractions = [s / lim for s, lim in zip(speeds, runs["limit"])]
        print(f"  {name:26s} {speed:6.1f} tokens/s   {speed / limit:5.0%} of the limit "
              f"(per round {min(fractions):.0%}..{max(fractions):.0%})   "
              f"x{speed / statistics.median(runs['hooked forward']):.2f} the hooked forward"
              + (f", x{speed / statistics.median(runs['HF generate']):.2f} HF" if hf is not None else ""))
    print("target: the step at >= 60% of the limit")


if __name__ == "__main__":
    main()
