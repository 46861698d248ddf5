"""Every model-using view of the app, on another device or dtype, against the CPU in float32.

    python bench/device_parity.py --device cuda                  # on a GPU machine: every view, GPU vs CPU
    python bench/device_parity.py --device cuda --dtype bfloat16
    python bench/device_parity.py --device cpu --dtype bfloat16  # runs anywhere

The app's tabs reach the model only through `playground.runner.ModelRunner`. This builds two runners on the
same weights, the reference on the CPU in float32 and the other on --device in --dtype, calls each runner method
the tabs call (an analysis, a layer's q/k/v and pattern, the lens, inside a block, generation steps with their
attention, every decoding strategy, ablations, a layer sweep, attribution, patching, routes, a score split, a
head's logits, embeddings) with the same inputs, and compares every number they return: float arrays by their
largest difference over the array's largest magnitude, integer and boolean arrays (token ids, ranks, colour
levels) by the fraction that differ, and every tensor returned must be in host memory, as the runner promises.
It prints a line per view (ok, what differs and by how much, or the error raised) and exits with status 1 when
any view raised or differed beyond the tolerances. Timings are left out. Nothing in the tests needs a GPU; the
tests run this on the CPU (a copy of the model, and one with a weight changed, which it must catch).

Before the app's `--device cuda` is allowed, this must pass on a GPU.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import ModelEncoding, Transformer  # noqa: E402
from model.contrast import contrastive, dola  # noqa: E402
from model.decoding import beam_search, greedy, sampled, speculative, token_log_probs  # noqa: E402
from model.interventions import SWEEPS, Ablation  # noqa: E402
from model.sampling import SamplerSettings  # noqa: E402
from playground.runner import ModelRunner  # noqa: E402

PROMPT = "The capital of France is Paris, and the capital of Italy is"
CORRUPTED = "The capital of France is Paris, and the capital of Spain is"  # same length for patching, one word apart
TIMINGS = ("second", "time", "elapsed", "speed")  # result fields that are clocks, not the model's numbers
TOLERANCE = {torch.float32: 2e-3, torch.bfloat16: 0.1, torch.float16: 0.05}  # of each array's largest magnitude
ID_FRACTION = {torch.float32: 0.01, torch.bfloat16: 0.2, torch.float16: 0.2}  # of ids that may differ (near-ties)


@dataclasses.dataclass
class Raised:
    """A view that raised instead of returning."""

    error: str


def numbers(value: Any, path: str = "") -> dict[str, Any]:
    """Every number in a view's result, by its path: arrays, tensors (as arrays; a tensor not in host memory is
    recorded as such), scalars, strings; through dataclasses, dicts, lists and tuples. Clock readings are left out."""
    out: dict[str, Any] = {}
    if any(word in path.rsplit(".", 1)[-1].lower() for word in TIMINGS):
        return out
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            out[path] = f"a tensor on {value.device}, not in host memory"
        else:
            out[path] = value.detach().float().numpy() if value.is_floating_point() else value.detach().numpy()
    elif isinstance(value, np.ndarray):
        out[path] = value
    elif isinstance(value, (bool, int, float, np.number)):
        out[path] = np.asarray(value)
    elif isinstance(value, (str, bytes)):
        out[path] = value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            out.update(numbers(getattr(value, field.name), f"{path}.{field.name}"))
    elif isinstance(value, dict):
        for key, item in value.items():
            out.update(numbers(item, f"{path}[{key!r}]"))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            out.update(numbers(item, f"{path}[{i}]"))
    return out  # anything else (locks, callables) is not a number


def differences(reference: dict[str, Any], other: dict[str, Any], dtype: torch.dtype) -> list[str]:
    """What differs between two views' numbers beyond the tolerances for dtype, one line each. Float arrays are
    measured against the largest magnitude of their kind in the view (the arrays whose paths differ only in list
    indices: a patching sweep's rows, each generation step's logits), so that a row of near-zero effects is not
    judged by its own tiny scale; ranks are magnitudes too. Other integer and boolean arrays (token ids, colour
    levels) count the fraction that differ."""
    found = []
    kind = lambda path: re.sub(r"\[\d+\]", "[*]", path)  # noqa: E731
    scales: dict[str, float] = {}
    for path, ref in reference.items():
        if isinstance(ref, np.ndarray) and (ref.dtype.kind == "f" or "rank" in path) and ref.size:
            finite = np.abs(ref[np.isfinite(ref)].astype(np.float64))
            scales[kind(path)] = max(scales.get(kind(path), 0.0), float(finite.max()) if finite.size else 0.0)
    for path, ref in reference.items():
        if path not in other:
            found.append(f"{path}: missing")
            continue
        got = other[path]
        if isinstance(ref, (str, bytes)) or isinstance(got, (str, bytes)):
            if not (isinstance(ref, type(got)) and ref == got):
                found.append(f"{path}: {got!r} where the reference has {ref!r}"[:300])
            continue
        if ref.shape != got.shape:
            found.append(f"{path}: shape {got.shape}, the reference {ref.shape}")
        elif ref.dtype.kind == "f" or got.dtype.kind == "f" or "rank" in path:
            a, b = ref.astype(np.float64), got.astype(np.float64)
            finite = np.isfinite(a) & np.isfinite(b)
            if not np.array_equal(a[~finite], b[~finite], equal_nan=True):
                found.append(f"{path}: NaN or infinity at other places")
            if finite.any():
                worst = float(np.abs(a[finite] - b[finite]).max()) / max(scales.get(kind(path), 0.0), 1e-12)
                if worst > TOLERANCE[dtype]:
                    found.append(f"{path}: differs by {worst:.2e} of the largest magnitude of its kind "
                                 f"(tolerance {TOLERANCE[dtype]:.0e})")
        elif ref.size:
            fraction = float(np.mean(ref != got))
            if fraction > ID_FRACTION[dtype]:
                found.append(f"{path}: {fraction:.1%} of its values differ (tolerance {ID_FRACTION[dtype]:.0%})")
    found += [f"{path}: not in the reference" for path in other if path not in reference]
    return found


def views(runner: ModelRunner, prompt: str = PROMPT, corrupted: str = CORRUPTED) -> dict[str, Any]:
    """Each model-using runner method the tabs call, on the same inputs, by name: its result, or `Raised`.
    `corrupted` (for patching) must have as many tokens as `prompt`."""
    cfg = runner.cfg
    L, H = cfg.n_layers, cfg.n_heads
    results: dict[str, Any] = {}
    state: dict[str, Any] = {}

    def run(name: str, fn: Callable[[], Any]) -> None:
        try:
            results[name] = fn()
        except Exception as e:  # noqa: BLE001 (every view's error is a finding, and the others still run)
            results[name] = Raised(f"{type(e).__name__}: {e}")

    def analyze():
        state["trace"] = trace = runner.analyze(prompt, lens=False)
        state["ids"] = ids = [int(i) for i in trace.ids]
        top = np.argsort(-trace.next_logits)[:2]
        state["a"], state["b"] = int(top[0]), int(top[1])
        state["corrupted"] = runner.tokenize(corrupted, False)[0]
        assert len(state["corrupted"]) == len(ids), "the corrupted prompt must have the clean one's length"
        return {name: getattr(trace, name) for name in ("ids", "surprisal", "next_logits", "resid", "head_stats",
                                                        "thumbnails")}

    def generation():
        trace = state["trace"]
        cache = runner.generation_cache(trace, 3)
        token, out = int(np.argmax(trace.next_logits)), []
        for _ in range(3):
            logits, attention = runner.step(token, cache, attention=True)
            out.append((token, logits, attention))
            token = int(np.argmax(logits))
        return out

    def patching(sweep: str):
        clean, corrupted, rows = runner.patching(state["ids"], state["corrupted"], SWEEPS[sweep], state["a"],
                                                 state["b"])
        return clean, corrupted, list(rows)

    trace = lambda: state["trace"]  # noqa: E731
    ids = lambda: state["ids"]  # noqa: E731
    settings = SamplerSettings(temperature=0.8, top_k=40, top_p=0.95)
    run("analyze", analyze)
    if isinstance(results["analyze"], Raised):
        return results  # the rest reads its trace
    T = len(state["ids"])
    run("layer 0", lambda: runner.layer(trace(), 0))
    run(f"layer {L - 1}", lambda: runner.layer(trace(), L - 1))
    run("logit lens (after each block and each attention)", lambda: runner.lens(trace(), with_mid=True))
    run("inside a block", lambda: runner.block(trace(), L // 2, T - 1))
    run("lens logits", lambda: runner.lens_logits(trace().resid[-1]))
    run("next logits", lambda: runner.next_logits(ids()))
    run("activations (every hook)", lambda: runner.activations(ids()))
    run("generation steps with attention", generation)
    run("greedy", lambda: runner.run_strategy(greedy, ids(), 6)[0])
    run("beam search", lambda: runner.run_strategy(beam_search, ids(), 3, 6))
    run("sampled", lambda: runner.run_strategy(sampled, ids(), 6, settings, 0))
    run("speculative", lambda: runner.run_strategy(speculative, ids(), max(1, L // 2), 3, 6))
    run("DoLa", lambda: runner.run_strategy(dola, ids(), 4, list(range(0, L, 2))))
    run("contrastive search", lambda: runner.run_strategy(contrastive, ids(), 4, 4, 0.6))
    run("token log-probs", lambda: runner.run_strategy(token_log_probs, ids()[:-3], ids()[-3:]))
    run("ablate two heads (zero)", lambda: runner.ablate(trace(), Ablation(heads=frozenset({(0, 0), (L - 1, H - 1)}))))
    run("ablate an attention block (mean)", lambda: runner.ablate(trace(), Ablation(attn=frozenset({L // 2}),
                                                                                    mode="mean")))
    run("layer sweep", lambda: runner.layer_sweep(trace(), "zero", state["a"], state["b"]))
    run("attribution", lambda: runner.attribute(ids(), state["a"], state["b"]))
    run("patching, residual stream", lambda: patching("resid"))
    run("patching, each head", lambda: patching("heads"))
    run("routes", lambda: runner.routes(trace()))
    run("why a head attends (score split)", lambda: runner.score_split(trace(), L - 1, 0, T - 1, 0))
    run("a head's logits", lambda: runner.head_logits(trace(), L - 1, 0, T - 1))
    run("embeddings", lambda: runner.embeddings(ids()[:6]))
    return results


def compare(reference: ModelRunner, other: ModelRunner, dtype: torch.dtype = torch.float32, prompt: str = PROMPT,
            corrupted: str = CORRUPTED) -> dict[str, list[str]]:
    """Each view's findings (empty: it agrees) on `other` against `reference`."""
    ours, theirs = views(reference, prompt, corrupted), views(other, prompt, corrupted)
    report = {}
    for name in dict.fromkeys([*ours, *theirs]):
        ref, got = ours.get(name), theirs.get(name)
        if isinstance(ref, Raised):
            report[name] = [f"the reference raised {ref.error}"]
        elif isinstance(got, Raised):
            report[name] = [f"raised {got.error}"]
        elif got is None or ref is None:
            report[name] = ["not run"]
        else:
            report[name] = differences(numbers(ref), numbers(got), dtype)
    return report


def runner_for(net: Transformer, enc: ModelEncoding) -> ModelRunner:
    return ModelRunner(net, enc, background_lens=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--model", default=None, help="a model name or path (default: the default model)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no GPU here (torch.cuda.is_available() is False); try --device cpu --dtype bfloat16")
        return
    from model import load

    dtype = getattr(torch, args.dtype)
    net, enc = load(args.model)
    other = copy.deepcopy(net).to(device=args.device, dtype=dtype)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{args.device} ({where}) in {args.dtype} against the CPU in float32, torch {torch.__version__}")
    report = compare(runner_for(net, enc), runner_for(other, enc), dtype)
    for name, found in report.items():
        print(f"  {'ok' if not found else 'DIFFERS'}  {name}")
        for line in found[:6]:
            print(f"        {line}")
        if len(found) > 6:
            print(f"        ... and {len(found) - 6} more")
    bad = [name for name, found in report.items() if found]
    print(f"{len(report) - len(bad)} of {len(report)} views agree" + (f"; not: {', '.join(bad)}" if bad else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
