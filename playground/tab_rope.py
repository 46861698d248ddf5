"""RoPE tab: how rotary position embedding turns q and k, pair by pair, and what that does to q·k.

Reads the traced q and k (before RoPE) and re-applies the rotation on the formulas
(`rope_formulas`), so the base can be changed freely without running the model; at the
model's own base the result equals the model's hook_rot_q / hook_rot_k (a test checks it).
"""

from __future__ import annotations

import math

import gradio as gr
import numpy as np

from .figures.rope import absolute_vs_relative_figure, angle_heatmap, decay_figure, pair_rotation_figure, scores_figure
from .figures.tokens import axis_labels
from .rope_formulas import rope_frequencies, rotate_pairs
from .runner import ModelRunner, PromptError
from .trace import Trace
from .view import View, head_of, layer_of, position_of
from .ui import (
    LAYER_VIEW, Link, READ_ONLY, Event, TabContext, TabView, arrows, bind, clamp, font_scale, intro, layer_head,
    scriptable,
)

TAB_ID = "rope"

KEYS = (*arrows("rope-query", "query position"), *arrows("rope-layer", "layer", "ArrowDown", "ArrowUp"))
LINKS = (Link("layer", "rope-layer"), Link("head", "rope-head"), Link("pos", "rope-query"))
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]


def maths(d_head: int, base: float, bases_note: str = "") -> str:
    bases_note = f" {bases_note}" if bases_note else ""
    return rf"""
Each head's query and key vectors are read as $d/2 = {d_head // 2}$ pairs of neighbouring dimensions
$(x_{{2i}}, x_{{2i+1}})$ (the interleaved layout of Meta's Llama and GGUF files, which this model uses).
At position $m$, pair $i$ is turned by the angle $m\,\theta_i$, with $\theta_i = b^{{-2i/d}}$:

$$\begin{{pmatrix}} x'_{{2i}} \\ x'_{{2i+1}} \end{{pmatrix}} = \begin{{pmatrix}} \cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i \end{{pmatrix}} \begin{{pmatrix}} x_{{2i}} \\ x_{{2i+1}} \end{{pmatrix}}$$

Rotations compose, so $(R_m q)\cdot(R_n k) = q \cdot R_{{n-m}}\, k$: the score depends on the positions only through
their distance $m - n$. Pair 0 turns by 1 radian per token; the slowest pair by $b^{{-(d-2)/d}}$.
This model: $d = {d_head}$, $b = {base:g}${bases_note}. Nothing is added to the token embeddings.
"""  # noqa: E501 (one line of LaTeX)


def two_bases(cfg) -> str:
    """Where the model has a base of its own for its sliding layers (Gemma 3), which layers use which."""
    if cfg.rope_local_base is None:
        return ""
    full = [l for l in range(cfg.n_layers) if cfg.window_of(l) is None]
    return (f"on its global layers ({', '.join(map(str, full))}) and $b = {cfg.rope_local_base:.0f}$ on its "
            f"sliding-window layers (the others)")


def pairs(runner: ModelRunner, trace: Trace, layer: int = 0, head: int = 0, pos: int = -1,
          large: bool = False) -> View:
    """q and k of one token, each pair before and after the model's own rotation: the RoPE tab's main view."""
    cfg = runner.cfg
    layer, head = layer_of(cfg, layer), head_of(cfg, head)
    pos = position_of(trace.n_tokens, pos)
    base = cfg.rope_base_of(layer)  # the layer's own (Gemma 3: 10,000 on sliding layers, 1,000,000 on global ones)
    figures = _figures(runner, trace, layer, head, pos, max(0, pos - 1), base, font_scale(large))
    theta = rope_frequencies(cfg.d_head, base, cfg.rope_scaling)  # the model's own (Llama 3 scales some)
    facts = {"pos": pos, "pairs": cfg.d_head // 2, "fastest_deg": math.degrees(pos * theta[0]) % 360,
             "slowest_deg": math.degrees(pos * theta[-1]), "base": base}  # how far the fastest, slowest pair turned
    return View(figures[0], figures[-1], facts)


VIEWS = {"pairs": pairs}
SLIDE = "pairs"  # the view a deck's slide of this tab shows


def render(runner: ModelRunner, trace: Trace | None, layer: int, head: int, query: int, key: int, log_base: float,
           large: bool):
    """(pairs, angles, decay, scores, relative-vs-absolute, note) for one head and query."""
    cfg = runner.cfg
    scale = font_scale(large)
    base = float(10.0 ** float(log_base))
    layer, head = layer_head(cfg, layer, head)
    decay = decay_figure(cfg.d_head, cfg.rope_base_of(layer), base, cfg.max_seq_len, font_scale=scale)
    if trace is None:
        return None, None, decay, None, None, ""
    query = clamp(query, 0, trace.n_tokens - 1)
    try:
        pairs_fig, angles, scores, relative, note = _figures(runner, trace, layer, head, query, clamp(key, 0, query),
                                                             base, scale)
    except PromptError as e:  # dropped to make room, or the model stayed busy
        return gr.update(), gr.update(), decay, gr.update(), gr.update(), f"⚠️ {e}"
    return pairs_fig, angles, decay, scores, relative, note


def _figures(runner: ModelRunner, trace: Trace, layer: int, head: int, query: int, key: int, base: float,
             scale: float):
    """(pairs, angles, scores, relative-vs-absolute, note) for one head, query and key at a RoPE base."""
    cfg = runner.cfg
    T = trace.n_tokens
    kv = cfg.kv_head_of(head)
    labels = axis_labels(trace.token_bytes)
    tensors = runner.layer(trace, layer)
    q, k = tensors.q[:, head].astype(np.float64), tensors.k[:, kv].astype(np.float64)  # (T, d), before RoPE
    positions = np.arange(T)
    own = bool(np.isclose(base, cfg.rope_base_of(layer)))
    scaling = cfg.rope_scaling if own else None  # the model's own frequencies (Llama 3 scales some) at its base
    rot_q, rot_k = rotate_pairs(q, positions, base, scaling), rotate_pairs(k, positions, base, scaling)
    which = "the model's" if own else "a chosen"
    pairs_fig = pair_rotation_figure(
        {f"q {labels[query]}": (q[query], rot_q[query]), f"k {labels[query]}": (k[query], rot_k[query])},
        query, base,
        f"Layer {layer}, head {head}: q and k of token {labels[query]} (position {query}), each pair before and "
        f"after rotation, {which} base {base:.3g}", font_scale=scale,
    )
    angles = angle_heatmap(labels, cfg.d_head, base, f"Angle of every pair at every position (base {base:.3g})",
                           font_scale=scale)
    with_rope = rot_k[: query + 1] @ rot_q[query] / cfg.attn_scale
    without = k[: query + 1] @ q[query] / cfg.attn_scale
    scores = scores_figure(labels[: query + 1], with_rope, without, labels[query], font_scale=scale,
                           model_base=own, base=base)
    relative = absolute_vs_relative_figure(q[query], k[key], query - key, base, max_position=256, font_scale=scale)
    note = (f"Query **{labels[query]}** (position {query}), key **{labels[key]}** (position {key}), "
            f"distance {query - key}. "
            f"Key/value head {kv} serves query head {head}.")
    if cfg.rope_local_base is not None:
        kind = "global" if cfg.window_of(layer) is None else "sliding-window"
        note += (f" Layer {layer} is a {kind} layer: its RoPE base is **{cfg.rope_base_of(layer):,.0f}** "
                 f"(this model turns its sliding-window layers' pairs with base {cfg.rope_local_base:,.0f} and its "
                 f"global layers' with {cfg.rope_base:,.0f}).")
        if not own:
            note += f" The figures use the chosen base {base:.3g}, not the layer's."
    if not cfg.uses_rope(layer):
        note += (f" **Layer {layer} uses no RoPE** (one of this model's no-position layers): its q and k are not "
                 f"rotated, so these figures show what RoPE would do to them, not what the model does.")
    if cfg.rope_scaling is not None:
        factor, low, high, context = cfg.rope_scaling
        note += (f" This model scales RoPE as Llama 3 does: pairs whose wavelength exceeds {context / low:g} positions "
                 f"turn {factor:g}× slower, those under {context / high:g} are unchanged, those between are blended. "
                 f"The pairs and scores above use those frequencies at the model's base; the angle, decay and "
                 f"absolute-vs-relative figures show the plain formula.")
    return pairs_fig, angles, scores, relative, note


def after_analyze(runner: ModelRunner, trace: Trace | None, layer: int, head: int, query: int, key: int,
                  log_base: float,
                  large: bool):
    """New prompt: point the position sliders at its last tokens, then draw."""
    if trace is None:
        return (gr.update(), gr.update(), *render(runner, trace, layer, head, query, key, log_base, large))
    last = trace.n_tokens - 1
    q_new, k_new = last, max(0, last - 1)
    return (gr.update(maximum=max(last, 1), value=q_new), gr.update(maximum=max(last, 1), value=k_new),
            *render(runner, trace, layer, head, q_new, k_new, log_base, large))


def build(ctx: TabContext) -> TabView:
    cfg = ctx.runner.cfg
    model_log_base = float(np.log10(cfg.rope_base_of(0)))  # layer 0's, the layer shown first
    intro(maths(cfg.d_head, cfg.rope_base, two_bases(cfg)).replace("b = 1e+06", "b = 10^6"), latex_delimiters=LATEX)
    with gr.Row():
        layer = gr.Slider(0, cfg.n_layers - 1, value=0, step=1, label="Layer", elem_id="rope-layer")
        head = gr.Slider(0, cfg.n_heads - 1, value=0, step=1, label="Head", elem_id="rope-head")
        query = gr.Slider(0, 1, value=1, step=1, label="Query token (position)", elem_id="rope-query")
        key = gr.Slider(0, 1, value=0, step=1, label="Key token, for the relative-vs-absolute plot", elem_id="rope-key")
    with gr.Row():
        log_base = gr.Slider(2, 7, value=model_log_base, step=0.05, scale=4, elem_id="rope-base",
                             label=f"RoPE base b, as log10(b): try other bases on the formulas "
                                   f"(the model's: {model_log_base:g}, b = {cfg.rope_base_of(0):g}"
                                   f"{', on layer 0' if cfg.rope_local_base else ''})")
        reset = gr.Button("Back to the layer's base" if cfg.rope_local_base else
                          f"Back to the model's base ({cfg.rope_base:g})", scale=1)
    note = gr.Markdown(elem_id="rope-note")
    pairs = gr.Plot(label="Pairs before and after rotation", elem_id="rope-pairs", show_label=False)
    with gr.Row():
        angles = gr.Plot(label="Angles", elem_id="rope-angles", show_label=False)
        decay = gr.Plot(label="Long-term decay", elem_id="rope-decay", show_label=False)
    scores = gr.Plot(label="Scores with and without RoPE", elem_id="rope-scores", show_label=False)
    relative = gr.Plot(label="Relative vs absolute position", elem_id="rope-relative", show_label=False)

    inputs = [ctx.trace, layer, head, query, key, log_base, ctx.large]
    outputs = [pairs, angles, decay, scores, relative, note]
    draw = bind(render, ctx.runner)
    for control in (layer, head, query, key, log_base):  # user moves only; after Analyze, after_analyze draws
        if control is layer and cfg.rope_local_base is not None:
            continue  # drawn below, once the base has followed the layer
        control.input(draw, inputs, outputs, **(scriptable(LAYER_VIEW, "rope") if control is query else LAYER_VIEW))
    ctx.large.change(draw, inputs, outputs, **LAYER_VIEW)
    layer_log_base = lambda l: float(np.log10(cfg.rope_base_of(int(l))))  # noqa: E731
    reset.click(layer_log_base, layer, log_base, **READ_ONLY).then(draw, inputs, outputs, **LAYER_VIEW)
    if cfg.rope_local_base is not None:  # two bases (Gemma 3): a new layer starts at its own
        layer.input(layer_log_base, layer, log_base, **READ_ONLY).then(draw, inputs, outputs, **LAYER_VIEW)
    return TabView(render=Event(bind(after_analyze, ctx.runner), inputs, [query, key, *outputs]))
