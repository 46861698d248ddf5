"""Intervene tab: ablate heads and blocks, sweep the layers, patch activations from another prompt, attribute the logit.

Ablation, the layer sweep and attribution work on the analysed prompt; activation patching
takes a clean and a corrupted prompt of the same token length. Every run goes through the
runner (`model.interventions` does the work); a sweep shows its estimated time first, its
progress as it goes, and can be cancelled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import gradio as gr
import numpy as np
import torch

from model.interventions import SWEEPS, Ablation, sweep_cost, sweep_size

from .figures.attention import mosaic_cell, mosaic_of_levels
from .figures.interventions import (
    ablation_figure, attribution_figure, head_attribution_figure, layer_sweep_figure, patching_figure,
)
from .figures.tokens import axis_labels
from .runner import ModelRunner, PromptError
from .trace import Trace
from .ui import (
    HEAVY, MAX_SWEEP_S, MODEL_RUN, READ_ONLY, Event, StopFlag, TabContext, TabView, bind, font_scale, heavy_job,
    session_state, intro, stop_button, stop_state, token_markdown, token_text,
)
from .view import View, head_of, layer_of, text_of

TAB_ID = "intervene"

CELL = 30  # pixels per head in the clickable grid
TOP = 12  # tokens shown before and after an ablation
MODES = {"zero": "zero", "mean over the prompt's positions": "mean"}
CLEAN_EXAMPLE, CORRUPTED_EXAMPLE = "The capital of France is", "The capital of Italy is"


def token_pair(runner: ModelRunner, logits: np.ndarray, a_text: str, b_text: str) -> tuple[int, int, str]:
    """The two tokens to compare (the first token of each text; empty: the model's two most likely), and a label."""
    a_text, b_text = text_of(a_text or "", "a"), text_of(b_text or "", "b")
    top = [int(t) for t in np.argsort(-logits)[:2]]
    a = runner.first_token(a_text) if a_text and a_text.strip() else top[0]
    b = runner.first_token(b_text) if b_text and b_text.strip() else next(t for t in top if t != a)
    if a is None or b is None:
        raise PromptError("Type a token to compare, or leave the box empty for the model's most likely ones.")
    if a == b:
        raise PromptError(f"Both texts start with the same token ({token_markdown(runner, a)}): choose two different "
                          f"tokens.")
    return a, b, f"{token_markdown(runner, a)} − {token_markdown(runner, b)}"


def plain(text: str) -> str:
    """Markdown's code marks taken out, for a figure's title."""
    return text.replace("`", "")


def head_grid(trace: Trace | None, selected: list) -> np.ndarray | None:
    """Every head as a thumbnail (heads down, layers across), the ablated ones framed."""
    if trace is None:
        return None
    return mosaic_of_levels(trace.thumbnails.transpose(1, 0, 2, 3), trace.n_tokens,
                            highlight=[(h, l) for l, h in selected])


def selection_text(selected: list) -> str:
    heads = ", ".join(f"L{l}H{h}" for l, h in sorted(selected))
    return f"Heads to ablate: {heads}" if heads else "Heads to ablate: none (click heads in the grid)"


def render(runner: ModelRunner, trace: Trace | None, selected: list, large: bool):
    """A new prompt: the head grid, the selection, and cleared results."""
    return head_grid(trace, selected or []), selection_text(selected or []), "", None, None, "", None, None


def toggle_head(runner: ModelRunner, trace: Trace | None, selected: list, evt: gr.SelectData):
    """A click in the grid adds or removes that head."""
    cell = mosaic_cell(evt.index[0], evt.index[1], runner.cfg.n_heads, runner.cfg.n_layers, CELL)
    selected = [tuple(s) for s in selected or []]
    if cell is not None:
        head, layer = cell
        selected = [s for s in selected if s != (layer, head)] if (layer, head) in selected else [*selected,
                                                                                                  (layer, head)]
    return selected, head_grid(trace, selected), selection_text(selected)


def clear_heads(runner: ModelRunner, trace: Trace | None):
    return [], head_grid(trace, []), selection_text([])


HEAD = re.compile(r"^\s*L(\d+)\s*H(\d+)\s*$", re.IGNORECASE)  # a head by name: "L14H0"


def heads_of(cfg, heads) -> frozenset[tuple[int, int]]:
    """Heads named "L14H0" (a list, or one comma-separated text) or given as (layer, head) pairs, checked."""
    if isinstance(heads, str):
        heads = [h for h in heads.split(",") if h.strip()]
    picked = set()
    for item in heads or ():
        if isinstance(item, str):
            match = HEAD.match(item)
            if not match:
                raise PromptError(f"heads must look like 'L3H2, L14H0', got {item.strip()!r}")
            item = (int(match[1]), int(match[2]))
        layer, head = item
        picked.add((layer_of(cfg, layer, "head layer"), head_of(cfg, head)))
    return frozenset(picked)


def ablation(runner: ModelRunner, trace: Trace, heads=(), attention_layers=(), mlp_layers=(), mode: str = "zero",
             a: str = "", b: str = "", large: bool = False) -> View:
    """The next-token distribution before and after ablating heads ("L14H0") or whole blocks, zeroed or replaced by
    their mean over the prompt's positions; the note has the logit difference of a and b (default: the two most
    likely before)."""
    cfg = runner.cfg
    if MODES.get(mode, mode) not in MODES.values():
        raise PromptError(f"mode must be 'zero' or 'mean', got {mode!r}")
    blocks = [frozenset(layer_of(cfg, l, what) for l in layers or ())
              for what, layers in (("attention layer", attention_layers), ("MLP layer", mlp_layers))]
    chosen = Ablation(heads_of(cfg, heads), *blocks, mode=MODES.get(mode, mode))
    if chosen.empty:
        raise PromptError("Nothing to ablate: click heads in the grid, or pick attention or MLP blocks.")
    a, b, pair = token_pair(runner, trace.next_logits, a, b)
    after = runner.ablate(trace, chosen)
    p_before, p_after = (torch.from_numpy(x).softmax(-1).numpy() for x in (trace.next_logits, after))
    shown = np.argsort(-np.maximum(p_before, p_after))[:TOP]
    labels = [token_text(runner, t) for t in shown]
    labels = [f"{label} ({int(t)})" if labels.count(label) > 1 else label for label, t in zip(labels, shown)]
    before_diff, after_diff = trace.next_logits[a] - trace.next_logits[b], after[a] - after[b]
    n_heads = len(chosen.heads)
    what = ", ".join(filter(None, [f"{n_heads} head(s)" if n_heads else "",
                                   f"attention of layer(s) {sorted(chosen.attn)}" if chosen.attn else "",
                                   f"MLP of layer(s) {sorted(chosen.mlp)}" if chosen.mlp else ""]))
    whole = " (every head of the model)" if n_heads == cfg.n_layers * cfg.n_heads else ""
    mean = " (each replaced by its mean over the prompt's positions)" if chosen.mode == "mean" else ""
    summary = (f"Ablated {what}{whole}{mean}. Logit difference {pair}: **{before_diff:+.3f} → {after_diff:+.3f}** "
               f"({after_diff - before_diff:+.3f}); top token {token_markdown(runner, int(np.argmax(p_before)))} "
               f"p {p_before.max():.3f} → now {token_markdown(runner, int(np.argmax(p_after)))} p {p_after.max():.3f}.")
    title = f"Next token before and after the ablation ({chosen.mode})"
    return View(ablation_figure(labels, p_before[shown], p_after[shown], title, font_scale=font_scale(large)), summary)


def patching(runner: ModelRunner, clean: str, corrupted: str, a: str, b: str, kind: str = "resid",
             large: bool = False) -> View:
    """Activation patching from the clean prompt into the corrupted one, every layer: kind "resid", "attn" or "mlp"
    (each layer and position) or "heads" (each layer and head); a and b are the two prompts' answers. (A view of
    two prompts, not of one trace.)"""
    if kind not in SWEEPS:
        raise PromptError(f"kind must be one of {list(SWEEPS)}, got {kind!r}")
    *_, (note, figure) = patch(runner, text_of(clean, "clean"), text_of(corrupted, "corrupted"), a, b, kind, large)
    if figure is None:
        raise PromptError(note.removeprefix("⚠️").strip())
    return View(figure, note)


VIEWS = {"ablation": ablation, "patching": patching}
SLIDE = None  # no view of this tab can be a slide yet


def ablate(runner: ModelRunner, trace: Trace | None, selected: list, attn: list, mlp: list, mode: str, a_text: str,
           b_text: str, large: bool):
    """The Ablate button's handler: (summary, figure), or a ⚠️ line."""
    if trace is None:
        return "Analyze a prompt first.", None
    try:
        shown = ablation(runner, trace, [tuple(s) for s in selected or []], attn, mlp, mode, a_text, b_text, large)
    except PromptError as e:
        return f"⚠️ {e}", None
    return shown.note, shown.figure


def sweep_layers(runner: ModelRunner, trace: Trace | None, mode: str, a_text: str, b_text: str, large: bool):
    """(summary, figure): each layer's attention and MLP ablated in turn."""
    if trace is None:
        return "Analyze a prompt first.", None
    try:
        a, b, pair = token_pair(runner, trace.next_logits, a_text, b_text)
        result = runner.layer_sweep(trace, MODES.get(mode, mode), a, b)
    except PromptError as e:
        return f"⚠️ {e}", None
    losses = {"attention": result.loss_attn.numpy(), "MLP": result.loss_mlp.numpy()}
    worst = max(losses, key=lambda k: losses[k].max())
    layer = int(np.argmax(losses[worst]))
    summary = (f"Without ablation: loss {result.loss:.3f} nats per token, logit difference {pair} "
               f"{result.diff:+.3f}. The largest loss increase comes from ablating layer {layer}'s {worst} "
               f"(+{losses[worst][layer] - result.loss:.3f}).")
    figure = layer_sweep_figure(losses["attention"], losses["MLP"], result.diff_attn.numpy(), result.diff_mlp.numpy(),
                                result.loss, result.diff, plain(pair), MODES.get(mode, mode),
                                font_scale=font_scale(large))
    return summary, figure


def attribute(runner: ModelRunner, trace: Trace | None, a_text: str, b_text: str, large: bool):
    """(summary, bars, heads): direct logit attribution of the pair's logit difference at the prompt's end."""
    if trace is None:
        return "Analyze a prompt first.", None, None
    try:
        a, b, pair = token_pair(runner, trace.next_logits, a_text, b_text)
        result = runner.attribute(trace.ids.tolist(), a, b)
    except PromptError as e:
        return f"⚠️ {e}", None, None
    parts = result.parts.numpy()
    order = np.argsort(-np.abs(parts))[:3]
    summary = (f"Logit difference {pair} = **{result.total:+.4f}**; the parts sum to {parts.sum():+.4f}. "
               f"Largest: " + ", ".join(f"{result.labels[i]} {parts[i]:+.3f}" for i in order) +
               f". Each part is its output at the last position divided by the final norm's scale "
               f"({result.scale:.3f}, frozen) and read out along the gain times W_U[a] − W_U[b].")
    if runner.cfg.post_norms:
        summary += (" This model norms each attention output again before adding it (ln1_post): a head's part is "
                    "its share of that output through ln1_post with the scale frozen at this run's, so a layer's "
                    "heads sum to its attention part.")
    scale = font_scale(large)
    return (summary, attribution_figure(result.labels, parts, result.total, plain(pair), font_scale=scale),
            head_attribution_figure(result.heads.numpy(), font_scale=scale))


def patch(runner: ModelRunner, clean: str, corrupted: str, a_text: str, b_text: str, kind: str,
          large: bool, stop: StopFlag | None = None) -> Iterator[tuple]:
    """Activation patching, streamed layer by layer: (status, heatmap). Stop (`stop`) ends it between two layers,
    keeping the layers done."""
    stop = stop or StopFlag()
    stop.clear()
    sweep = SWEEPS.get(kind)
    if sweep is None:
        yield f"⚠️ Unknown sweep {kind!r}.", None
        return
    try:
        clean_ids, _, _ = runner.tokenize(clean, False)
        corrupted_ids, _, _ = runner.tokenize(corrupted, False)
        if len(clean_ids) != len(corrupted_ids):
            raise PromptError(f"Patching needs prompts of the same token length: the clean prompt has {len(clean_ids)} "
                              f"tokens, the corrupted one {len(corrupted_ids)}.")
        cfg, T = runner.cfg, len(clean_ids)
        estimate = runner.estimate_seconds(sweep_cost(sweep, cfg.n_layers, T, cfg.n_heads))
        if estimate > MAX_SWEEP_S:
            raise PromptError(f"This sweep would take about {estimate:.0f} s (the limit is {MAX_SWEEP_S} s): use "
                              f"shorter prompts, or the per-head sweep.")
        a_text, b_text = text_of(a_text or "", "a"), text_of(b_text or "", "b")
        a = runner.first_token(a_text) if a_text.strip() else None
        b = runner.first_token(b_text) if b_text.strip() else None
        if a is None or b is None or a == b:
            raise PromptError("Type the clean prompt's answer and the corrupted one's (two different tokens).")
        yield f"Running the {sweep.name} sweep: about {estimate:.0f} s …", None
        clean_diff, corrupt_diff, rows = runner.patching(clean_ids, corrupted_ids, sweep, a, b)
    except PromptError as e:
        yield f"⚠️ {e}", None
        return
    n_rows, n_columns = sweep_size(sweep, cfg.n_layers, T, cfg.n_heads)
    values = np.full((n_rows, n_columns), np.nan, dtype=np.float32)
    columns = axis_labels([runner.token_bytes(t) for t in clean_ids]) if sweep.per == "position" else \
        [f"H{h}" for h in range(cfg.n_heads)]
    pair = f"{token_markdown(runner, a)} − {token_markdown(runner, b)}"
    title = (f"Patching the {sweep.name} from “{clean}” into “{corrupted}”: logit difference {plain(pair)} "
             f"{corrupt_diff:+.2f} (corrupted) → {clean_diff:+.2f} (clean)")
    def shown(done: str) -> tuple:
        return (f"{sweep.name.capitalize()} sweep: {done}. 1 = the patch restores the clean answer, 0 = no effect.",
                patching_figure(values, [f"L{l}" for l in range(n_rows)], columns, title,
                                "position" if sweep.per == "position" else "head", font_scale=font_scale(large)))

    for layer, row in rows:
        values[layer] = row
        yield shown(f"layer {layer + 1} of {n_rows}" if layer + 1 < n_rows else "done")
        if stop.pressed and layer + 1 < n_rows:  # between two layers: the layers done stay
            yield shown(f"⏹ stopped by you after layer {layer + 1} of {n_rows}")
            return


def build(ctx: TabContext) -> TabView:
    cfg, runner = ctx.runner.cfg, ctx.runner
    layers = list(range(cfg.n_layers))
    intro(
        "Ask *what if*: knock out heads or whole blocks and see the next-token distribution change; sweep every "
        "layer; patch activations from a clean prompt into a corrupted one to find where the answer lives; split "
        "the final logit difference into each component's direct contribution. Hooks as in TransformerLens."
    )
    with gr.Row():
        a_text = gr.Textbox(label="Token to compare (empty: the model's most likely)", elem_id="int-a", scale=1)
        b_text = gr.Textbox(label="…against (empty: the second most likely)", elem_id="int-b", scale=1)
        mode = gr.Radio(list(MODES), value="zero", label="Ablate by writing", elem_id="int-mode", scale=2)
    with gr.Accordion("Ablate heads and blocks", open=True):
        selected = session_state([])
        with gr.Row():
            with gr.Column(scale=3):
                label = f"Click heads to ablate ({cfg.n_heads} heads down × {cfg.n_layers} layers across)"
                grid = gr.Image(label=label,
                                interactive=False, elem_id="int-grid", buttons=[], format="png")
            with gr.Column(scale=2):
                picked = gr.Markdown(selection_text([]), elem_id="int-picked")
                clear = gr.Button("Clear the heads", size="sm")
                attn = gr.Dropdown(layers, multiselect=True, label="Whole attention blocks (layers)",
                                   elem_id="int-attn")
                mlp = gr.Dropdown(layers, multiselect=True, label="Whole MLP blocks (layers)", elem_id="int-mlp")
                ablate_btn = gr.Button("Ablate", variant="primary", elem_id="int-ablate")
        ablate_note = gr.Markdown(elem_id="int-ablate-note")
        ablate_plot = gr.Plot(elem_id="int-ablate-plot", show_label=False)
        sweep_btn = gr.Button("Ablate each layer's attention and MLP in turn", elem_id="int-sweep")
        sweep_note = gr.Markdown(elem_id="int-sweep-note")
        sweep_plot = gr.Plot(elem_id="int-sweep-plot", show_label=False)
    with gr.Accordion("Activation patching: where does the answer live?", open=False):
        with gr.Row():
            clean = gr.Textbox(CLEAN_EXAMPLE, label="Clean prompt", elem_id="int-clean")
            corrupted = gr.Textbox(CORRUPTED_EXAMPLE, label="Corrupted prompt (the same number of tokens)",
                                   elem_id="int-corrupted")
        with gr.Row():
            clean_answer = gr.Textbox(" Paris", label="Clean answer", elem_id="int-clean-answer")
            corrupted_answer = gr.Textbox(" Rome", label="Corrupted answer", elem_id="int-corrupted-answer")
            kind = gr.Radio([(s.name, key) for key, s in SWEEPS.items()], value="resid", label="Patch",
                            elem_id="int-kind")
        with gr.Row():
            patch_btn = gr.Button("Patch", variant="primary", elem_id="int-patch")
            cancel = gr.Button("Cancel", elem_id="int-cancel")
        patch_note = gr.Markdown(elem_id="int-patch-note")
        patch_plot = gr.Plot(elem_id="int-patch-plot", show_label=False)
    with gr.Accordion("Direct logit attribution", open=False):
        attribute_btn = gr.Button("Attribute the logit difference", variant="primary", elem_id="int-attribute")
        attribute_note = gr.Markdown(elem_id="int-attribute-note")
        attribute_plot = gr.Plot(elem_id="int-attribute-plot", show_label=False)
        heads_plot = gr.Plot(elem_id="int-heads-plot", show_label=False)

    grid.select(bind(toggle_head, runner), [ctx.trace, selected], [selected, grid, picked], **READ_ONLY)
    clear.click(bind(clear_heads, runner), [ctx.trace], [selected, grid, picked], **READ_ONLY)
    ablate_btn.click(bind(ablate, runner), [ctx.trace, selected, attn, mlp, mode, a_text, b_text, ctx.large],
                     [ablate_note, ablate_plot], **MODEL_RUN)
    sweep_btn.click(heavy_job(sweep_layers, runner, "a layer sweep"), [ctx.trace, mode, a_text, b_text, ctx.large],
                    [sweep_note, sweep_plot], **HEAVY)
    stopping = stop_state()
    patch_btn.click(heavy_job(patch, runner, "a patching sweep"),
                    [clean, corrupted, clean_answer, corrupted_answer, kind, ctx.large, stopping],
                    [patch_note, patch_plot], **HEAVY)
    stop_button(cancel, stopping, patch_note)
    attribute_btn.click(bind(attribute, runner), [ctx.trace, a_text, b_text, ctx.large],
                        [attribute_note, attribute_plot, heads_plot], **MODEL_RUN)
    outputs = [grid, picked, ablate_note, ablate_plot, sweep_plot, attribute_note, attribute_plot, heads_plot]
    return TabView(render=Event(bind(render, runner), [ctx.trace, selected, ctx.large], outputs))
