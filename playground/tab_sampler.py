"""Sampler tab: the next-token distribution and every step of a modern sampler chain, live.

Slider moves recompute the chain on cached logits (no model run). Step-by-step generation
keeps a per-visitor `GenSession` whose KV cache starts from the trace's own keys and values,
so each new token costs one position of compute; going back just shortens the cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import pandas as pd
import torch

from model import KVCache
from model.sampling import SamplerSettings, distribution, draw, sample, stages, to_hf_kwargs, to_llama_cpp_flags

from . import READ_ONLY
from .figures import token_label
from .figures_sampler import distribution_bars, generated_html, orders_figure, samples_figure, stages_matrix
from .trace import ModelRunner, Trace

MAX_NEW_TOKENS = 128  # per session, step by step or in one go
GENERATE_TIME_LIMIT_S = 60  # one "Generate" press stops streaming after this long


@dataclass
class GenSession:
    """One visitor's generation: the prompt, the tokens chosen so far, and what the model said after each."""

    prompt_ids: list[int]
    prompt_text: str
    logits: list[np.ndarray]  # next-token logits after the prompt, then after each generated token
    cache: KVCache
    generated: list[int] = field(default_factory=list)
    chosen_p: list[float] = field(default_factory=list)  # probability each token was chosen with

    @classmethod
    def from_trace(cls, trace: Trace, runner: ModelRunner) -> GenSession:
        """Start from an analysed prompt: its logits, and its keys/values (after RoPE) as the cache."""
        cfg, T = runner.cfg, trace.n_tokens
        cache = KVCache.empty(cfg, 1, T + MAX_NEW_TOKENS, runner.net.tok_embeddings.weight.dtype, "cpu")
        for layer in range(cfg.n_layers):
            cache.k[layer][0, :, :T] = torch.from_numpy(trace.rot_k[layer]).transpose(0, 1)  # (G, T, Dh)
            cache.v[layer][0, :, :T] = torch.from_numpy(trace.v[layer]).transpose(0, 1)
        cache.length = T
        return cls(trace.ids.tolist(), runner.enc.decode(trace.ids.tolist()), [trace.next_logits], cache)

    def push(self, token: int, p: float, runner: ModelRunner) -> None:
        """Append a token: one forward step over it with the cache."""
        if len(self.generated) >= MAX_NEW_TOKENS:
            raise ValueError(f"the limit is {MAX_NEW_TOKENS} generated tokens; press Reset to start again")
        with runner.locked() as net:
            logits = net(torch.tensor([[token]]), cache=self.cache)[0, -1].float()
        self.generated.append(token)
        self.chosen_p.append(p)
        self.logits.append(logits.numpy())

    def pop(self) -> None:
        if self.generated:
            self.generated.pop()
            self.chosen_p.pop()
            self.logits.pop()
            self.cache.length -= 1

    def reset(self) -> None:
        while self.generated:
            self.pop()


def settings_from(order, t, k, p, min_p, typical, rep, presence, frequency) -> SamplerSettings:
    """SamplerSettings from control values (raises ValueError with a readable message when out of range)."""
    try:
        return SamplerSettings(temperature=float(t), top_k=int(k), top_p=float(p), min_p=float(min_p), typical_p=float(typical),
                               repetition_penalty=float(rep), presence_penalty=float(presence), frequency_penalty=float(frequency),
                               order="llama.cpp" if str(order).startswith("llama") else "hf")
    except (TypeError, ValueError) as e:
        raise ValueError(str(e).split("; got")[0]) from None


def token_name(runner: ModelRunner, token: int) -> str:
    return token_label(runner.enc.decode_single_token_bytes(token), True, 20)


def render(session: GenSession | None, controls: list, top_n: int, large: bool, runner: ModelRunner):
    """Bars, stages, both orders, export and the clickable table, from the cached logits."""
    if session is None:
        return None, None, None, "", None, "Analyze a prompt first."
    try:
        settings = settings_from(*controls)
    except ValueError as e:
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), f"⚠️ {e}"
    scale = 1.5 if large else 1.0
    logits = torch.from_numpy(session.logits[-1])
    history = dict(prompt_ids=session.prompt_ids, generated_ids=session.generated)
    st = stages(logits, settings, **history)
    raw, final = st[0].probs, st[-1].probs
    top_n = int(np.clip(top_n, 3, 60))
    shown = torch.maximum(raw, final).topk(top_n).indices
    labels = [f"{token_name(runner, int(t))}" for t in shown]
    labels = [f"{label} ({int(t)})" if labels.count(label) > 1 else label for label, t in zip(labels, shown)]
    removed_by = [next((s.name for s in st if s.removed[t]), None) for t in shown]
    step = len(session.generated)
    bars = distribution_bars(labels, raw[shown].numpy(), final[shown].numpy(), removed_by,
                             f"Next token{'' if step == 0 else f' (step {step + 1})'}: {st[-1].kept:,} of {len(raw):,} tokens left",
                             font_scale=scale)
    matrix = stages_matrix(labels, torch.stack([s.probs[shown] for s in st], dim=1).numpy(), [s.name for s in st],
                           [s.kept for s in st], [s.entropy_bits for s in st], f"The chain, {settings.order} order: each step's distribution",
                           font_scale=scale)
    other = SamplerSettings(**{**settings.__dict__, "order": "llama.cpp" if settings.order == "hf" else "hf"})
    p_hf, p_ll = (final, distribution(logits, other, **history)) if settings.order == "hf" else (distribution(logits, other, **history), final)
    orders = orders_figure(labels, p_hf[shown].numpy(), p_ll[shown].numpy(), "Same logits, same settings, two orders", font_scale=scale)
    hf_kwargs = to_hf_kwargs(settings)
    note = ""
    if settings.order == "hf" and (settings.presence_penalty or settings.frequency_penalty):
        note = "\n\nHF transformers has no presence or frequency penalty: in HF order they do nothing."
    export = (f"**Hugging Face** `model.generate(input_ids, max_new_tokens=..., {', '.join(f'{k}={v!r}' for k, v in hf_kwargs.items())})`"
              f"\n\n**llama.cpp** `llama-cli -m model.gguf {to_llama_cpp_flags(settings)}`{note}")
    table = pd.DataFrame({"token": labels, "id": shown.tolist(), "p": np.round(final[shown].double().numpy(), 4),
                          "raw p": np.round(raw[shown].double().numpy(), 4)})
    return bars, matrix, orders, export, table, ""


def build(runner: ModelRunner, trace_state: gr.State, large_mode: gr.Checkbox):
    """Lay out the tab; returns (render function, its inputs, its outputs) for the app to call after Analyze."""
    session = gr.State(None, time_to_live=3600)
    gr.Markdown(
        "The model's next-token distribution at the end of the prompt, and what each step of a sampler chain does "
        "to it. Every slider recomputes from the stored logits; nothing is re-run. Grey bars: the raw softmax; "
        "coloured bars: the probabilities after the chain, or the step that removed a token."
    )
    with gr.Row():
        order = gr.Radio(["HF transformers", "llama.cpp"], value="HF transformers", label="Order", elem_id="samp-order")
        temperature = gr.Slider(0, 2, value=1.0, step=0.05, label="Temperature (0 = greedy)", elem_id="samp-temp")
        top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)", elem_id="samp-topk")
        top_p = gr.Slider(0.01, 1, value=1.0, step=0.01, label="Top-p (1 = off)", elem_id="samp-topp")
    with gr.Row():
        min_p = gr.Slider(0, 1, value=0.0, step=0.01, label="Min-p (0 = off)", elem_id="samp-minp")
        typical = gr.Slider(0.01, 1, value=1.0, step=0.01, label="Typical-p (1 = off)", elem_id="samp-typical")
        rep = gr.Slider(0.5, 2, value=1.0, step=0.05, label="Repetition penalty (1 = off)", elem_id="samp-rep")
        presence = gr.Slider(-2, 2, value=0.0, step=0.1, label="Presence penalty (llama.cpp)", elem_id="samp-presence")
        frequency = gr.Slider(-2, 2, value=0.0, step=0.1, label="Frequency penalty (llama.cpp)", elem_id="samp-frequency")
    top_n = gr.Slider(5, 40, value=15, step=1, label="Tokens shown", elem_id="samp-topn")
    message = gr.Markdown(elem_id="samp-message")
    with gr.Row():
        bars = gr.Plot(label="Next-token distribution", elem_id="samp-bars", show_label=False)
        matrix = gr.Plot(label="Stages", elem_id="samp-stages", show_label=False)
    with gr.Accordion("Step by step: sample, pick or force the next token", open=True):
        text = gr.HTML(elem_id="samp-text")
        with gr.Row():
            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="samp-seed", minimum=0)
            sample_btn = gr.Button("Sample next token", variant="primary", elem_id="samp-sample")
            greedy_btn = gr.Button("Take the most likely", elem_id="samp-greedy")
            back_btn = gr.Button("Back one token", elem_id="samp-back")
            reset_btn = gr.Button("Reset", elem_id="samp-reset")
        with gr.Row():
            n_generate = gr.Number(value=20, precision=0, minimum=1, maximum=MAX_NEW_TOKENS, label="Tokens to generate", elem_id="samp-n")
            generate_btn = gr.Button("Generate", elem_id="samp-generate")
        table = gr.Dataframe(interactive=False, label="Click a token to force it as the next one", elem_id="samp-table", max_height=300)
    with gr.Accordion("Both orders on the same logits", open=False):
        orders = gr.Plot(elem_id="samp-orders", show_label=False)
    with gr.Accordion("Draw samples", open=False):
        with gr.Row():
            n_draws = gr.Number(value=1000, precision=0, minimum=1, maximum=100_000, label="Samples", elem_id="samp-draws")
            draw_btn = gr.Button("Draw", elem_id="samp-draw")
        draws = gr.Plot(elem_id="samp-histogram", show_label=False)
    with gr.Accordion("Export these settings", open=False):
        export = gr.Markdown(elem_id="samp-export")

    controls = [order, temperature, top_k, top_p, min_p, typical, rep, presence, frequency]
    view_inputs = [session, *controls, top_n, large_mode]
    view_outputs = [bars, matrix, orders, export, table, message]

    def view(sess, *values):
        *ctrl, n, large = values
        return render(sess, ctrl, n, large, runner)

    for control in (*controls, top_n, large_mode):
        control.change(view, view_inputs, view_outputs, **READ_ONLY)

    def show_text(sess: GenSession | None, large: bool) -> str:
        if sess is None:
            return ""
        return generated_html(sess.prompt_text, [runner.enc.decode_single_token_bytes(t).decode("utf-8", "replace") for t in sess.generated],
                              sess.chosen_p, large)

    def chosen(sess: GenSession, token: int, ctrl) -> float:
        probs = distribution(torch.from_numpy(sess.logits[-1]), settings_from(*ctrl), sess.prompt_ids, sess.generated)
        return float(probs[token])

    def step(sess: GenSession | None, how: str, s: float, large: bool, *ctrl, forced: int | None = None):
        if sess is None:
            return sess, "", "Analyze a prompt first."
        try:
            settings = settings_from(*ctrl)
            logits = torch.from_numpy(sess.logits[-1])
            if forced is not None:
                token = forced
            elif how == "greedy":
                token = int(distribution(logits, settings, sess.prompt_ids, sess.generated).argmax())
            else:  # the seed and the step number fix the draw: the same choices replay the same text
                generator = torch.Generator().manual_seed(int(s or 0) * 100_003 + len(sess.generated))
                token = int(sample(logits, settings, generator, sess.prompt_ids, sess.generated))
            sess.push(token, chosen(sess, token, ctrl), runner)
        except ValueError as e:
            return sess, show_text(sess, large), f"⚠️ {e}"
        return sess, show_text(sess, large), ""

    step_outputs = [session, text, message]
    for button, how in ((sample_btn, "sample"), (greedy_btn, "greedy")):
        button.click(lambda sess, s, large, *ctrl, how=how: step(sess, how, s, large, *ctrl), [session, seed, large_mode, *controls],
                     step_outputs, concurrency_limit=4, api_visibility="private").then(view, view_inputs, view_outputs, **READ_ONLY)

    def force(sess, s, large, order_, t, k, p, mp, typ, r, pres, freq, evt: gr.SelectData):
        """A click on a table row: append that token (Gradio passes event data only to named parameters)."""
        row = evt.row_value
        ctrl = (order_, t, k, p, mp, typ, r, pres, freq)
        return step(sess, "force", s, large, *ctrl, forced=int(row[1])) if row else (sess, gr.update(), "")

    table.select(force, [session, seed, large_mode, *controls], step_outputs, concurrency_limit=4,
                 api_visibility="private").then(view, view_inputs, view_outputs, **READ_ONLY)

    def back(sess, large):
        if sess is not None:
            sess.pop()
        return sess, show_text(sess, large), ""

    def reset(sess, large):
        if sess is not None:
            sess.reset()
        return sess, show_text(sess, large), ""

    back_btn.click(back, [session, large_mode], step_outputs, **READ_ONLY).then(view, view_inputs, view_outputs, **READ_ONLY)
    reset_btn.click(reset, [session, large_mode], step_outputs, **READ_ONLY).then(view, view_inputs, view_outputs, **READ_ONLY)

    def generate_n(sess, n, s, large, *ctrl):
        """Stream tokens as they come."""
        if sess is None:
            yield sess, "", "Analyze a prompt first."
            return
        n = int(np.clip(n or 1, 1, MAX_NEW_TOKENS))
        started = time.monotonic()
        for _ in range(n):
            sess, html_text, msg = step(sess, "sample", s, large, *ctrl)
            yield sess, html_text, msg
            if msg or (runner.enc.eos_token_id is not None and sess.generated and sess.generated[-1] == runner.enc.eos_token_id):
                return
            if time.monotonic() - started > GENERATE_TIME_LIMIT_S:
                yield sess, html_text, f"⚠️ Stopped after {GENERATE_TIME_LIMIT_S} s, the time limit for one Generate."
                return

    generate_btn.click(generate_n, [session, n_generate, seed, large_mode, *controls], step_outputs, concurrency_limit=4,
                       api_visibility="private").then(view, view_inputs, view_outputs, **READ_ONLY)

    def draw_samples(sess, n, s, n_shown, large, *ctrl):
        if sess is None:
            return None
        try:
            settings = settings_from(*ctrl)
        except ValueError:
            return gr.update()
        probs = distribution(torch.from_numpy(sess.logits[-1]), settings, sess.prompt_ids, sess.generated)
        n, s = int(np.clip(n or 1, 1, 100_000)), int(s or 0)
        counts = torch.bincount(draw(probs, n, s), minlength=len(probs)).float() / n
        weight = torch.maximum(probs, counts)
        n_positive = int((weight > 0).sum())  # only tokens that can be drawn, or were
        shown = weight.topk(min(int(np.clip(n_shown, 3, 60)), n_positive)).indices
        labels = [f"{token_name(runner, int(t))} ({int(t)})" for t in shown]
        return samples_figure(labels, probs[shown].numpy(), counts[shown].numpy(), n, s, font_scale=1.5 if large else 1.0)

    draw_btn.click(draw_samples, [session, n_draws, seed, top_n, large_mode, *controls], [draws], **READ_ONLY)

    def after_analyze(trace: Trace | None, *values):
        sess = None if trace is None else GenSession.from_trace(trace, runner)
        large = values[-1]
        return (sess, show_text(sess, large), *view(sess, *values))

    return after_analyze, [trace_state, *view_inputs[1:]], [session, text, *view_outputs]
