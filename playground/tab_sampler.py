"""Sampler tab: the next-token distribution and every step of a modern sampler chain, live.

Slider moves recompute the chain on cached logits (no model run). Step-by-step generation
keeps a per-visitor `GenSession` whose KV cache starts from the keys and values of the
trace's residual streams, so each new token costs one position of compute; going back just
shortens the cache (`gen_session`). The controls come from one table (`CONTROL_ROWS`). One tab: the chain's view,
stepping, drawing and export, each a handler and its layout: hence its length.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd
import torch

from model.sampler_export import (
    LLAMA_CPP_PROGRAM, hf_leaves_out, llama_cpp_leaves_out, to_hf_kwargs, to_llama_cpp_flags,
)
from model.decoding import greedy, token_log_probs
from model.sampling import SamplerSettings, distribution, draw, sample, stages

from .figures.sampler import (
    GENERATION_CSS, attention_row_figure, distribution_bars, generated_html, orders_figure, samples_figure,
    stages_matrix,
)
from .figures.tokens import axis_labels
from .figures.tour import continuation_figure
from .gen_session import MAX_NEW_TOKENS, GenSession
from .runner import ModelRunner, PromptError
from .text import quoted
from .trace import Trace
from .view import View, number
from .ui import (
    HEAVY, Link, MODEL_CONCURRENCY, READ_ONLY, Event, Key, TabContext, TabView, bind, clamp, font_scale, heavy_job,
    intro, layer_head, scriptable, session_state, token_text,
)

TAB_ID = "sampler"

CSS = GENERATION_CSS + "#samp-continuation { display: none !important; }  /* set by prepared links only */\n"

GENERATE_TIME_LIMIT_S = 60  # one "Generate" press stops streaming after this long
MAX_DRAWS = 100_000
TOKENS_SHOWN = (3, 60)  # bars a figure may show (the slider offers 5..40; the API may ask for anything)
SEED_STRIDE = 100_003  # a prime: step s of seed n draws with generator seed n * stride + s, each its own stream
ORDERS = ("HF transformers", "llama.cpp")
STEP_OPTIONS = dict(concurrency_limit=2 * MODEL_CONCURRENCY, api_visibility="private")  # one short model step each


@dataclass(frozen=True)
class Control:
    """One sampler slider: the `SamplerSettings` field it sets (its default is the field's), its range and label,
    its elem_id, and the prepared-link parameter that may set it (None: links leave it alone)."""

    name: str
    label: str
    low: float
    high: float
    step: float
    elem_id: str
    link: str | None = None

    @property
    def whole(self) -> bool:
        return isinstance(getattr(SamplerSettings(), self.name), int)

    @property
    def default(self) -> float | int:
        return getattr(SamplerSettings(), self.name)


# The sampler's controls, in the order of the chain's settings, row by row as laid out. Every list of them (the
# handlers' arguments, the links, the layout) comes from here.
CONTROL_ROWS: tuple[tuple[Control, ...], ...] = (
    (Control("temperature", "Temperature (0 = greedy)", 0, 2, 0.05, "samp-temp", "temperature"),
     Control("top_k", "Top-k (0 = off)", 0, 200, 1, "samp-topk", "top_k"),
     Control("top_p", "Top-p (1 = off)", 0.01, 1, 0.01, "samp-topp", "top_p")),
    (Control("min_p", "Min-p (0 = off)", 0, 1, 0.01, "samp-minp", "min_p"),
     Control("typical_p", "Typical-p (1 = off)", 0.01, 1, 0.01, "samp-typical", "typical_p"),
     Control("repetition_penalty", "Repetition penalty (1 = off)", 0.5, 2, 0.05, "samp-rep", "repetition_penalty"),
     Control("presence_penalty", "Presence penalty (llama.cpp)", -2, 2, 0.1, "samp-presence", "presence_penalty"),
     Control("frequency_penalty", "Frequency penalty (llama.cpp)", -2, 2, 0.1, "samp-frequency",
             "frequency_penalty")),
    (Control("epsilon", "Epsilon cutoff (HF; 0 = off)", 0, 0.2, 0.0005, "samp-epsilon"),
     Control("eta", "Eta cutoff (HF; 0 = off)", 0, 0.2, 0.0005, "samp-eta"),
     Control("top_n_sigma", "Top-n-sigma (llama.cpp; 0 = off)", 0, 5, 0.1, "samp-sigma"),
     Control("repeat_last_n", "Penalty window, tokens (llama.cpp; -1 = all)", -1, 512, 1, "samp-lastn")),
    (Control("xtc_probability", "XTC probability (llama.cpp; 0 = off)", 0, 1, 0.05, "samp-xtc-p"),
     Control("xtc_threshold", "XTC threshold (> 0.5 = off)", 0, 0.6, 0.01, "samp-xtc-t"),
     Control("dry_multiplier", "DRY multiplier (llama.cpp; 0 = off)", 0, 3, 0.05, "samp-dry"),
     Control("dry_base", "DRY base", 1, 4, 0.05, "samp-dry-base"),
     Control("dry_allowed_length", "DRY allowed length", 1, 8, 1, "samp-dry-len")),
)
CONTROLS = tuple(c for row in CONTROL_ROWS for c in row)
SETTINGS = tuple(c.name for c in CONTROLS)  # the names the next_token view takes as **settings


KEYS = (Key(("ArrowRight", "PageDown"), "samp-sample", None, "sample the next token"),
        Key(("ArrowLeft", "PageUp"), "samp-back", None, "back one token"))


LINKS = (Link("order", "samp-order", "radio"), *(Link(c.link, c.elem_id) for c in CONTROLS if c.link),
         Link("seed", "samp-seed", "number"),
         Link("gen", "samp-continuation", "text", source="#samp-text .gtok[data-id]", last=True))


def settings_from(order: str, *values, breakers: tuple[int, ...] = ()) -> SamplerSettings:
    """SamplerSettings from the order and the controls' values in `CONTROLS`' order (any left out keep their
    defaults; ValueError with a readable message when out of range); `breakers`: the model's DRY breaker tokens
    (`ModelRunner.dry_breakers`)."""
    if len(values) > len(CONTROLS):
        raise ValueError(f"{len(values)} sampler settings given; there are {len(CONTROLS)}")
    fields = {}
    for control, value in zip(CONTROLS, values):
        try:
            fields[control.name] = int(value) if control.whole else float(value)
        except (TypeError, ValueError):
            kind = "a whole number" if control.whole else "a number"
            raise ValueError(f"{control.name} must be {kind}, got {value!r}") from None
    return SamplerSettings(**fields, dry_breakers=tuple(breakers),
                           order="llama.cpp" if str(order).startswith("llama") else "hf")



def sampler_settings(runner: ModelRunner, order: str = "hf", **settings) -> SamplerSettings:
    """The sampler's settings by `SamplerSettings` name, each checked against its slider's range (PromptError
    naming it), the rest at their defaults, and the model's DRY breakers: the one check the tab, the API and the
    notebook share. `order`: "hf" or "llama.cpp" (or the tab's labels for them)."""
    controls = {c.name: c for c in CONTROLS}
    unknown = sorted(set(settings) - set(controls))
    if unknown:
        raise PromptError(f"unknown sampler settings {unknown}; the settings are {', '.join(controls)}")
    orders = {"hf": "hf", ORDERS[0]: "hf", "llama.cpp": "llama.cpp", ORDERS[1]: "llama.cpp"}
    if not isinstance(order, str) or order not in orders:
        raise PromptError(f"order must be 'hf' or 'llama.cpp', got {order!r}")
    values = {name: number(value, name, controls[name].low, controls[name].high, whole=controls[name].whole)
              for name, value in settings.items()}
    return SamplerSettings(**values, dry_breakers=tuple(runner.dry_breakers), order=orders[order])


def next_token(runner: ModelRunner, trace: Trace, order: str = "hf", top_n: int = 15, large: bool = False,
               **settings) -> View:
    """The next-token distribution before and after the sampler chain (settings by name, in the sliders' ranges):
    the Sampler tab's main view."""
    chosen = sampler_settings(runner, order, **settings)
    top_n = number(top_n, "top_n", *TOKENS_SHOWN, whole=True)
    session = GenSession.start(runner, trace)
    bars, *_, chain = _figures(runner, session, chosen, top_n, font_scale(large))
    plain, shaped = chain[0].probs, chain[-1].probs  # the chain's first and last step, as drawn
    kept, best = int((shaped > 0).sum()), int(plain.argmax())
    facts = {"best": best, "p": float(plain[best]), "p_after": float(shaped[best]), "kept": kept,
             "vocabulary": len(plain)}
    return View(bars, f"{kept:,} of {len(plain):,} tokens left after the chain ({chosen.order} order).", facts)


def continuation(runner: ModelRunner, trace: Trace, tokens: int = 8, large: bool = False) -> View:
    """The prompt continued greedily (always the most likely token), each token with the probability it had."""
    tokens = number(tokens, "tokens", 1, MAX_NEW_TOKENS, whole=True)
    ids = trace.ids.tolist()
    stop = [runner.eos_token_id] if runner.eos_token_id is not None else []
    new, _ = runner.run_strategy(greedy, ids, tokens, stop)
    probs = np.exp(runner.run_strategy(token_log_probs, ids, new))
    figure = continuation_figure([token_text(runner, t, 14) for t in new], probs,
                                 f"{len(new)} tokens, greedy: each the most likely", font_scale=font_scale(large))
    note = (f"Greedy decoding continues with “{quoted(runner.decode(new))}”; the least certain step had "
            f"p = {probs.min():.2f}." if new else "The model ends the text here.")
    return View(figure, note)


VIEWS = {"next_token": next_token, "continuation": continuation}
SLIDE = "next_token"  # the view a deck's slide of this tab shows


def render(runner: ModelRunner, session: GenSession | None, *values):
    """(bars, stages, both orders, export, clickable table, message) from the cached logits.

    values: the sampler controls, then top_n and large."""
    *controls, top_n, large = values
    if session is None:
        return None, None, None, "", None, "Analyze a prompt first."
    try:
        settings = settings_from(*controls, breakers=runner.dry_breakers)
    except ValueError as e:
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), f"⚠️ {e}"
    return (*_figures(runner, session, settings, clamp(top_n, *TOKENS_SHOWN), font_scale(large))[:5], "")


def _figures(runner: ModelRunner, session: GenSession, settings: SamplerSettings, top_n: int, scale: float):
    """(bars, stages, both orders, export, clickable table, the chain's steps) on the session's logits."""
    logits = torch.from_numpy(session.logits)
    history = dict(prompt_ids=session.prompt_ids, generated_ids=session.generated)
    st = stages(logits, settings, **history)
    raw, final = st[0].probs, st[-1].probs
    shown = torch.maximum(raw, final).topk(top_n).indices
    labels = [token_text(runner, int(t)) for t in shown]
    labels = [f"{label} ({int(t)})" if labels.count(label) > 1 else label for label, t in zip(labels, shown)]
    removed_by = [next((s.name for s in st if s.removed[t]), None) for t in shown]
    step = len(session.generated)
    title = f"Next token{'' if step == 0 else f' (step {step + 1})'}: {st[-1].kept:,} of {len(raw):,} tokens left"
    bars = distribution_bars(labels, raw[shown].numpy(), final[shown].numpy(), removed_by, title, font_scale=scale)
    matrix = stages_matrix(labels, torch.stack([s.probs[shown] for s in st], dim=1).numpy(), [s.name for s in st],
                           [s.kept for s in st], [s.entropy_bits for s in st],
                           f"The chain, {settings.order} order: each step's distribution", font_scale=scale)
    other = SamplerSettings(**{**settings.__dict__, "order": "llama.cpp" if settings.order == "hf" else "hf"})
    p_other = distribution(logits, other, **history)
    p_hf, p_ll = (final, p_other) if settings.order == "hf" else (p_other, final)
    orders = orders_figure(labels, p_hf[shown].numpy(), p_ll[shown].numpy(), "Same logits, same settings, two orders",
                           font_scale=scale)
    table = pd.DataFrame({"token": labels, "id": shown.tolist(), "p": np.round(final[shown].double().numpy(), 4),
                          "raw p": np.round(raw[shown].double().numpy(), 4)})
    return bars, matrix, orders, export_markdown(settings), table, st


def export_markdown(settings: SamplerSettings) -> str:
    """The settings as Hugging Face generate() keyword arguments and llama.cpp flags."""
    kwargs = ", ".join(f"{k}={v!r}" for k, v in to_hf_kwargs(settings).items())
    notes = []
    if hf_leaves_out(settings):
        notes.append(f"transformers has no {', '.join(hf_leaves_out(settings))}: these kwargs leave "
                     f"{'them' if len(hf_leaves_out(settings)) > 1 else 'it'} out"
                     f"{' (in HF order they do nothing here too)' if settings.order == 'hf' else ''}.")
    if llama_cpp_leaves_out(settings):
        notes.append(f"llama.cpp has no {', '.join(llama_cpp_leaves_out(settings))} step: these flags leave "
                     f"{'them' if len(llama_cpp_leaves_out(settings)) > 1 else 'it'} out.")
    if settings.order == "hf":
        notes.append("In HF order the repetition penalty counts every prompt and output token; in llama.cpp order the "
                     f"penalties count only the last {settings.repeat_last_n} (`--repeat-last-n`).")
    return (f"**Hugging Face** `model.generate(input_ids, max_new_tokens=..., {kwargs})`"
            f"\n\n**llama.cpp** `{LLAMA_CPP_PROGRAM} -m model.gguf -p \"…\" {to_llama_cpp_flags(settings)}` "
            f"(`llama-completion`: a plain completion; `llama-cli` would start a chat, since the GGUF has a chat "
            f"template)" + "".join(f"\n\n{n}" for n in notes))


def attention_view(runner: ModelRunner, session: GenSession | None, layer: int, head: int, large: bool):
    """What the newest generated token attends to, in one layer and head (None before the first step)."""
    if session is None or session.attention is None:
        return None
    layer, head = layer_head(runner.cfg, layer, head)
    ids = session.prompt_ids + session.generated
    labels = axis_labels([runner.token_bytes(t) for t in ids])
    title = (f"What the new token {labels[-1]} attends to: layer {layer}, head {head} "
             f"(grey: the prompt, blue: generated)")
    return attention_row_figure(labels, session.attention[layer, head], len(session.prompt_ids), title,
                                font_scale=font_scale(large))


def show_text(runner: ModelRunner, session: GenSession | None, large: bool) -> str:
    """The prompt and the generated tokens, each shaded by the probability it was chosen with."""
    if session is None:
        return ""
    pieces = [runner.token_bytes(t).decode("utf-8", "replace") for t in session.generated]
    return generated_html(session.prompt_text, pieces, session.chosen_p, large, session.generated)


def _push(runner: ModelRunner, session: GenSession | None, large: bool, controls, choose) -> tuple:
    """Append the token choose(session, settings) picks: (session, text, message)."""
    if session is None:
        return session, "", "Analyze a prompt first."
    try:
        settings = settings_from(*controls, breakers=runner.dry_breakers)
        token = int(choose(session, settings))
        session.push(runner, token, float(session.distribution(settings)[token]))
    except ValueError as e:
        return session, show_text(runner, session, large), f"⚠️ {e}"
    return session, show_text(runner, session, large), ""


def _seeded_draw(seed) -> callable:
    """A choice drawn from the chain; the seed and the step number fix it, so the same choices replay the same text."""
    def choose(session: GenSession, settings: SamplerSettings) -> int:
        generator = torch.Generator().manual_seed(int(seed or 0) * SEED_STRIDE + len(session.generated))
        return int(sample(torch.from_numpy(session.logits), settings, generator, session.prompt_ids,
                          session.generated))
    return choose


def sample_next(runner: ModelRunner, session: GenSession | None, seed: int, large: bool, *controls):
    """Sample the next token from the chain (seeded)."""
    return _push(runner, session, large, controls, _seeded_draw(seed))


def take_greedy(runner: ModelRunner, session: GenSession | None, seed: int, large: bool, *controls):
    """Append the most likely token after the chain."""
    return _push(runner, session, large, controls, lambda s, settings: s.distribution(settings).argmax())


def force_token(runner: ModelRunner, session: GenSession | None, seed: int, large: bool, evt: gr.SelectData,
                *controls):
    """A click on a table row appends that token (Gradio passes event data to a named parameter before the
    controls)."""
    row = evt.row_value
    if not row:
        return session, gr.update(), ""
    return _push(runner, session, large, controls, lambda s, settings: int(row[1]))


def restore(runner: ModelRunner, session: GenSession | None, ids_text: str, large: bool, *controls):
    """A prepared link's continuation (`gen=12,873,...`): the generated tokens replaced by these, each stepped with
    the cache and shown with its probability under the current settings."""
    if session is None or not (ids_text or "").strip():
        return session, show_text(runner, session, large), ""
    try:
        ids = [int(x) for x in ids_text.split(",") if x.strip()]
        if len(ids) > MAX_NEW_TOKENS or any(not 0 <= t < runner.cfg.vocab_size for t in ids):
            raise ValueError(f"a continuation is at most {MAX_NEW_TOKENS} token ids below {runner.cfg.vocab_size:,}")
        settings = settings_from(*controls, breakers=runner.dry_breakers)
        session.reset()
        for token in ids:
            session.push(runner, token, float(session.distribution(settings)[token]))
    except ValueError as e:
        return session, show_text(runner, session, large), f"⚠️ The link's continuation: {e}"
    return session, show_text(runner, session, large), ""


def back(runner: ModelRunner, session: GenSession | None, large: bool):
    if session is not None:
        try:
            session.pop(runner)
        except ValueError as e:  # dropped to make room, or the model stayed busy
            return session, show_text(runner, session, large), f"⚠️ {e}"
    return session, show_text(runner, session, large), ""


def reset(runner: ModelRunner, session: GenSession | None, large: bool):
    if session is not None:
        session.reset()
    return session, show_text(runner, session, large), ""


def generate_n(runner: ModelRunner, session: GenSession | None, n: int, seed: int, layer: int, head: int,
               large: bool, *controls) -> Iterator[tuple]:
    """Sample up to n tokens, streaming each with what it attends to (layer, head); stops at end-of-text, a
    message, or the time limit."""
    if session is None:
        yield session, "", "Analyze a prompt first.", None
        return
    started = time.monotonic()
    for _ in range(clamp(n or 1, 1, MAX_NEW_TOKENS)):
        session, text, message = sample_next(runner, session, seed, large, *controls)
        yield session, text, message, attention_view(runner, session, layer, head, large)
        if message or (session.generated and session.generated[-1] == runner.eos_token_id):
            return
        if time.monotonic() - started > GENERATE_TIME_LIMIT_S:
            limit = f"⚠️ Stopped after {GENERATE_TIME_LIMIT_S} s, the time limit for one Generate."
            yield session, text, limit, gr.update()
            return


def draw_samples(runner: ModelRunner, session: GenSession | None, n: int, seed: int, top_n: int, large: bool,
                 *controls):
    """n seeded draws from the chain's distribution, against the distribution itself."""
    if session is None:
        return None
    try:
        probs = session.distribution(settings_from(*controls, breakers=runner.dry_breakers))
    except ValueError:
        return gr.update()
    n, seed = clamp(n or 1, 1, MAX_DRAWS), int(seed or 0)
    counts = torch.bincount(draw(probs, n, seed), minlength=len(probs)).float() / n
    weight = torch.maximum(probs, counts)
    n_positive = int((weight > 0).sum())  # only tokens that can be drawn, or were
    shown = weight.topk(min(clamp(top_n, *TOKENS_SHOWN), n_positive)).indices
    labels = [f"{token_text(runner, int(t))} ({int(t)})" for t in shown]
    return samples_figure(labels, probs[shown].numpy(), counts[shown].numpy(), n, seed, font_scale=font_scale(large))


def after_analyze(runner: ModelRunner, trace: Trace | None, *values):
    """New prompt: a new generation session from its trace, then draw. values: controls, top_n, large."""
    session = None if trace is None else GenSession.start(runner, trace)
    return (session, show_text(runner, session, values[-1]), *render(runner, session, *values), None)


def build(ctx: TabContext) -> TabView:
    runner = ctx.runner
    session = session_state()
    intro(
        "The model's next-token distribution at the end of the prompt, and what each step of a sampler chain does "
        "to it. Every slider recomputes from the stored logits; nothing is re-run. Grey bars: the raw softmax; "
        "coloured bars: the probabilities after the chain, or the step that removed a token."
    )
    sliders = []
    for i, row in enumerate(CONTROL_ROWS):
        with gr.Row():
            if i == 0:
                order = gr.Radio(list(ORDERS), value=ORDERS[0], label="Order", elem_id="samp-order")
            sliders += [gr.Slider(c.low, c.high, value=c.default, step=c.step, label=c.label, elem_id=c.elem_id)
                        for c in row]
    top_n = gr.Slider(5, 40, value=15, step=1, label="Tokens shown", elem_id="samp-topn")
    message = gr.Markdown(elem_id="samp-message")
    with gr.Row():
        bars = gr.Plot(label="Next-token distribution", elem_id="samp-bars", show_label=False)
        matrix = gr.Plot(label="Stages", elem_id="samp-stages", show_label=False)
    with gr.Accordion("Step by step: sample, pick or force the next token", open=True):
        text = gr.HTML(elem_id="samp-text")
        continuation = gr.Textbox(elem_id="samp-continuation", show_label=False, container=False)  # set by links
        with gr.Row():
            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="samp-seed", minimum=0)
            sample_btn = gr.Button("Sample next token", variant="primary", elem_id="samp-sample")
            greedy_btn = gr.Button("Take the most likely", elem_id="samp-greedy")
            back_btn = gr.Button("Back one token", elem_id="samp-back")
            reset_btn = gr.Button("Reset", elem_id="samp-reset")
        with gr.Row():
            n_generate = gr.Number(value=20, precision=0, minimum=1, maximum=MAX_NEW_TOKENS, label="Tokens to generate",
                                   elem_id="samp-n")
            generate_btn = gr.Button("Generate", elem_id="samp-generate")
        table = gr.Dataframe(interactive=False, label="Click a token to force it as the next one", elem_id="samp-table",
                             max_height=300)
        with gr.Row():
            cfg = runner.cfg
            watch_layer = gr.Slider(0, cfg.n_layers - 1, value=cfg.n_layers // 2, step=1, elem_id="samp-att-layer",
                                    label="What the new token attends to: layer")
            watch_head = gr.Slider(0, cfg.n_heads - 1, value=0, step=1, label="head", elem_id="samp-att-head")
        attention = gr.Plot(elem_id="samp-attention", show_label=False)
    with gr.Accordion("Both orders on the same logits", open=False):
        orders = gr.Plot(elem_id="samp-orders", show_label=False)
    with gr.Accordion("Draw samples", open=False):
        with gr.Row():
            n_draws = gr.Number(value=1000, precision=0, minimum=1, maximum=MAX_DRAWS, label="Samples",
                                elem_id="samp-draws")
            draw_btn = gr.Button("Draw", elem_id="samp-draw")
        draws = gr.Plot(elem_id="samp-histogram", show_label=False)
    with gr.Accordion("Export these settings", open=False):
        export = gr.Markdown(elem_id="samp-export")

    controls = [order, *sliders]
    temperature = sliders[[c.name for c in CONTROLS].index("temperature")]
    view = Event(bind(render, runner), [session, *controls, top_n, ctx.large],
                 [bars, matrix, orders, export, table, message])
    for control in (*controls, top_n, ctx.large):
        options = scriptable(READ_ONLY, "sampler") if control is temperature else READ_ONLY
        control.change(view.fn, view.inputs, view.outputs, **options)

    step_inputs = [session, seed, ctx.large, *controls]
    step_outputs = [session, text, message]
    watching = Event(bind(attention_view, runner), [session, watch_layer, watch_head, ctx.large], [attention])
    for control in (watch_layer, watch_head):
        control.change(watching.fn, watching.inputs, watching.outputs, **READ_ONLY)
    for trigger, handler, inputs in (
        (sample_btn.click, sample_next, step_inputs),
        (greedy_btn.click, take_greedy, step_inputs),
        (table.select, force_token, [session, seed, ctx.large, *controls]),
    ):
        watching.then(view.then(trigger(bind(handler, runner), inputs, step_outputs, **STEP_OPTIONS)))
    generating = generate_btn.click(heavy_job(generate_n, runner, "a generation"),
                                    [session, n_generate, seed, watch_layer, watch_head, ctx.large, *controls],
                                    [*step_outputs, attention], **HEAVY)
    view.then(generating)
    watching.then(view.then(continuation.change(bind(restore, runner), [session, continuation, ctx.large, *controls],
                                                step_outputs, **STEP_OPTIONS)))
    watching.then(view.then(back_btn.click(bind(back, runner), [session, ctx.large], step_outputs, **STEP_OPTIONS)))
    watching.then(view.then(reset_btn.click(bind(reset, runner), [session, ctx.large], step_outputs, **READ_ONLY)))
    draw_btn.click(bind(draw_samples, runner), [session, n_draws, seed, top_n, ctx.large, *controls], [draws],
                   **READ_ONLY)

    return TabView(render=Event(bind(after_analyze, runner), [ctx.trace, *view.inputs[1:]],
                                [session, text, *view.outputs, attention]))
