"""A deck of 50 slides exported as one HTML file, timed on the default model (run by hand).

    python bench/bench_deck.py [--slides 50]

The deck cycles through the tour's ten steps over five prompts (each prompt analysed once, as a visitor's walk
keeps them), so it measures what an export costs: analyses, every slide's figure, and the page.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import load  # noqa: E402
from playground import walk  # noqa: E402
from playground.runner import ModelRunner  # noqa: E402

PROMPTS = ["The capital of France is Paris. The capital of Germany is", "def add(a, b):\n    return",
           "Once upon a time, there was a", "The cat sat on the mat. The cat sat on the", "1, 2, 3, 4, 5,"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=50)
    args = parser.parse_args()
    runner = ModelRunner(*load(), background_lens=False)
    lines = ["# Fifty slides"]
    for i in range(args.slides):
        prompt = PROMPTS[(i // 10) % len(PROMPTS)].replace("\n", " ")
        lines += [f"## Slide {i + 1}", f"prompt: {prompt}", "tab: tour", f"step: {i % 10 + 1}", ""]
    deck = walk.load_deck("\n".join(lines))
    assert not deck.problems, deck.problems
    started = time.perf_counter()
    path, note = walk.export(runner, {"fifty": deck}, None, walk.Walk(), "fifty", False)
    seconds = time.perf_counter() - started
    size = Path(path).stat().st_size
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{note} {len(deck.slides)} slides in {seconds:.1f} s ({seconds / len(deck.slides):.2f} s a slide); "
          f"the page is {size / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
