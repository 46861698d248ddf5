"""Gemma 3 270M against Hugging Face transformers on the same GGUF, in one run.

    python bench/bench_gemma.py            # everything
    python bench/bench_gemma.py --quick    # fewer repeats

Prints: the warm load time from our cache (a fresh process, imports included); the app's Analyze (one batched
forward keeping what every tab reads) and run_with_cache (every hook) at T = 128 and 512 against transformers'
forward with output_attentions and output_hidden_states; greedy decode tokens/s with the KV cache against
transformers' generate; the resident memory with Gemma alone and with SmolLM2 loaded beside it. Ratios are ours /
transformers' for time (<= 1.0 is the target) and for tokens/s (>= 1.0). Run by hand: timings on shared machines
are noisy, so each is the median of several repeats.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import GEMMA_MODEL, generate, load  # noqa: E402
from model.allocator import keep_freed_memory  # noqa: E402
from model.weights import gemma_gguf  # noqa: E402
from bench_model import TEXT  # noqa: E402 (the same text as SmolLM2's bench)
from timing import median  # noqa: E402 (bench/timing.py)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def resident_mb(names: list[str | None]) -> float:
    """VmRSS of a fresh process that loads these models (None: the default), keeps them and runs each once on a
    short prompt (weights read from a memory-mapped cache count only once touched)."""
    code = (f"import sys, torch; sys.path.insert(0, 'bench'); from model import load; from bench_gemma import rss_mb; "
            f"models = [load(n) for n in {names!r}]; [net(torch.tensor([[2, 3, 4]])) for net, _ in models]; "
            f"print(rss_mb())")
    return float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split()[-1])


def warm_load_s() -> float:
    code = f"import time; t = time.perf_counter(); from model import load; load({GEMMA_MODEL!r}); " \
           f"print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout) for _ in range(3)]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    keep_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    net, enc = load(GEMMA_MODEL)  # fetched and converted first, if need be
    print(f"load from the cache, fresh process incl. imports: {warm_load_s():6.2f} s")

    from transformers import AutoModelForCausalLM

    from playground.runner import ModelRunner

    gguf = gemma_gguf()
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager",
                                              dtype=torch.float32).eval()
    runner = ModelRunner(net, enc, max_tokens=512, background_lens=False)
    ids = enc.encode_prompt(TEXT * 40)
    for T in (128, 512):
        tokens = torch.tensor([ids[:T]])
        text = enc.decode(ids[1:T])
        analyze = median(lambda: runner.analyze_tokens(ids[:T], text, [], False, None, False), repeats)
        cached = median(lambda: net.run_with_cache(tokens), repeats)

        def reference():
            with torch.no_grad():
                hf(tokens, output_attentions=True, output_hidden_states=True)

        theirs = median(reference, repeats)
        print(f"T={T:4d}  Analyze {analyze * 1000:7.1f} ms (ratio {analyze / theirs:.2f})   run_with_cache (all "
              f"{len(net.hook_points)} hooks) {cached * 1000:7.1f} ms (ratio {cached / theirs:.2f})   "
              f"transformers forward (attentions + hidden states) {theirs * 1000:7.1f} ms   (target <= 1.0)")

    prompt, n = enc.encode_prompt("Write a short poem about the sea."), 64

    def ours_decode():
        assert len(list(generate(net, prompt, n))) == n

    def hf_decode():
        t = torch.tensor([prompt])
        with torch.no_grad():
            hf.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=n, min_new_tokens=n, do_sample=False)

    decode_repeats = 2 if args.quick else 3
    ours_tps, hf_tps = n / median(ours_decode, decode_repeats), n / median(hf_decode, decode_repeats)
    print(f"greedy decode, {n} tokens after a {len(prompt)}-token prompt: ours {ours_tps:5.1f} tok/s   "
          f"transformers generate {hf_tps:5.1f} tok/s   ratio {ours_tps / hf_tps:.2f}  (target >= 1.0)")
    for label, names in (("Gemma alone", [GEMMA_MODEL]), ("Gemma and SmolLM2 together", [GEMMA_MODEL, None])):
        print(f"resident memory, {label}, fresh process: {resident_mb(names):6.0f} MB")

if __name__ == "__main__":
    main()
