"""Intervention benchmark: activation-patching sweeps, ablation, the layer sweep and attribution (run by hand).

    python bench/bench_interventions.py

Times each sweep at 16 tokens (target: a full residual sweep within 10 s on two cores) and
compares the batched, start-at-the-layer sweep with TransformerLens's way, one full forward
per patch, measured here on a sample of patches in the same run.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from model import load  # noqa: E402
from model.allocator import keep_freed_memory  # noqa: E402
from model.interventions import SWEEPS, Ablation, sweep_cost  # noqa: E402
from playground.runner import ModelRunner  # noqa: E402

CLEAN = "When Mary and John went to the store late yesterday, John gave a drink to"  # 16 tokens
CORRUPT = "When Mary and John went to the store late yesterday, Mary gave a drink to"


def main() -> None:
    keep_freed_memory()
    net, enc = load()
    runner = ModelRunner(net, enc, background_lens=False)
    clean, corrupt = enc.encode(CLEAN), enc.encode(CORRUPT)
    a, b = enc.encode(" Mary")[0], enc.encode(" John")[0]
    cfg = net.cfg
    print(f"prompts of {len(clean)} tokens; {cfg.n_layers} layers, {cfg.n_heads} heads")
    for key, sweep in SWEEPS.items():
        started = time.perf_counter()
        _, _, rows = runner.patching(clean, corrupt, sweep, a, b)
        for _ in rows:
            pass
        took = time.perf_counter() - started
        estimate = runner.estimate_seconds(sweep_cost(sweep, cfg.n_layers, len(clean), cfg.n_heads))
        print(f"patching sweep, {sweep.name:20s} {took:6.2f} s  (the estimate shown first would now say "
              f"{estimate:.1f} s{'; target < 10 s' if key == 'resid' else ''})")

    # TransformerLens's way: one full forward per patch. A sample, scaled to the whole residual sweep.
    _, cache = net.run_with_cache(torch.tensor([clean]), names_filter=r"hook_resid_pre$")
    samples = []
    for layer, position in ((0, 3), (10, 8), (20, 12), (cfg.n_layers - 1, len(clean) - 1)):
        def setter(x, hook, layer=layer, position=position):
            x = x.clone()
            x[0, position] = cache[f"blocks.{layer}.hook_resid_pre"][0, position]
            return x
        started = time.perf_counter()
        net.run_with_hooks(torch.tensor([corrupt]), [(f"blocks.{layer}.hook_resid_pre", setter)])
        samples.append(time.perf_counter() - started)
    one_by_one = statistics.median(samples) * cfg.n_layers * len(clean)
    print(f"one forward per patch (TransformerLens's generic_activation_patch), residual sweep: "
          f"about {one_by_one:.1f} s")

    trace = runner.analyze(CLEAN, lens=False)
    for name, fn in (
        ("ablating 3 heads", lambda: runner.ablate(trace, Ablation(heads=frozenset({(5, 1), (9, 3), (14, 0)})))),
        ("layer sweep (60 ablations)", lambda: runner.layer_sweep(trace, "zero", a, b)),
        ("direct logit attribution", lambda: runner.attribute(clean, a, b)),
    ):
        fn()
        times = []
        for _ in range(3):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        print(f"{name:28s} {statistics.median(times) * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
