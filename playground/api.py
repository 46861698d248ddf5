"""The HTTP API: stable endpoints for scripts and agents, each validating its input and answering errors as data.

Every endpoint returns a dict; bad input (an empty or oversized prompt, NaN or out-of-range
numbers, a layer that does not exist) comes back as `{"error": "..."}` and the server keeps
serving. Numbers are checked by one validator, `number`, whatever their type on the wire.
"""

from __future__ import annotations

import math

import gradio as gr
import torch

from model.sampling import SamplerSettings, distribution

from .runner import ModelRunner, PromptError
from .trace import HEAD_STAT_KEYS
from .ui import ANALYSES_AT_ONCE, MODEL_CONCURRENCY, bind

MAX_TOP_N = 200


def number(value, name: str, low: float = -math.inf, high: float = math.inf, whole: bool = False) -> float | int:
    """A finite number in [low, high] (whole if asked) from an API argument, else a ValueError naming it."""
    kind = "a whole number" if whole else "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (whole and int(value) != value):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low:g}..{high:g}, got {value!r}")
    return int(value) if whole else float(value)


def tokenize(runner: ModelRunner, prompt: str, chat: bool = False) -> dict:
    """Tokens of a prompt: ids, bytes (hex) and text, with counts."""
    try:
        ids, _, notes = runner.tokenize(prompt, bool(chat))
    except PromptError as e:
        return {"error": str(e)}
    pieces = [runner.token_bytes(i) for i in ids]
    return {
        "model": runner.cfg.name, "ids": ids, "bytes": [p.hex() for p in pieces],
        "text": [p.decode("utf-8", errors="replace") for p in pieces], "n_tokens": len(ids), "notes": notes,
    }


def attention(runner: ModelRunner, prompt: str, layer: int, head: int, chat: bool = False) -> dict:
    """One head's attention pattern for a prompt: weights[query][key], and the tokens."""
    cfg = runner.cfg
    try:
        layer = number(layer, "layer", 0, cfg.n_layers - 1, whole=True)
        head = number(head, "head", 0, cfg.n_heads - 1, whole=True)
        trace = runner.analyze(prompt, bool(chat), lens=False)  # no tab will show its lens
    except (PromptError, ValueError) as e:
        return {"error": str(e)}
    return {
        "model": cfg.name, "layer": layer, "head": head, "kv_head": cfg.kv_head_of(head), "ids": trace.ids.tolist(),
        "text": [b.decode("utf-8", errors="replace") for b in trace.token_bytes],
        "weights": runner.layer(trace, layer).pattern[head].round(6).tolist(),
        "head_stats": dict(zip(HEAD_STAT_KEYS, map(float, trace.head_stats[layer, head]))),
    }


def next_token(runner: ModelRunner, prompt: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               min_p: float = 0.0,
               typical_p: float = 1.0, repetition_penalty: float = 1.0, order: str = "hf", chat: bool = False,
               n: int = 10) -> dict:
    """The next-token distribution after the sampler chain: the n most likely tokens and their probabilities."""
    try:
        settings = SamplerSettings(
            temperature=number(temperature, "temperature"), top_k=number(top_k, "top_k", whole=True),
            top_p=number(top_p, "top_p"), min_p=number(min_p, "min_p"), typical_p=number(typical_p, "typical_p"),
            repetition_penalty=number(repetition_penalty, "repetition_penalty"), order=order,
        )
        n = number(n, "n", 1, MAX_TOP_N, whole=True)
        ids, _, _ = runner.tokenize(prompt, bool(chat))
        logits = torch.from_numpy(runner.next_logits(ids))
    except (PromptError, ValueError) as e:
        return {"error": str(e)}
    probs = distribution(logits, settings, prompt_ids=ids)
    kept = int((probs > 0).sum())
    top = probs.topk(min(n, kept))
    return {"model": runner.cfg.name, "ids": top.indices.tolist(), "probs": [round(float(p), 6) for p in top.values],
            "text": [runner.token_bytes(int(i)).decode("utf-8", "replace") for i in top.indices], "kept": kept}


def register(runner: ModelRunner) -> None:
    """Add the endpoints to the Blocks being built (call inside `with gr.Blocks()`)."""
    gr.api(bind(tokenize, runner), api_name="tokenize")
    gr.api(bind(attention, runner), api_name="attention", concurrency_limit=ANALYSES_AT_ONCE)  # batched analyses
    gr.api(bind(next_token, runner), api_name="next_token", concurrency_limit=MODEL_CONCURRENCY)
