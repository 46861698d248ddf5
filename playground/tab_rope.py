"""RoPE tab: how rotary position embedding turns q and k, pair by pair, and what that does to q·k.

Reads the traced q and k (before RoPE) and re-applies the rotation on the formulas, so the
base can be changed freely without running the model; at the model's own base the result
equals the model's hook_rot_q / hook_rot_k (a test checks it).
"""

from __future__ import annotations

import gradio as gr
import numpy as np

from . import READ_ONLY
from .figures import axis_labels
from .figures_rope import (
    absolute_vs_relative_figure, angle_heatmap, decay_figure, pair_rotation_figure, rotate_pairs, scores_figure,
)
from .trace import ModelRunner, Trace



def maths(d_head: int, base: float) -> str:
    return rf"""
Each head's query and key vectors are read as $d/2 = {d_head // 2}$ pairs of neighbouring dimensions
$(x_{{2i}}, x_{{2i+1}})$ (the interleaved layout of Meta's Llama and GGUF files, which this model uses).
At position $m$, pair $i$ is turned by the angle $m\,\theta_i$, with $\theta_i = b^{{-2i/d}}$:

$$\begin{{pmatrix}} x'_{{2i}} \\ x'_{{2i+1}} \end{{pmatrix}} = \begin{{pmatrix}} \cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i \end{{pmatrix}} \begin{{pmatrix}} x_{{2i}} \\ x_{{2i+1}} \end{{pmatrix}}$$

Rotations compose, so $(R_m q)\cdot(R_n k) = q \cdot R_{{n-m}}\, k$: the score depends on the positions only through
their distance $m - n$. Pair 0 turns by 1 radian per token; the slowest pair by $b^{{-(d-2)/d}}$.
This model: $d = {d_head}$, $b = {base:g}$. Nothing is added to the token embeddings.
"""


def render(trace: Trace | None, layer: int, head: int, query: int, key: int, log_base: float, large: bool, runner: ModelRunner):
    cfg = runner.cfg
    scale = 1.5 if large else 1.0
    base = float(10.0 ** log_base)
    if trace is None:
        return None, None, decay_figure(cfg.d_head, cfg.rope_theta, base, cfg.max_seq_len, scale), None, None, ""
    layer, head = int(np.clip(layer, 0, cfg.n_layers - 1)), int(np.clip(head, 0, cfg.n_heads - 1))
    T = trace.n_tokens
    query = int(np.clip(query, 0, T - 1))
    key = int(np.clip(key, 0, query))
    kv = cfg.kv_head_of(head)
    labels = axis_labels(trace.token_bytes)
    q, k = trace.q[layer, :, head].astype(np.float64), trace.k[layer, :, kv].astype(np.float64)  # (T, d), before RoPE
    positions = np.arange(T)
    rot_q, rot_k = rotate_pairs(q, positions, base), rotate_pairs(k, positions, base)
    which = "the model's" if np.isclose(base, cfg.rope_theta) else "a chosen"
    pairs = pair_rotation_figure(
        {f"q {labels[query]}": (q[query], rot_q[query]), f"k {labels[query]}": (k[query], rot_k[query])},
        query, base, f"Layer {layer}, head {head}: q and k of token {labels[query]} (position {query}), each pair before and after "
        f"rotation, {which} base {base:.3g}", font_scale=scale,
    )
    angles = angle_heatmap(labels, cfg.d_head, base, f"Angle of every pair at every position (base {base:.3g})", font_scale=scale)
    decay = decay_figure(cfg.d_head, cfg.rope_theta, base, cfg.max_seq_len, font_scale=scale)
    with_rope = rot_k[: query + 1] @ rot_q[query] / np.sqrt(cfg.d_head)
    without = k[: query + 1] @ q[query] / np.sqrt(cfg.d_head)
    scores = scores_figure(labels[: query + 1], with_rope, without, labels[query], font_scale=scale)
    relative = absolute_vs_relative_figure(q[query], k[key], query - key, base, max_position=256, font_scale=scale)
    note = (f"Query **{labels[query]}** (position {query}), key **{labels[key]}** (position {key}), distance {query - key}. "
            f"Key/value head {kv} serves query head {head}.")
    return pairs, angles, decay, scores, relative, note


def build(runner: ModelRunner, trace_state: gr.State, large_mode: gr.Checkbox):
    """Lay out the tab; returns (render function, its inputs, its outputs) for the app to call after Analyze."""
    cfg = runner.cfg
    model_log_base = float(np.log10(cfg.rope_theta))
    gr.Markdown(maths(cfg.d_head, cfg.rope_theta), latex_delimiters=[{"left": "$$", "right": "$$", "display": True},
                                                                     {"left": "$", "right": "$", "display": False}])
    with gr.Row():
        layer = gr.Slider(0, cfg.n_layers - 1, value=0, step=1, label="Layer", elem_id="rope-layer")
        head = gr.Slider(0, cfg.n_heads - 1, value=0, step=1, label="Head", elem_id="rope-head")
        query = gr.Slider(0, 1, value=1, step=1, label="Query token (position)", elem_id="rope-query")
        key = gr.Slider(0, 1, value=0, step=1, label="Key token, for the relative-vs-absolute plot", elem_id="rope-key")
    with gr.Row():
        log_base = gr.Slider(2, 7, value=model_log_base, step=0.05, scale=4, elem_id="rope-base",
                             label=f"RoPE base b, as log10(b): try other bases on the formulas (the model's: {model_log_base:g}, b = {cfg.rope_theta:g})")
        reset = gr.Button(f"Back to the model's base ({cfg.rope_theta:g})", scale=1)
    note = gr.Markdown(elem_id="rope-note")
    pairs = gr.Plot(label="Pairs before and after rotation", elem_id="rope-pairs", show_label=False)
    with gr.Row():
        angles = gr.Plot(label="Angles", elem_id="rope-angles", show_label=False)
        decay = gr.Plot(label="Long-term decay", elem_id="rope-decay", show_label=False)
    scores = gr.Plot(label="Scores with and without RoPE", elem_id="rope-scores", show_label=False)
    relative = gr.Plot(label="Relative vs absolute position", elem_id="rope-relative", show_label=False)

    inputs = [trace_state, layer, head, query, key, log_base, large_mode]
    outputs = [pairs, angles, decay, scores, relative, note]

    def fn(trace, l, h, qpos, kpos, lb, large):
        return render(trace, l, h, qpos, kpos, lb, large, runner)

    for control in (layer, head, query, key, log_base):
        control.input(fn, inputs, outputs, **READ_ONLY)  # user moves only; after Analyze we draw below
    large_mode.change(fn, inputs, outputs, **READ_ONLY)
    reset.click(lambda: model_log_base, None, log_base, **READ_ONLY).then(fn, inputs, outputs, **READ_ONLY)

    def after_analyze(trace, l, h, qpos, kpos, lb, large):
        """New prompt: point the position sliders at its last tokens, then draw."""
        if trace is None:
            return (gr.update(), gr.update(), *fn(trace, l, h, qpos, kpos, lb, large))
        last = trace.n_tokens - 1
        q_new, k_new = last, max(0, last - 1)
        return (gr.update(maximum=max(last, 1), value=q_new), gr.update(maximum=max(last, 1), value=k_new),
                *fn(trace, l, h, q_new, k_new, lb, large))

    return after_analyze, inputs, [query, key, *outputs]
