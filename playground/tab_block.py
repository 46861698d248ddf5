"""Inside a block tab: the residual stream's size, RMSNorm on one vector (and LayerNorm beside it), the gains, and
the SwiGLU MLP's neurons for one layer and token.

The residual norms come from the trace; one layer at one position is recomputed by the runner
(its attention, both norms, the MLP's gate, up and post activations).
"""

from __future__ import annotations

import gradio as gr
import numpy as np

from .figures.block import activations_figure, gains_figure, neurons_figure, norm_steps_figure, residual_norms_figure
from .figures.tokens import axis_labels
from .runner import ModelRunner, PromptError
from .trace import Trace
from .view import View, layer_of, position_of
from .ui import LAYER_VIEW, Link, Event, TabContext, TabView, bind, clamp, font_scale, intro, arrows

TAB_ID = "block"

KEYS = (*arrows("blk-position", "token"), *arrows("blk-layer", "layer", "ArrowDown", "ArrowUp"))
LINKS = (Link("layer", "blk-layer"), Link("pos", "blk-position"))
TOP_NEURONS = 20
SMALL = 0.01  # a neuron counts as silent when its |post| is below 1% of the largest


def gelu(z: np.ndarray) -> np.ndarray:
    return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))


def sparsity(post: np.ndarray) -> float:
    """Share of neurons whose output is below SMALL of the largest one's."""
    largest = float(np.abs(post).max()) or 1.0
    return float((np.abs(post) < SMALL * largest).mean())


def norms(runner: ModelRunner, trace: Trace, large: bool = False) -> View:
    """The residual stream's norm after the embedding and after every layer, at every position."""
    rows = ["embed"] + [f"L{l}" for l in range(runner.cfg.n_layers)]
    values = np.linalg.norm(runner.budget.use(trace), axis=-1)  # (L + 1, T)
    last = values[:, -1]
    note = (f"At the last token the norm grows from {last[0]:.2f} after the embedding to {last[-1]:.1f} after the "
            f"last layer.")
    facts = {"embed": float(last[0]), "top": float(last[-1]), "largest_layer": int(last[1:].argmax()),
             "largest": float(last[1:].max())}
    return View(residual_norms_figure(values, axis_labels(trace.token_bytes), rows, font_scale=font_scale(large)), note,
                facts)


def loudest_mlp(runner: ModelRunner, trace: Trace, pos: int = -1) -> tuple[int, np.ndarray]:
    """The layer whose MLP writes the most at `pos`, and every layer's ‖MLP output‖ there (resid_post − resid_mid)."""
    pos = position_of(trace.n_tokens, pos)
    writes = np.linalg.norm(runner.budget.use(trace)[1:, pos] - runner.resid_mid(trace)[:, pos], axis=-1)
    return int(writes.argmax()), writes


def neurons(runner: ModelRunner, trace: Trace, layer: int = 0, pos: int = -1, large: bool = False) -> View:
    """The MLP's strongest neurons at one layer and token (what each writes), with the block's arithmetic as the
    note: the Inside-a-block tab's main view."""
    layer, pos = layer_of(runner.cfg, layer), position_of(trace.n_tokens, pos)
    block = runner.block(trace, layer, pos)
    note, _, figure, _ = _block_figures(runner, trace, block, layer, pos, font_scale(large))
    size = np.abs(block.post) * block.w2_norms
    top = int(size.argmax())
    facts = {"layer": layer, "neuron": top, "writes": float(size[top]), "activation": float(block.post[top]),
             "mlp_out": float(np.linalg.norm(block.mlp_out))}
    return View(figure, note, facts)


VIEWS = {"neurons": neurons, "norms": norms}
SLIDE = "neurons"  # the view a deck's slide of this tab shows


def overview(runner: ModelRunner, trace: Trace | None, large: bool):
    """(residual norms, gains): what does not depend on the layer and token chosen."""
    scale, cfg = font_scale(large), runner.cfg
    gain_labels = [f"L{l} {ln}" for l in range(cfg.n_layers) for ln in runner.norm_names] + ["final"]
    gains = gains_figure(runner.norm_gains, gain_labels, font_scale=scale)
    if trace is None or trace.resid is None:
        return None, gains
    return norms(runner, trace, large).figure, gains


def render(runner: ModelRunner, trace: Trace | None, layer: int, position: int, large: bool):
    """(note, RMSNorm steps, neurons, activations) for one layer and token."""
    cfg = runner.cfg
    if trace is None:
        return "Analyze a prompt first.", None, None, None
    layer, position = clamp(layer, 0, cfg.n_layers - 1), clamp(position, 0, trace.n_tokens - 1)
    try:
        view = runner.block(trace, layer, position)
    except PromptError as e:  # dropped to make room, or the model stayed busy
        return f"⚠️ {e}", None, None, None
    return _block_figures(runner, trace, view, layer, position, font_scale(large))


def _block_figures(runner: ModelRunner, trace: Trace, view, layer: int, position: int, scale: float):
    """(note, RMSNorm steps, neurons, activations) of one block at one token (`runner.block`'s view)."""
    cfg = runner.cfg
    labels = axis_labels(trace.token_bytes)
    x = view.resid_pre
    steps = norm_steps_figure(x, view.scale1, view.gain1, view.eps,
                              f"Layer {layer}'s ln1 on token {labels[position]}: RMS {view.scale1:.3f}, "
                              f"mean {x.mean():.3f}",
                              font_scale=scale)
    size = np.abs(view.post) * view.w2_norms
    top = np.argsort(-size)[:TOP_NEURONS]
    neurons_fig = neurons_figure(top, size[top], view.gate[top], view.up[top], view.post[top],
                                 f"Top {TOP_NEURONS} neurons, layer {layer}, {labels[position]} (red: post < 0)",
                                 font_scale=scale)
    relu, silu = np.maximum(view.gate, 0) * view.up, view.gate / (1 + np.exp(-view.gate)) * view.up
    act, other, other_post = (("GELU", "SiLU", silu) if cfg.mlp_act == "gelu_tanh" else
                              ("SiLU", "GELU", gelu(view.gate) * view.up))
    written = ("out = w2·post, so the output is the sum of "
               f"{cfg.d_mlp} neurons' columns of w2 scaled by post (they add up to the MLP output exactly)")
    if view.post_scale is not None:
        written = (f"out = ln2_post(w2·post): this model norms the MLP's output again (RMS {view.post_scale:.3f}) "
                   f"before adding it, so with that scale frozen the output is the sum of {cfg.d_mlp} neurons' "
                   f"columns of w2 × gain ÷ {view.post_scale:.3f}, scaled by post (they add up to it exactly)")
    note = (f"**Layer {layer}, token {labels[position]}.** RMSNorm divides by RMS = √(mean x² + ε) = {view.scale1:.3f} "
            f"(ln1) and {view.scale2:.3f} (ln2), then multiplies by the gain; LayerNorm would also subtract the mean "
            f"({x.mean():+.3f}). The MLP: post = {act}(w1·x) ⊙ (w3·x), {written}. "
            f"Silent neurons (|post| below 1% of the largest): {act} {100 * sparsity(view.post):.0f}%, "
            f"with ReLU instead {100 * sparsity(relu):.0f}% ({100 * (view.gate <= 0).mean():.0f}% exactly zero), "
            f"with {other} {100 * sparsity(other_post):.0f}%. The largest neuron writes ‖·‖ = {size[top[0]]:.3f}; "
            f"the whole MLP output has ‖·‖ = {np.linalg.norm(view.mlp_out):.3f}.")
    return note, steps, neurons_fig, activations_figure(view.gate, view.post, font_scale=scale, act=act)


def after_analyze(runner: ModelRunner, trace: Trace | None, layer: int, position: int, large: bool):
    """A new prompt: the position slider spans it and points at its last token; everything is drawn."""
    if trace is not None:
        position = trace.n_tokens - 1
    slider = gr.update() if trace is None else gr.update(maximum=max(position, 1), value=position)
    return (slider, *overview(runner, trace, large), *render(runner, trace, layer, position, large))


def build(ctx: TabContext) -> TabView:
    cfg = ctx.runner.cfg
    intro(
        "Inside one transformer block: the residual stream every block reads and writes, the RMSNorm before "
        "attention and before the MLP (divide by the root mean square, multiply by a learned gain; no mean "
        "subtracted, unlike LayerNorm), and the SwiGLU MLP, whose output is a sum of its neurons' write-outs."
    )
    with gr.Row():
        layer = gr.Slider(0, cfg.n_layers - 1, value=cfg.n_layers // 2, step=1, label="Layer", elem_id="blk-layer")
        position = gr.Slider(0, 1, value=1, step=1, label="Token (position)", elem_id="blk-position")
    note = gr.Markdown(elem_id="blk-note")
    norms = gr.Plot(elem_id="blk-norms", show_label=False)
    steps = gr.Plot(elem_id="blk-steps", show_label=False)
    with gr.Row():
        neurons = gr.Plot(elem_id="blk-neurons", show_label=False)
        activations = gr.Plot(elem_id="blk-activations", show_label=False)
    with gr.Accordion("Every RMSNorm's gain", open=False):
        gains = gr.Plot(elem_id="blk-gains", show_label=False)

    inputs = [ctx.trace, layer, position, ctx.large]
    chosen = [note, steps, neurons, activations]
    draw = bind(render, ctx.runner)
    for control in (layer, position):
        control.input(draw, inputs, chosen, **LAYER_VIEW)
    ctx.large.change(bind(after_analyze, ctx.runner), inputs, [position, norms, gains, *chosen], **LAYER_VIEW)
    return TabView(render=Event(bind(after_analyze, ctx.runner), inputs, [position, norms, gains, *chosen]))
