"""Model-core benchmark against Hugging Face transformers on the same weights, in one run.

    python bench/bench_model.py            # everything
    python bench/bench_model.py --quick    # fewer repeats

Prints: cold and warm load times; run_with_cache (every hook) vs HF forward with
output_attentions and output_hidden_states at T=128 and T=512; greedy decode tokens/s
with the KV cache vs HF generate. Ratios are ours / HF for time (<= 1.0 is the target)
and ours / HF for tokens/s (>= 1.5 is the target). Run by hand; timings on shared
machines are noisy, so each number is the median of several repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import generate, load  # noqa: E402
from model.allocator import keep_freed_memory  # noqa: E402
from model.weights import default_gguf  # noqa: E402
from timing import median  # noqa: E402 (bench/timing.py)

TEXT = (
    "The transformer architecture processes a sequence of tokens with layers of attention and "
    "feed-forward networks. Each attention head compares queries with keys, and rotary position "
    "embeddings turn each query and key by an angle that grows with its position. "
)


def load_times() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TRANSFORMER_PLAYGROUND_CACHE": cache}
        code = "import time; t = time.perf_counter(); from model import load; load(); print(time.perf_counter() - t)"
        # Cold: the GGUF is fetched with pip when not installed (as on a fresh machine) and converted.
        cold = float(subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout)
        warm = [float(subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                                     check=True).stdout) for _ in range(3)]
    print(f"load, cold (fetch + dequantise + cache), fresh process:  {cold:6.2f} s")
    print(f"load, warm (cached safetensors), fresh process incl. imports: {statistics.median(warm):6.2f} s  "
          f"(target < 3 s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    tuned = keep_freed_memory()  # as the app does; it applies to the reference model too
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, malloc keeps freed memory: {tuned}")
    if not args.skip_load:
        load_times()

    from transformers import AutoModelForCausalLM

    net, enc = load()
    gguf = default_gguf()
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager",
                                              dtype=torch.float32).eval()
    ids = enc.encode(TEXT * 40)

    for T in (128, 512):
        tokens = torch.tensor([ids[:T]])
        ours = median(lambda: net.run_with_cache(tokens), repeats)

        def reference():
            with torch.no_grad():
                hf(tokens, output_attentions=True, output_hidden_states=True)

        theirs = median(reference, repeats)
        print(f"T={T:4d}  run_with_cache (all {len(net.hook_points)} hooks) {ours * 1000:7.1f} ms   "
              f"HF forward (attentions + hidden states) {theirs * 1000:7.1f} ms   "
              f"ratio {ours / theirs:.2f}  (target <= 1.0)")

    prompt = enc.apply_chat_template("Write a short poem about the sea.")
    n = 64

    def ours_decode():
        out = list(generate(net, prompt, n))
        assert len(out) == n

    def hf_decode():
        t = torch.tensor([prompt])
        with torch.no_grad():
            hf.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=n, min_new_tokens=n, do_sample=False)

    decode_repeats = 2 if args.quick else 3
    ours_tps = n / median(ours_decode, decode_repeats)
    hf_tps = n / median(hf_decode, decode_repeats)
    print(f"greedy decode, {n} tokens after a {len(prompt)}-token prompt: ours {ours_tps:5.1f} tok/s   "
          f"HF generate {hf_tps:5.1f} tok/s   ratio {ours_tps / hf_tps:.2f}  (target >= 1.5)")


if __name__ == "__main__":
    main()
