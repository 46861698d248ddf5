"""The routes of one prediction and a score split, timed on the default model (run by hand).

    python bench/bench_routes.py [--tokens 64]

Prints the seconds for every node's importances (`model.routes.flow`: 30 layers x 9 heads x T x T attention parts),
the graph back from the last position, and one attention score split, each against one forward of the same prompt
measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import load  # noqa: E402
from model.routes import flow, route_graph, score_split  # noqa: E402
from model.views import resid_mid  # noqa: E402
from timing import median as median_seconds  # noqa: E402 (bench/timing.py)

WORDS = ("the capital of France is Paris and the capital of Germany is Berlin while the river that runs through "
         "London is the Thames").split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    net, enc = load()
    text, ids = "", []
    while len(ids) < args.tokens:
        text += " " + WORDS[len(text.split()) % len(WORDS)]
        ids = enc.encode(text.strip())
    ids = ids[: args.tokens]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{len(ids)} tokens")
    L = net.cfg.n_layers
    tokens = torch.tensor([ids])
    _, cache = net.run_with_cache(tokens, names_filter=r"hook_resid_pre$|hook_resid_post$")
    resid = torch.stack([cache[f"blocks.{l}.hook_resid_pre"][0] for l in range(L)]
                        + [cache[f"blocks.{L - 1}.hook_resid_post"][0]])
    forward = median_seconds(lambda: net(tokens), args.repeats)
    whole = median_seconds(lambda: flow(net, resid), args.repeats)
    f = flow(net, resid)
    graph = median_seconds(lambda: route_graph(f, len(ids) - 1, 0.04), args.repeats)
    mids = resid_mid(net, resid)
    split = median_seconds(lambda: score_split(net, resid, mids, 15, 4, len(ids) - 1, 0), args.repeats)
    edges = len(route_graph(f, len(ids) - 1, 0.04).edges)
    print(f"one forward                 {forward:7.3f} s")
    print(f"every importance (flow)     {whole:7.3f} s   {whole / forward:6.1f}x a forward")
    print(f"graph at tau 0.04           {graph:7.3f} s   ({edges} edges)")
    print(f"one score split (layer 15)  {split:7.3f} s   {split / forward:6.1f}x a forward")


if __name__ == "__main__":
    main()
