"""The HTTP API: stable endpoints for scripts and agents, each validating its input and answering errors as data.

Every endpoint returns a dict; bad input (an empty or oversized prompt, a prompt that is not text, NaN or
out-of-range numbers, a layer that does not exist) comes back as `{"error": "..."}` and the server keeps serving.
Each setting is checked by the same function the tabs and the notebook use (`view`, and the sampler's control
table, with the ranges the sliders have), whatever its type on the wire. Each call tokenizes its prompt once; where
the prompt was changed to be encoded, the answer's `notes` say how. The docstrings' ranges are the loaded model's
(`register` fills them in).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import gradio as gr
import torch

from model.interventions import SWEEPS, Ablation, sweep_cost
from model.routes import named_terms, route_graph
from model.sampling import distribution

from .runner import ModelRunner, PromptError
from .tab_intervene import heads_of
from .tab_sampler import CONTROLS, sampler_settings
from .trace import HEAD_STAT_KEYS, Trace
from .ui import ANALYSES_AT_ONCE, HEAVY_JOBS_AT_ONCE, MAX_SWEEP_S, MODEL_CONCURRENCY, visitor
from .ui import bind as bind_runner
from .view import head_of, layer_of, number, position_of, text_of, threshold_of

MAX_TOP_N = 200


def tokenize(runner: ModelRunner, prompt: str, chat: bool = False) -> dict:
    """Split a prompt into the loaded model's tokens.

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
        layer: the layer, LAYERS.
        head: the query head, HEADS.
        chat: wrap the prompt in the chat template first.

    Returns:
        {ids, text, weights[query][key], kv_head, head_stats}, or {error}.
    """
    cfg = runner.cfg
    try:
        layer, head = layer_of(cfg, layer), head_of(cfg, head)
        trace = runner.analyze(prompt, bool(chat), lens=False)  # no tab will show its lens
    except PromptError as e:
        return {"error": str(e)}
    return {**_notes(trace),
        "model": cfg.name, "layer": layer, "head": head, "kv_head": cfg.kv_head_of(head), "ids": trace.ids.tolist(),
        "text": [b.decode("utf-8", errors="replace") for b in trace.token_bytes],
        "weights": runner.layer(trace, layer).pattern[head].round(6).tolist(),
        "head_stats": dict(zip(HEAD_STAT_KEYS, map(float, trace.head_stats[layer, head]))),
    }


FIRST_SETTINGS = 6  # /next_token's first settings, before order, chat and n (their places since the first release)


def next_token(runner: ModelRunner, prompt: str, *args, **kwargs) -> dict:
    """The next-token distribution after a prompt, through a sampler chain (Hugging Face or llama.cpp order).

    Args:
        prompt: the text to continue.
SETTINGS_ARGS
        order: "hf" (transformers) or "llama.cpp" (temperature last).
        chat: wrap the prompt in the chat template first.
        n: how many of the most likely tokens to return (1-200).

    Returns:
        {ids, text, probs, kept (tokens left after the chain)}, or {error}.
    """
    values = inspect.signature(next_token).bind(runner, prompt, *args, **kwargs)
    values.apply_defaults()
    given = dict(values.arguments)
    try:
        settings = sampler_settings(runner, given.pop("order"), **{c.name: given[c.name] for c in CONTROLS})
        n = number(given["n"], "n", 1, MAX_TOP_N, whole=True)
        ids, _, notes = runner.tokenize(prompt, bool(given["chat"]))
        logits = torch.from_numpy(runner.next_logits(ids))
    except PromptError as e:
        return {"error": str(e)}
    probs = distribution(logits, settings, prompt_ids=ids)
    kept = int((probs > 0).sum())
    top = probs.topk(min(n, kept))
    return {"model": runner.cfg.name, "ids": top.indices.tolist(), "probs": [round(float(p), 6) for p in top.values],
            "text": [runner.token_bytes(int(i)).decode("utf-8", "replace") for i in top.indices], "kept": kept,
            **({"notes": notes} if notes else {})}


def _sampler_parameters() -> list[inspect.Parameter]:
    """/next_token's parameters after the prompt: the sampler's controls (the table the tab is built from, so a new
    stage reaches the API), with order, chat and n after the first six, where they have always been."""
    def setting(c) -> inspect.Parameter:
        return inspect.Parameter(c.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=c.default,
                                 annotation=int if c.whole else float)
    p = inspect.Parameter
    rest = [p("order", p.POSITIONAL_OR_KEYWORD, default="hf", annotation=str),
            p("chat", p.POSITIONAL_OR_KEYWORD, default=False, annotation=bool),
            p("n", p.POSITIONAL_OR_KEYWORD, default=10, annotation=int)]
    return [*map(setting, CONTROLS[:FIRST_SETTINGS]), *rest, *map(setting, CONTROLS[FIRST_SETTINGS:])]


_FIXED = [inspect.Parameter("runner", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ModelRunner),
          inspect.Parameter("prompt", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)]
next_token.__signature__ = inspect.Signature([*_FIXED, *_sampler_parameters()], return_annotation=dict)
next_token.__annotations__ = {**{q.name: q.annotation for q in next_token.__signature__.parameters.values()},
                              "return": dict}
next_token.__doc__ = next_token.__doc__.replace("SETTINGS_ARGS", "\n".join(
    f"        {c.name}: {c.label}, {c.low:g} to {c.high:g}." for c in CONTROLS))


def _notes(trace: Trace) -> dict:
    """The answer's `notes`, when the prompt was changed to be encoded."""
    return {"notes": list(trace.notes)} if trace.notes else {}


def lens(runner: ModelRunner, prompt: str, position: int = -1, chat: bool = False, k: int = 5) -> dict:
    """The logit lens: what each layer's residual stream would predict at one position if decoding stopped there.

    Args:
        prompt: the text to run the model on.
        position: the token position to read (negative counts from the end; -1 = the last token).
        chat: wrap the prompt in the chat template first.
        k: how many of each layer's most likely next tokens to return (1-10).

    Returns:
        {rows (embed, L0 .. LAST), token (the text at that position), top: per row [{text, p}], rank_of_final}, or
        {error}.
    """
    try:
        k = number(k, "k", 1, 10, whole=True)
        ids, text, notes = runner.tokenize(prompt, bool(chat))
        position = position_of(len(ids), position)
        trace = runner.analyze_tokens(ids, text, notes, bool(chat), lens=False)
        rows, result = runner.lens(trace, False)
    except PromptError as e:
        return {"error": str(e)}
    top_ids, top_probs = result.top_ids[:, position, :k], result.top_probs[:, position, :k]

    def text(token: int) -> str:
        return runner.token_bytes(int(token)).decode("utf-8", "replace")

    return {**_notes(trace), "model": runner.cfg.name, "rows": rows, "position": position,
            "token": text(trace.ids[position]),
            "top": [[{"text": text(t), "p": round(float(p), 6)} for t, p in zip(ids_row, p_row)]
                    for ids_row, p_row in zip(top_ids.tolist(), top_probs.tolist())],
            "rank_of_final": result.rank_final[:, position].tolist()}


def token_of(runner: ModelRunner, text: str, name: str) -> int:
    token = runner.first_token(text) if isinstance(text, str) and text.strip() else None
    if token is None:
        raise PromptError(f"{name} must be a non-empty text (its first token is used), got {text!r}")
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
        ids, _, notes = runner.tokenize(prompt, bool(chat))
        a_id, b_id = token_of(runner, a, "a"), token_of(runner, b, "b")
        result = runner.attribute(ids, a_id, b_id)
    except PromptError as e:
        return {"error": str(e)}
    return {**({"notes": notes} if notes else {}), "model": runner.cfg.name, "a": a_id, "b": b_id,
            "labels": result.labels,
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
        threshold = threshold_of(threshold)
        ids, text, notes = runner.tokenize(prompt, bool(chat))
        position = position_of(len(ids), position)
        trace = runner.analyze_tokens(ids, text, notes, bool(chat), lens=False)
        graph = route_graph(runner.routes(trace), position, threshold)
    except PromptError as e:
        return {"error": str(e)}
    return {**_notes(trace), "model": runner.cfg.name,
            "tokens": [b.decode("utf-8", "replace") for b in trace.token_bytes],
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
        layer: the layer, LAYERS.
        head: the query head, HEADS.
        query: the attending position (negative counts from the end; -1 = last).
        key: the attended position, 0 to query (negative counts from the end).
        chat: wrap the prompt in the chat template first.

    Returns:
        {labels (components), terms[query side][key side] (they sum to total), total (the model's own q.k/sqrt(d)),
        largest: [{name, value}], weight (the attention weight)}, or {error}.
    """
    cfg = runner.cfg
    try:
        layer, head = layer_of(cfg, layer), head_of(cfg, head)
        ids, text, notes = runner.tokenize(prompt, bool(chat))
        query, key = position_of(len(ids), query, "query"), position_of(len(ids), key, "key")
        if key > query:
            raise PromptError(f"key must be at or before the query ({query}): a head attends only to earlier tokens")
        trace = runner.analyze_tokens(ids, text, notes, bool(chat), lens=False)
        split = runner.score_split(trace, layer, head, query, key)
        weight = float(runner.layer(trace, layer).pattern[head, query, key])
    except PromptError as e:
        return {"error": str(e)}
    text = [repr(b.decode("utf-8", "replace")) for b in trace.token_bytes]
    return {**_notes(trace), "model": cfg.name, "layer": layer, "head": head, "query": query, "key": key,
            "labels": split.labels,
            "terms": split.terms.numpy().round(6).tolist(), "total": split.score, "weight": round(weight, 6),
            "largest": [{"name": n, "value": round(v, 6)} for n, v in named_terms(split, text[query], text[key])]}



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
        picked = heads_of(cfg, text_of(heads or "", "heads"))
        layers = {name: frozenset(layer_of(cfg, l, name) for l in values or [])
                  for name, values in (("attention_layers", attention_layers), ("mlp_layers", mlp_layers))}
        if mode not in ("zero", "mean"):
            raise PromptError(f"mode must be 'zero' or 'mean', got {mode!r}")
        ablation = Ablation(picked, layers["attention_layers"], layers["mlp_layers"], mode=mode)
        if ablation.empty:
            raise PromptError("nothing to ablate: give heads, attention_layers or mlp_layers")
        trace = runner.analyze(prompt, bool(chat), lens=False)
        top = [int(t) for t in torch.from_numpy(trace.next_logits).topk(2).indices]
        a_id = token_of(runner, a, "a") if a else top[0]
        b_id = token_of(runner, b, "b") if b else next(t for t in top if t != a_id)
        after = runner.ablate(trace, ablation)
    except PromptError as e:
        return {"error": str(e)}

    def top10(logits) -> list[dict]:
        p = torch.from_numpy(logits).softmax(-1)
        best = p.topk(10)
        return [{"text": runner.token_bytes(int(t)).decode("utf-8", "replace"), "id": int(t), "p": round(float(v), 6)}
                for v, t in zip(best.values, best.indices)]

    before = trace.next_logits
    return {**_notes(trace), "model": cfg.name, "before": top10(before), "after": top10(after),
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
    except PromptError as e:
        yield {"error": str(e)}


def _patch(runner: ModelRunner, clean: str, corrupted: str, a: str, b: str, sweep: str) -> Iterator[dict]:
    """/patch's steps: a progress line after each layer, then the result."""
    if sweep not in SWEEPS:
        raise PromptError(f"sweep must be one of {list(SWEEPS)}, got {sweep!r}")
    kind = SWEEPS[sweep]
    clean_ids, _, _ = runner.tokenize(clean, False)
    corrupted_ids, _, _ = runner.tokenize(corrupted, False)
    cfg = runner.cfg
    estimate = runner.estimate_seconds(sweep_cost(kind, cfg.n_layers, len(clean_ids), cfg.n_heads))
    if estimate > MAX_SWEEP_S:
        raise PromptError(f"this sweep would take about {estimate:.0f} s; the limit is {MAX_SWEEP_S} s")
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
    API page and the tools (they run the model many times). The docstrings name the loaded model's ranges."""
    cfg = runner.cfg

    def bind(fn):
        bound = bind_runner(fn, runner)
        bound.__doc__ = (fn.__doc__.replace("LAYERS", f"0 to {cfg.n_layers - 1}")
                         .replace("HEADS", f"0 to {cfg.n_heads - 1}").replace("LAST", str(cfg.n_layers - 1)))
        return bound

    gr.api(bind(tokenize), api_name="tokenize")
    gr.api(bind(attention), api_name="attention", concurrency_limit=ANALYSES_AT_ONCE)  # batched analyses
    gr.api(bind(next_token), api_name="next_token", concurrency_limit=MODEL_CONCURRENCY)
    gr.api(bind(lens), api_name="lens", concurrency_limit=MODEL_CONCURRENCY)
    gr.api(bind(attribute), api_name="attribute", concurrency_limit=MODEL_CONCURRENCY)
    gr.api(bind(routes), api_name="routes", concurrency_limit=MODEL_CONCURRENCY)
    gr.api(bind(why_attend), api_name="why_attend", concurrency_limit=MODEL_CONCURRENCY)
    gr.api(bind(ablate), api_name="ablate", concurrency_limit=MODEL_CONCURRENCY, api_visibility="undocumented")
    gr.api(bind(patch), api_name="patch", concurrency_limit=HEAVY_JOBS_AT_ONCE, concurrency_id="heavy_job",
           api_visibility="undocumented")
