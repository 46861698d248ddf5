"""Arithmetic tab: the model's parameters, FLOPs per token, KV-cache bytes and model FLOPs utilisation, with formulas.

Every number comes from the model's config (`model.arithmetic`); the parameter total is
checked against the weights themselves. MFU needs two measurements, made on this machine on
request: the float32 matmul peak (a micro-benchmark, labelled as such) and tokens per second.
"""

from __future__ import annotations

import gradio as gr
import numpy as np

from model.arithmetic import flops_per_token, kv_cache_bytes, matmul_weights, parameter_counts

from .figures.arithmetic import flops_figure, kv_figure
from .runner import ModelRunner, PromptError
from .trace import Trace
from .ui import HEAVY, READ_ONLY, Event, TabContext, TabView, bind, font_scale, heavy_job, intro
from .view import View

TAB_ID = "arithmetic"

FORMULAS = {
    "embedding": "V·D",
    "attention": "L·(D·H·Dh + 2·D·G·Dh + H·Dh·D)",
    "MLP": "L·3·D·F",
    "norms": "(2L + 1)·D",
    "unembedding": "0 (tied to the embedding)",
}


def parameters_markdown(runner: ModelRunner) -> str:
    cfg = runner.cfg
    counts = parameter_counts(cfg)
    total = sum(counts.values())
    rows = "\n".join(f"| {name} | `{FORMULAS[name] if name != 'unembedding' or cfg.tie_embeddings else 'V·D'}` | "
                     f"{n:,} | {100 * n / total:.1f}% |" for name, n in counts.items())
    return (f"**Parameters** (V {cfg.vocab_size:,}, D {cfg.d_model}, L {cfg.n_layers}, H {cfg.n_heads}, "
            f"G {cfg.n_kv_heads}, Dh {cfg.d_head}, F {cfg.d_mlp})\n\n| component | formula | parameters | share |\n"
            f"|---|---|---|---|\n{rows}\n| **total** | | **{total:,}** | counted from the weights: "
            f"{runner.parameter_count:,} |")


def crossovers(cfg) -> dict[str, int | None]:
    """The context S from which attention costs at least as much per token as the MLPs: counting its q, k, v, o
    projections, and over the context alone (the scores and the weighted values), found by search (sliding-window
    layers stop growing at their window). None: never (every layer windowed, and the MLPs cost more)."""
    def first(reaches) -> int | None:  # attention's cost grows with S: the first S where it reaches the MLPs'
        high = max(1, cfg.max_seq_len)
        while not reaches(high):
            if high > 2**40:
                return None
            high *= 2
        low = 0
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if reaches(mid) else (mid + 1, high)
        return low

    def parts(S: int) -> dict[str, int]:
        return flops_per_token(cfg, S)
    return {"with its projections": first(lambda S: parts(S)["attention projections"]
                                         + parts(S)["attention over the context"] >= parts(S)["MLP"]),
            "over the context alone": first(lambda S: parts(S)["attention over the context"] >= parts(S)["MLP"])}


def windowed_layers(cfg) -> int:
    """How many layers attend through a sliding window."""
    return sum(cfg.window_of(l) is not None for l in range(cfg.n_layers))


def _at(S: int | None) -> str:
    return f"S ≈ {S:,}" if S is not None else "no S within the context"


def flops(runner: ModelRunner, trace: Trace, large: bool = False) -> View:
    """FLOPs per token by part, against the context length, with this prompt's length marked: the Arithmetic tab's
    main view."""
    return _flops(runner, trace.n_tokens, font_scale(large))


def kv_cache(runner: ModelRunner, trace: Trace, large: bool = False) -> View:
    """The KV cache's bytes per token and for the whole context, for multi-head, this model's grouped-query and
    multi-query attention."""
    return _kv(runner, trace.n_tokens, font_scale(large))


VIEWS = {"flops": flops, "kv_cache": kv_cache}
SLIDE = "flops"  # the view a deck's slide of this tab shows


def _flops(runner: ModelRunner, context: int, scale: float) -> View:
    cfg = runner.cfg
    n_mm = matmul_weights(cfg)
    here = flops_per_token(cfg, context)
    total = sum(here.values())
    attention = here["attention projections"] + here["attention over the context"]
    cross = crossovers(cfg)
    text = (f"**FLOPs per token** = 2 × (weights in matrix products) + 4 · L · S · H · Dh for S keys = "
            f"2 × {n_mm:,} + 4 · {cfg.n_layers} · S · {cfg.n_heads} · {cfg.d_head}. At this prompt's S = {context}: "
            f"**{total / 1e6:.1f} MFLOP**: MLPs {100 * here['MLP'] / total:.0f}%, attention "
            f"{100 * attention / total:.0f}% (over the context: "
            f"{100 * here['attention over the context'] / total:.1f}%), "
            f"unembedding {100 * here['unembedding'] / total:.0f}%. Attention with its projections overtakes the "
            f"MLPs at {_at(cross['with its projections'])}; attention over the context alone equals them at "
            f"{_at(cross['over the context alone'])}. (Kaplan et al. write the scores as 2·n_layer·n_ctx·d_attn; "
            f"the weighted sum of values costs as much again. The unembedding counts although its weights are the "
            f"embedding's.)")
    if cfg.sliding_window is not None:
        windowed = windowed_layers(cfg)
        text += (f" On {windowed} of the {cfg.n_layers} layers a query sees at most its last {cfg.sliding_window:,} "
                 f"keys, so there S counts at most {cfg.sliding_window:,}.")
    contexts = np.unique(np.geomspace(1, cfg.max_seq_len, 200).astype(int))
    per_context = [flops_per_token(cfg, int(c)) for c in contexts]
    plot = flops_figure(contexts, {name: np.array([p[name] for p in per_context], float) for name in here}, context,
                        font_scale=scale)
    return View(plot, text, {"flops": total, **{f"crossover {k}": v for k, v in cross.items()}})


def _kv(runner: ModelRunner, context: int, scale: float) -> View:
    cfg = runner.cfg
    layouts = {"multi-head (G = H)": cfg.n_heads, f"grouped-query (G = {cfg.n_kv_heads}, this model)": cfg.n_kv_heads,
               "multi-query (G = 1)": 1}
    per_token = [kv_cache_bytes(cfg, 1, 4, g) for g in layouts.values()]
    whole = [kv_cache_bytes(cfg, cfg.max_seq_len, 4, g) for g in layouts.values()]
    text = (f"**KV cache** = 2 (keys, values) · L · G · Dh · bytes per value = 2 · {cfg.n_layers} · {cfg.n_kv_heads} · "
            f"{cfg.d_head} · 4 = **{per_token[1]:,} bytes per token** in float32 ({per_token[1] // 2:,} in bfloat16); "
            f"{whole[1] / 2**20:.0f} MiB for the full {cfg.max_seq_len:,}-token context, "
            f"{kv_cache_bytes(cfg, context, 4) / 2**10:.0f} KiB for this prompt. Sharing each key/value head among "
            f"{cfg.n_groups} query heads stores {cfg.n_groups}× less than multi-head attention would.")
    if cfg.sliding_window is not None:
        windowed = windowed_layers(cfg)
        kept = per_token[1] // cfg.n_layers * sum(min(cfg.max_seq_len, cfg.window_of(l) or cfg.max_seq_len)
                                                  for l in range(cfg.n_layers))
        text += (f" A cache that keeps only the last {cfg.sliding_window:,} keys on the {windowed} sliding-window "
                 f"layers (as transformers' and llama.cpp's do) needs {kept / 2**20:.0f} MiB for the full context; "
                 f"this app's keeps every position, as the figure counts.")
    figure = kv_figure(list(layouts), per_token, whole, cfg.max_seq_len, font_scale=scale)
    return View(figure, text, {"bytes per token": per_token[1]})


def render(runner: ModelRunner, trace: Trace | None, large: bool):
    """(parameters, FLOPs text, FLOPs plot, KV-cache text, KV-cache plot) for the analysed prompt's context."""
    context, scale = (1 if trace is None else trace.n_tokens), font_scale(large)
    shown_flops, shown_kv = _flops(runner, context, scale), _kv(runner, context, scale)
    return parameters_markdown(runner), shown_flops.note, shown_flops.figure, shown_kv.note, shown_kv.figure


def measure(runner: ModelRunner, trace: Trace | None) -> str:
    """Measure the peak and tokens/s here, now, and the MFU they give."""
    if trace is None:
        return "Analyze a prompt first: its tokens are what is measured."
    cfg = runner.cfg
    try:
        speed = runner.measure_speed(trace.ids.tolist())
    except PromptError as e:
        return f"⚠️ {e}"
    peak = speed["peak_flops"]
    T = int(speed["context"])
    prefill_flops = sum(flops_per_token(cfg, (T + 1) // 2).values())  # on average a prompt token sees half of it
    decode_flops = sum(flops_per_token(cfg, T).values())
    rows = []
    for name, rate, per in (("prefill (the prompt in one forward)", speed["prefill_tokens_per_s"], prefill_flops),
                            ("decode (one token at a time, KV cache)", speed["decode_tokens_per_s"], decode_flops)):
        achieved = rate * per
        rows.append(f"| {name} | {rate:,.1f} | {achieved / 1e9:,.1f} | **{100 * achieved / peak:.1f}%** |")
    weights_gb = 4 * runner.parameter_count / 1e9
    return (f"Measured on this machine, now: float32 matmul peak **{peak / 1e9:,.1f} GFLOP/s** (a micro-benchmark: "
            f"1024 × 1024 matrix products for half a second; not the chip's datasheet). MFU = FLOPs per token × "
            f"tokens/s ÷ peak.\n\n| | tokens/s | GFLOP/s achieved | MFU |\n|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\nDecode reads all {weights_gb:.2f} GB of float32 weights for every token: at "
            f"{speed['decode_tokens_per_s']:.1f} tokens/s that is {weights_gb * speed['decode_tokens_per_s']:.0f} GB/s "
            f"of memory traffic. Decoding is bound by memory bandwidth, not arithmetic, which is why its MFU is low "
            f"and why batching many sequences (or speculative decoding) helps.")


def build(ctx: TabContext) -> TabView:
    intro(
        "The arithmetic of inference (kipply's *Transformer Inference Arithmetic*, Adam Casson's *Transformer FLOPs*, "
        "PaLM's MFU), from this model's real config: how many parameters and where, how many FLOPs a token costs and "
        "how attention's share grows with the context, how big the KV cache is, and how much of the machine's peak "
        "a forward pass uses."
    )
    params = gr.Markdown(elem_id="ar-params")
    flops_note = gr.Markdown(elem_id="ar-flops-note")
    flops = gr.Plot(elem_id="ar-flops", show_label=False)
    kv_note = gr.Markdown(elem_id="ar-kv-note")
    kv = gr.Plot(elem_id="ar-kv", show_label=False)
    measure_btn = gr.Button("Measure the peak and tokens/s on this machine (about 2 s)", elem_id="ar-measure")
    measured = gr.Markdown(elem_id="ar-measured")
    view = Event(bind(render, ctx.runner), [ctx.trace, ctx.large], [params, flops_note, flops, kv_note, kv])
    ctx.large.change(view.fn, view.inputs, view.outputs, **READ_ONLY)
    measure_btn.click(heavy_job(measure, ctx.runner, "a speed measurement"), [ctx.trace], [measured], **HEAVY)
    return TabView(render=view)
