"""The HTTP API: stable endpoints for scripts and agents, each validating its input and answering errors as data.

Every endpoint returns a dict; bad input (an empty or oversized prompt, NaN or out-of-range
numbers, a layer that does not exist) comes back as `{"error": "..."}` and the server keeps
serving. Numbers are checked by one validator, `number`, whatever their type on the wire.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import gradio as gr
import torch

from model.interventions import SWEEPS, Ablation, sweep_cost
from model.routes import named_terms, route_graph
from model.sampling import SamplerSettings, distribution

from .runner import ModelRunner, PromptError
from .trace import HEAD_STAT_KEYS
from .ui import ANALYSES_AT_ONCE, HEAVY_JOBS_AT_ONCE, MAX_SWEEP_S, MODEL_CONCURRENCY, bind, number, visitor

MAX_TOP_N = 200


def tokenize(runner: ModelRunner, prompt: str, chat: bool = False) -> dict:
    """Split a prompt into the model's tokens (SmolLM2's byte-level BPE).

    Args:
        prompt: the text to tokenize.
        chat: wrap it in the model's chat template first.

    Returns:
        {ids, bytes (hex per token), text (per token), n_tokens, notes}, or {error}.
    """
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
    """One attention head's pattern on a prompt: how much each token (query) attends to each earlier one (key).

    Args:
        prompt: the text to run the model on.
        layer: the layer, 0 to n_layers - 1 (SmolLM2: 0-29).
        head: the query head, 0 to n_heads - 1 (SmolLM2: 0-8).
        chat: wrap the prompt in the chat template first.

    Returns:
        {ids, text, weights[query][key], kv_head, head_stats}, or {error}.
    """
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
               min_p: float = 0.0, typical_p: float = 1.0, repetition_penalty: float = 1.0, order: str = "hf",
               chat: bool = False, n: int = 10) -> dict:
    """The next-token distribution after a prompt, through a sampler chain (Hugging Face or llama.cpp order).

    Args:
        prompt: the text to continue.
        temperature: divide the logits by this; 0 = greedy.
        top_k: keep the k most likely tokens; 0 = off.
        top_p: keep the smallest set reaching this probability; 1 = off.
        min_p: drop tokens below min_p times the top probability; 0 = off.
        typical_p: locally typical sampling mass; 1 = off.
        repetition_penalty: penalise tokens already in the prompt; 1 = off.
        order: "hf" (transformers) or "llama.cpp" (temperature last).
        chat: wrap the prompt in the chat template first.
        n: how many of the most likely tokens to return (1-200).

    Returns:
        {ids, text, probs, kept (tokens left after the chain)}, or {error}.
    """
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


def lens(runner: ModelRunner, prompt: str, position: int = -1, chat: bool = False, k: int = 5) -> dict:
    """The logit lens: what each layer's residual stream would predict at one position if decoding stopped there.

    Args:
        prompt: the text to run the model on.
        position: the token position to read (negative counts from the end; -1 = the last token).
        chat: wrap the prompt in the chat template first.
        k: how many of each layer's most likely next tokens to return (1-10).

    Returns:
        {rows (embed, L0 .. L29), token (the text at that position), top: per row [{text, p}], rank_of_final}, or
        {error}.
    """
    try:
        k = number(k, "k", 1, 10, whole=True)
        ids, _, _ = runner.tokenize(prompt, bool(chat))
        position = number(position, "position", -len(ids), len(ids) - 1, whole=True) % len(ids)
        trace = runner.analyze(prompt, bool(chat), lens=False)
        rows, result = runner.lens(trace, False)
    except (PromptError, ValueError) as e:
        return {"error": str(e)}
    top_ids, top_probs = result.top_ids[:, position, :k], result.top_probs[:, position, :k]

    def text(token: int) -> str:
        return runner.token_bytes(int(token)).decode("utf-8", "replace")

    return {"model": runner.cfg.name, "rows": rows, "position": position, "token": text(trace.ids[position]),
            "top": [[{"text": text(t), "p": round(float(p), 6)} for t, p in zip(ids_row, p_row)]
                    for ids_row, p_row in zip(top_ids.tolist(), top_probs.tolist())],
            "rank_of_final": result.rank_final[:, position].tolist()}


def token_of(runner: ModelRunner, text: str, name: str) -> int:
    token = runner.first_token(text) if isinstance(text, str) and text.strip() else None
    if token is None:
        raise ValueError(f"{name} must be a non-empty text (its first token is used), got {text!r}")
    return token


def attribute(runner: ModelRunner, prompt: str, a: str, b: str, chat: bool = False) -> dict:
    """Direct logit attribution: how much each component (the embedding, each layer's attention and MLP, each head)
    pushes the logit of token a above token b at the end of the prompt.

    Args:
        prompt: the text to run the model on.
        a: a text whose first token is the one to explain (e.g. " Paris").
        b: a text whose first token is the alternative (e.g. " Rome").
        chat: wrap the prompt in the chat template first.

    Returns:
        {labels, parts (sum to total), heads[layer][head], total (the model's logit difference), scale}, or {error}.
    """
    try:
        ids, _, _ = runner.tokenize(prompt, bool(chat))
        a_id, b_id = token_of(runner, a, "a"), token_of(runner, b, "b")
        result = runner.attribute(ids, a_id, b_id)
    except (PromptError, ValueError) as e:
        return {"error": str(e)}
    return {"model": runner.cfg.name, "a": a_id, "b": b_id, "labels": result.labels,
            "parts": [round(float(v), 6) for v in result.parts], "heads": result.heads.round(decimals=6).tolist(),
            "total": result.total, "scale": result.scale}


def routes(runner: ModelRunner, prompt: str, position: int = -1, threshold: float = 0.04, chat: bool = False) -> dict:
    """The information-flow routes of one prediction (Ferrando & Voita 2024): which positions, heads and MLPs
    carried the residual stream to the prediction after `position`. Each part's importance to the residual state it
    sums into is max(eps, |y|_1 - |y - part|_1), normalised over the parts; back from the position at the top, the
    parts above the threshold are kept and renormalised.

    Args:
        prompt: the text to run the model on (up to 128 tokens).
        position: the position whose next-token prediction to explain (negative counts from the end; -1 = last).
        threshold: keep parts above this share of their state, between 0 and 1 (the paper uses 0.04).
        chat: wrap the prompt in the chat template first.

    Returns:
        {tokens, position, threshold, edges: [{kind ("attn", "attn_resid", "mlp", "mlp_resid"), layer, source,
        target, head (-1 but for "attn"), importance (renormalised), raw}]}, or {error}.
    """
    try:
        threshold = number(threshold, "threshold", 0, 1)
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold:g}")
        ids, _, _ = runner.tokenize(prompt, bool(chat))
        position = number(position, "position", -len(ids), len(ids) - 1, whole=True) % len(ids)
        trace = runner.analyze(prompt, bool(chat), lens=False)
        graph = route_graph(runner.routes(trace), position, threshold)
    except (PromptError, ValueError) as e:
        return {"error": str(e)}
    return {"model": runner.cfg.name, "tokens": [b.decode("utf-8", "replace") for b in trace.token_bytes],
            "position": position, "threshold": threshold,
            "edges": [{"kind": e.kind, "layer": e.layer, "source": e.source, "target": e.target, "head": e.head,
                       "importance": round(e.importance, 6), "raw": round(e.raw, 6)} for e in graph.edges]}


def why_attend(runner: ModelRunner, prompt: str, layer: int, head: int, query: int = -1, key: int = 0,
               chat: bool = False) -> dict:
    """Why an attention head attends where it does: its pre-softmax score of `key` from `query` split exactly into
    (query-side component) x (key-side component) terms, the components being the embedding and every earlier
    layer's attention and MLP outputs (each RMSNorm's scale frozen at this run's, as direct logit attribution does).

    Args:
        prompt: the text to run the model on.
        layer: the layer, 0 to n_layers - 1 (SmolLM2: 0-29).
        head: the query head, 0 to n_heads - 1 (SmolLM2: 0-8).
        query: the attending position (negative counts from the end; -1 = last).
        key: the attended position, 0 to query (negative counts from the end).
        chat: wrap the prompt in the chat template first.

    Returns:
        {labels (components), terms[query side][key side] (they sum to total), total (the model's own q.k/sqrt(d)),
        largest: [{name, value}], weight (the attention weight)}, or {error}.
    """
    cfg = runner.cfg
    try:
        layer = number(layer, "layer", 0, cfg.n_layers - 1, whole=True)
        head = number(head, "head", 0, cfg.n_heads - 1, whole=True)
        ids, _, _ = runner.tokenize(prompt, bool(chat))
        query = number(query, "query", -len(ids), len(ids) - 1, whole=True) % len(ids)
        key = number(key, "key", -len(ids), len(ids) - 1, whole=True) % len(ids)
        if key > query:
            raise ValueError(f"key must be at or before the query ({query}): a head attends only to earlier tokens")
        trace = runner.analyze(prompt, bool(chat), lens=False)
        split = runner.score_split(trace, layer, head, query, key)
        weight = float(runner.layer(trace, layer).pattern[head, query, key])
    except (PromptError, ValueError) as e:
        return {"error": str(e)}
    text = [repr(b.decode("utf-8", "replace")) for b in trace.token_bytes]
    return {"model": cfg.name, "layer": layer, "head": head, "query": query, "key": key, "labels": split.labels,
            "terms": split.terms.numpy().round(6).tolist(), "total": split.score, "weight": round(weight, 6),
            "largest": [{"name": n, "value": round(v, 6)} for n, v in named_terms(split, text[query], text[key])]}


HEAD = re.compile(r"^\s*L(\d+)\s*H(\d+)\s*$", re.IGNORECASE)


def ablate(runner: ModelRunner, prompt: str, heads: str = "", attention_layers: list | None = None,
           mlp_layers: list | None = None, mode: str = "zero", a: str = "", b: str = "", chat: bool = False) -> dict:
    """The next-token distribution with heads or whole blocks ablated (zeroed, or replaced by their mean over the
    prompt's positions).

    Args:
        prompt: the text to run the model on.
        heads: heads to ablate, e.g. "L3H2, L14H0".
        attention_layers: layers whose whole attention block is ablated.
        mlp_layers: layers whose MLP is ablated.
        mode: "zero" or "mean".
        a, b: texts whose first tokens' logit difference is reported (empty: the top two before ablation).
        chat: wrap the prompt in the chat template first.

    Returns:
        {before, after: [{text, p}] of the top 10, logit_difference: {before, after}}, or {error}.
    """
    cfg = runner.cfg
    try:
        picked = set()
        for part in [p for p in (heads or "").split(",") if p.strip()]:
            match = HEAD.match(part)
            if not match:
                raise ValueError(f"heads must look like 'L3H2, L14H0', got {part.strip()!r}")
            picked.add((number(int(match[1]), "head layer", 0, cfg.n_layers - 1, whole=True),
                        number(int(match[2]), "head", 0, cfg.n_heads - 1, whole=True)))
        layers = {name: frozenset(number(l, name, 0, cfg.n_layers - 1, whole=True) for l in values or [])
                  for name, values in (("attention_layers", attention_layers), ("mlp_layers", mlp_layers))}
        ablation = Ablation(frozenset(picked), layers["attention_layers"], layers["mlp_layers"], mode=mode)
        if ablation.empty:
            raise ValueError("nothing to ablate: give heads, attention_layers or mlp_layers")
        trace = runner.analyze(prompt, bool(chat), lens=False)
        top = [int(t) for t in torch.from_numpy(trace.next_logits).topk(2).indices]
        a_id = token_of(runner, a, "a") if a else top[0]
        b_id = token_of(runner, b, "b") if b else next(t for t in top if t != a_id)
        after = runner.ablate(trace, ablation)
    except (PromptError, ValueError) as e:
        return {"error": str(e)}

    def top10(logits) -> list[dict]:
        p = torch.from_numpy(logits).softmax(-1)
        best = p.topk(10)
        return [{"text": runner.token_bytes(int(t)).decode("utf-8", "replace"), "id": int(t), "p": round(float(v), 6)}
                for v, t in zip(best.values, best.indices)]

    before = trace.next_logits
    return {"model": cfg.name, "before": top10(before), "after": top10(after),
            "logit_difference": {"a": a_id, "b": b_id, "before": float(before[a_id] - before[b_id]),
                                 "after": float(after[a_id] - after[b_id])}}




def patch(runner: ModelRunner, clean: str, corrupted: str, a: str, b: str, sweep: str = "resid",
          request: gr.Request | None = None) -> Iterator[dict]:
    """Activation patching: clean activations written into the corrupted run, one patch at a time; the normalised
    logit difference a - b of each (1 = restores the clean answer, 0 = no effect). A long job: {progress} after
    each layer, then the result (gradio_client's predict returns the result); one at a time for each visitor.

    Args:
        clean: the clean prompt.
        corrupted: the corrupted prompt, the same number of tokens.
        a: the clean answer (its first token).
        b: the corrupted answer (its first token).
        sweep: "resid", "attn" or "mlp" (each layer and position), or "heads" (each layer and head).

    Returns:
        {values[layer][position or head], clean_difference, corrupted_difference}, or {error}.
    """
    try:
        with runner.heavy_job(visitor(request), "a patching sweep (/patch)"):
            yield from _patch(runner, clean, corrupted, a, b, sweep)
    except (PromptError, ValueError) as e:
        yield {"error": str(e)}


def _patch(runner: ModelRunner, clean: str, corrupted: str, a: str, b: str, sweep: str) -> Iterator[dict]:
    """/patch's steps: a progress line after each layer, then the result."""
    if sweep not in SWEEPS:
        raise ValueError(f"sweep must be one of {list(SWEEPS)}, got {sweep!r}")
    kind = SWEEPS[sweep]
    clean_ids, _, _ = runner.tokenize(clean, False)
    corrupted_ids, _, _ = runner.tokenize(corrupted, False)
    cfg = runner.cfg
    estimate = runner.estimate_seconds(sweep_cost(kind, cfg.n_layers, len(clean_ids), cfg.n_heads))
    if estimate > MAX_SWEEP_S:
        raise ValueError(f"this sweep would take about {estimate:.0f} s; the limit is {MAX_SWEEP_S} s")
    clean_diff, corrupt_diff, rows = runner.patching(clean_ids, corrupted_ids, kind, token_of(runner, a, "a"),
                                                     token_of(runner, b, "b"))
    values = []
    for layer, row in rows:  # between two layers Gradio may close this generator: the visitor left
        values.append(row.round(6).tolist())
        if len(values) < cfg.n_layers:
            yield {"progress": f"layer {layer + 1} of {cfg.n_layers}"}
    yield {"model": runner.cfg.name, "sweep": kind.name, "values": values, "clean_difference": clean_diff,
           "corrupted_difference": corrupt_diff}


def register(runner: ModelRunner) -> None:
    """Add the endpoints to the Blocks being built (call inside `with gr.Blocks()`). The public ones are also the MCP
    server's tools (all read the model, none change anything); /ablate and /patch are callable but kept out of the
    API page and the tools (they run the model many times)."""
    gr.api(bind(tokenize, runner), api_name="tokenize")
    gr.api(bind(attention, runner), api_name="attention", concurrency_limit=ANALYSES_AT_ONCE)  # batched analyses
    gr.api(bind(next_token, runner), api_name="next_token", concurrency_limit=MODEL_CONCURRENCY)
    gr.api(bind(lens, runner), api_name="lens", concurrency_limit=MODEL_CONCURRENCY)
    gr.api(bind(attribute, runner), api_name="attribute", concurrency_limit=MODEL_CONCURRENCY)
    gr.api(bind(routes, runner), api_name="routes", concurrency_limit=MODEL_CONCURRENCY)
    gr.api(bind(why_attend, runner), api_name="why_attend", concurrency_limit=MODEL_CONCURRENCY)
    gr.api(bind(ablate, runner), api_name="ablate", concurrency_limit=MODEL_CONCURRENCY, api_visibility="undocumented")
    gr.api(bind(patch, runner), api_name="patch", concurrency_limit=HEAVY_JOBS_AT_ONCE, concurrency_id="heavy_job",
           api_visibility="undocumented")
