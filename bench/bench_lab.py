"""Lab benchmark: the window sweep at 256 tokens, against transformers with the same 4-D masks (run by hand).

    python bench/bench_lab.py

Times 8 window sizes at 256 tokens through the hooks (one masked forward each, as the Lab's sweep runs them),
the same 8 masks through transformers (eager attention, the additive 4-D mask), and 8 unmasked forwards of this
model; prints the ratios, the Lab's whole sweep (no sinks and 4 sinks) through the runner, a flash-attention
view at 256 tokens, and the sweep's losses: StreamingLLM's finding measured on SmolLM2.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from model import load  # noqa: E402
from model.allocator import keep_freed_memory  # noqa: E402
from model.lab import MaskSpec, additive_mask, attention_mask, masked_loss, sweep_windows  # noqa: E402
from model.weights import default_gguf  # noqa: E402
from playground import tab_lab  # noqa: E402
from playground.runner import ModelRunner  # noqa: E402
from timing import median  # noqa: E402 (bench/timing.py)

T = 256
PASSAGE = (  # plain prose, no passage repeated (a repeated one would let a long window copy it)
    "The first telescopes were made in the Netherlands around 1608 by spectacle makers who noticed that two lenses, "
    "held at the right distance, made a distant weathervane look close. Within a year Galileo had heard of the "
    "device, ground his own lenses, and turned a tube of about twenty magnifications toward the night sky. What he "
    "saw changed astronomy. The Moon had mountains and valleys whose shadows moved with the sunlight. Jupiter was "
    "circled by four small points of light that changed position from night to night, which he argued were moons. "
    "Venus showed phases like our own Moon, something that made sense only if it went around the Sun. The Milky Way "
    "dissolved into countless faint stars. Later instrument makers replaced lenses with curved mirrors, because a "
    "mirror bends every colour of light the same way and can be made far larger than a lens. Isaac Newton built "
    "one of the first reflecting telescopes in 1668, and by the nineteenth century great mirrors of speculum metal, "
    "then of silvered glass, let astronomers measure the distances of nearby stars and split the light of distant "
    "ones into spectra. Each improvement in light gathering opened a further layer of the universe to view, from "
    "the spiral shape of other galaxies to the faint glow left over from the early universe itself, and the "
    "search goes on."
)


def main() -> None:
    keep_freed_memory()
    torch.set_grad_enabled(False)
    net, enc = load()
    ids = enc.encode(PASSAGE)[:T]
    assert len(ids) == T, len(ids)
    tokens = torch.tensor([ids])
    windows = sweep_windows(T)
    layers = range(net.cfg.n_layers)
    print(f"{T} tokens, {len(windows)} windows {windows}, {torch.get_num_threads()} threads")

    def ours() -> list[float]:
        return [masked_loss(net, ids, MaskSpec("window", window=w), layers) for w in windows]

    def plain() -> None:
        for _ in windows:
            net(tokens)

    from transformers import AutoModelForCausalLM

    gguf = default_gguf()
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager",
                                              dtype=torch.float32).eval()
    masks = [additive_mask(attention_mask(MaskSpec("window", window=w), T)) for w in windows]

    def theirs() -> list[float]:
        return [float(F.cross_entropy(hf(tokens, attention_mask=m).logits[0, :-1], tokens[0, 1:])) for m in masks]

    a, b = ours(), theirs()
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-3, (a, b)
    t_ours, t_hf, t_plain = median(ours, 3), median(theirs, 3), median(plain, 3)
    print(f"8 windows through the hooks          {t_ours:6.2f} s")
    print(f"8 windows, transformers (4-D masks)  {t_hf:6.2f} s   ours / transformers = {t_ours / t_hf:.2f}")
    print(f"8 unmasked forwards (fused SDPA)     {t_plain:6.2f} s   ours / unmasked = {t_ours / t_plain:.2f}")

    runner = ModelRunner(net, enc, background_lens=False)
    started = time.perf_counter()
    points = list(runner.mask_sweep(ids, windows, (0, 4)))
    print(f"the Lab's sweep, 0 and 4 sinks ({len(points)} runs): {time.perf_counter() - started:.2f} s")
    trace = runner.analyze(enc.decode(ids), lens=False)
    took = median(lambda: tab_lab.flash(runner, trace, 3, 4, 16, 16, 1), 3)
    print(f"flash view, {trace.n_tokens} tokens in 16 x 16 tiles: {took * 1000:.0f} ms")
    print("\nloss (nats per token) by window W:")
    by = {(p.window, p.sinks): p.loss for p in points}
    print("W      " + "".join(f"{w:>8}" for w in windows))
    for sinks in (0, 4):
        print(f"{sinks} sinks" + "".join(f"{by[w, sinks]:8.3f}" if (w, sinks) in by else " " * 8 for w in windows))


if __name__ == "__main__":
    main()
