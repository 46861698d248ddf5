"""Tour tab: a guided walk through one forward pass of the visitor's own prompt, and talks as decks of views.

The tour is ten steps, each one view of an existing tab with a caption computed from this prompt's numbers (never
a canned sentence): tokens, embeddings, RoPE, a previous-token head and an attention sink, the residual stream,
an MLP's neurons, the logit lens, the route, the next-token distribution and a few generated tokens. A deck
(`playground.deck`, a Markdown file) is a list of such views, each with its own prompt; the next slide's
analysis starts in the background while the current one is shown. Back / Next (← → and a clicker's PgUp /
PgDn) step; *Open in its tab* opens the live view; *Export* writes the whole walk as one offline HTML file
(`deck_export`).
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from model.decoding import greedy, token_log_probs
from model.sampling import SamplerSettings, distribution

from . import tab_attention, tab_block, tab_embeddings, tab_lens, tab_rope, tab_routes, tab_sampler
from .deck import TOUR_STEPS, Deck, Slide, built_in_decks, parse_deck
from .deck_export import deck_html
from .figures.tokens import token_label
from .figures.tour import continuation_figure, tokens_table
from .gen_session import GenSession
from .rope_formulas import rope_frequencies
from .runner import ROUTES_MAX_TOKENS, ModelRunner, PromptError
from .trace import Trace
from .ui import (
    MODEL_RUN, READ_ONLY, Event, Key, TabContext, TabView, font_scale, intro, session_state, token_markdown,
)

TAB_ID = "tour"
THE_TOUR = "tour"  # the walk's choice for the tour of the visitor's own prompt
SLIDE_TABS = ("tokenization", "attention", "rope", "lens", "sampler", "routes", "block", "embeddings", "tour")
KEYS = (Key(("ArrowRight", "PageDown"), "tour-next", None, "next step"),
        Key(("ArrowLeft", "PageUp"), "tour-back", None, "previous step"))
GENERATED = 8  # tokens the last step generates
KEPT_TRACES = 4  # a visitor's deck keeps this many slides' analyses (the memory budget still counts them)
TEMPERATURE, TOP_P = 0.7, 0.9  # what step 9 shows the distribution under


def _quiet(*args, **kwargs) -> None:
    return None


def _links() -> dict[str, dict[str, str]]:
    """Each slide tab's link parameters and their kinds: a slide's fields."""
    modules = {"attention": tab_attention, "rope": tab_rope, "lens": tab_lens, "sampler": tab_sampler,
               "routes": tab_routes, "block": tab_block, "tokenization": None, "embeddings": None}
    return {tab: {link.param: link.kind for link in getattr(module, "LINKS", ())} for tab, module in modules.items()}


def load_deck(text: str) -> Deck:
    """A deck, with the tabs' own link parameters as its fields (tabs that cannot be a slide are refused)."""
    return parse_deck(text, _links())


# -- the tour: ten steps through one forward pass -----------------------------------------------------------


def _words(trace: Trace) -> list[list[int]]:
    """Token positions grouped into words: a token that starts with a space or a newline starts a new word."""
    words: list[list[int]] = []
    for i, data in enumerate(trace.token_bytes):
        if not words or data[:1] in (b" ", b"\n", b"\t") or trace.special[i]:
            words.append([i])
        else:
            words[-1].append(i)
    return words


def tour_step(runner: ModelRunner, trace: Trace, step: int, large: bool) -> tuple[str, str, object, str, dict]:
    """Step `step` (1..10) of the tour of this trace: (title, caption, figure, the tab it comes from, that tab's
    link values)."""
    cfg, scale, T = runner.cfg, font_scale(large), trace.n_tokens
    last = T - 1
    text = lambda i: token_markdown(runner, int(trace.ids[i]))  # noqa: E731
    if step == 1:
        words = _words(trace)
        longest = max(words, key=len)
        pieces = " + ".join(text(i) for i in longest)
        split = (f"The longest word splits into **{len(longest)} pieces**: {pieces}." if len(longest) > 1 else
                 "Every word here is a single token.")
        caption = (f"The prompt becomes **{T} tokens** ({len(words)} words): the model never sees letters, only "
                   f"these ids from its {cfg.vocab_size:,}-token byte-level BPE vocabulary. {split}")
        table = tokens_table([token_label(b, True, 24) for b in trace.token_bytes], trace.ids.tolist(),
                             [b.hex(" ") for b in trace.token_bytes], f"{T} tokens", font_scale=scale)
        return "The prompt becomes tokens", caption, table, "tokenization", {}
    if step == 2:
        token = int(trace.ids[last])
        name = runner.token_bytes(token).decode("utf-8", "replace")
        _, neighbours, *_ = tab_embeddings.render_token(runner, name, 6, "", large)
        view = runner.embeddings([token], 6)
        near = ", ".join(token_markdown(runner, int(t)) for t in view.nearest[0] if int(t) != token)
        caption = (f"Each token becomes a row of **{cfg.d_model} numbers** from the embedding matrix "
                   f"({cfg.vocab_size:,} × {cfg.d_model}). The last token, {text(last)}, sits closest to {near} "
                   f"(cosine of their rows): tokens used alike get rows alike.")
        return "Each token becomes a vector", caption, neighbours, "embeddings", {}
    if step == 3:
        d, base = cfg.d_head, cfg.rope_base
        theta = rope_frequencies(d, base, cfg.rope_scaling)  # the model's own (Llama 3 scales the slow ones)
        fastest = math.degrees(last * theta[0]) % 360
        slowest = math.degrees(last * theta[-1])
        pairs, *_ = tab_rope.render(runner, trace, 0, 0, last, max(0, last - 1), math.log10(base), large)
        caption = (f"Position enters by rotation (RoPE): each head's q and k are split into {d // 2} pairs, and pair i "
                   f"turns by position × {base:g}^(−2i/{d}). At the last position ({last}) the fastest pair has turned "
                   f"{last} radians (**{fastest:.0f}°** past whole turns) and the slowest only **{slowest:.3f}°**; "
                   f"q·k then depends on how far apart two tokens are, not where they are.")
        return "RoPE rotates q and k", caption, pairs, "rope", {"layer": 0, "head": 0, "pos": last}
    if step == 4:
        stats = np.nan_to_num(trace.head_stats)
        prev = np.unravel_index(int(stats[:, :, 1].argmax()), stats.shape[:2])
        sink = np.unravel_index(int(stats[:, :, 0].argmax()), stats.shape[:2])
        heatmap, *_ = tab_attention.render_head(runner, trace, int(prev[0]), int(prev[1]), large)
        caption = (f"Attention moves information between positions. **L{prev[0]}H{prev[1]}** is a previous-token "
                   f"head: on average it puts **{stats[prev][1]:.0%}** of its weight on the token just before. "
                   f"**L{sink[0]}H{sink[1]}** is an attention sink: **{stats[sink][0]:.0%}** on the first token "
                   f"(found from this prompt's head statistics, of {cfg.n_layers * cfg.n_heads} heads; "
                   f"{cfg.n_groups} query heads share each key/value head).")
        return "Heads look back", caption, heatmap, "attention", {"layer": int(prev[0]), "head": int(prev[1])}
    if step == 5:
        norms = np.linalg.norm(trace.resid[:, last], axis=-1)
        figure, _ = tab_block.overview(runner, trace, large)
        caption = (f"Every layer adds to the **residual stream**: at the last token its norm grows from "
                   f"**{norms[0]:.2f}** after the embedding to **{norms[-1]:.1f}** after layer {cfg.n_layers - 1} "
                   f"(largest after L{int(norms[1:].argmax())}: {norms[1:].max():.1f}). Each block reads it through "
                   f"an RMSNorm and writes its output back by addition.")
        return "The residual stream grows", caption, figure, "block", {"layer": cfg.n_layers - 1, "pos": last}
    if step == 6:
        mids = runner.resid_mid(trace)
        mlp_out = np.linalg.norm(trace.resid[1:, last] - mids[:, last], axis=-1)  # (L,)
        layer = int(mlp_out.argmax())
        view = runner.block(trace, layer, last)
        size = np.abs(view.post) * view.w2_norms
        top = int(size.argmax())
        _, _, neurons, _ = tab_block.render(runner, trace, layer, last, large)
        caption = (f"The MLP works on each token alone: {cfg.d_mlp} neurons, each writing one column of w2 scaled "
                   f"by its activation. At {text(last)} the MLP that writes the most is layer **{layer}**'s "
                   f"(‖out‖ = {mlp_out[layer]:.1f}); its strongest neuron, **n{top}**, writes {size[top]:.2f} of it "
                   f"(activation {view.post[top]:+.2f}).")
        return "The MLP's neurons", caption, neurons, "block", {"layer": layer, "pos": last}
    if step == 7:
        rows, lens = runner.lens(trace, False)
        grid, *_ = tab_lens.render(runner, trace, "top_prob", False, last, "", large, progress=_quiet)
        hits = np.flatnonzero(lens.rank_final[:, last].numpy() == 0)
        final = int(lens.top_ids[-1, last, 0])
        first = rows[int(hits[0])] if len(hits) else rows[-1]
        caption = (f"The **logit lens** reads every layer's residual stream as if it were the last. At the last "
                   f"position the model's answer, {token_markdown(runner, final)}, is the top-1 guess from row "
                   f"**{first}** on" + (f" (of {len(rows)} rows)." if len(hits) else ".") +
                   " Earlier rows show what the stream held before.")
        return "The answer appears", caption, grid, "lens", {"pos": last}
    if step == 8:
        if T > ROUTES_MAX_TOKENS:
            raise PromptError(f"Routes are computed for prompts up to {ROUTES_MAX_TOKENS} tokens; this one has {T}.")
        graph, _ = tab_routes.graph_view(runner, trace, last, tab_routes.THRESHOLD, large, progress=_quiet)
        f = runner.routes(trace)
        shares = f.attn[:, last].sum(-1)
        layer, head = (int(v) for v in np.unravel_index(int(shares.argmax()), shares.shape))
        keys = f.attn[layer, last, head]
        source = int(keys.argmax())
        caption = (f"The **route** to the prediction: back from the last token, the parts that make up at least "
                   f"{tab_routes.THRESHOLD:.0%} of each state. The head that moves the most into the last position is "
                   f"**L{layer}H{head}** ({float(shares[layer, head]):.0%} of its layer's state), mostly from "
                   f"{text(source)}; the last MLP makes up {float(f.mlp[-1, last]):.0%} of the final state.")
        return "The route it took", caption, graph, "routes", {"pos": last}
    if step == 9:
        logits = torch.from_numpy(trace.next_logits)
        plain = logits.softmax(-1)
        settings = SamplerSettings(temperature=TEMPERATURE, top_p=TOP_P)
        shaped = distribution(logits, settings, prompt_ids=trace.ids.tolist())
        best = int(plain.argmax())
        session = GenSession.start(runner, trace)
        values = [TEMPERATURE if c.name == "temperature" else TOP_P if c.name == "top_p" else c.default
                  for c in tab_sampler.CONTROLS]
        bars, *_ = tab_sampler.render(runner, session, "hf", *values, 15, large)
        caption = (f"The last position's logits become the next-token distribution: {token_markdown(runner, best)} "
                   f"with p = **{float(plain[best]):.3f}**. Temperature {TEMPERATURE} sharpens it and top-p {TOP_P} "
                   f"keeps the smallest set reaching {TOP_P:.0%}: **{int((shaped > 0).sum()):,}** of "
                   f"{len(plain):,} tokens stay, and {token_markdown(runner, best)} now has p = "
                   f"**{float(shaped[best]):.3f}**.")
        return "The next-token distribution", caption, bars, "sampler", {"temperature": TEMPERATURE, "top_p": TOP_P}
    if step == 10:
        ids = trace.ids.tolist()
        stop = [runner.eos_token_id] if runner.eos_token_id is not None else []
        tokens, _ = runner.run_strategy(greedy, ids, GENERATED, stop)
        probs = np.exp(runner.run_strategy(token_log_probs, ids, tokens))
        words = runner.decode(tokens)
        figure = continuation_figure([token_label(runner.token_bytes(t), True, 14) for t in tokens], probs,
                                     f"{len(tokens)} tokens, greedy: each the most likely", font_scale=scale)
        tail = " ".join(trace.prompt.split()[-6:])
        caption = (f"Append the chosen token and run again: greedy decoding (always the most likely) continues "
                   f"“…{tail}” with **“{words}”**. The least certain step had p = {probs.min():.2f}; "
                   f"the Sampler and Decoding tabs show other ways to choose.")
        return "A few more tokens", caption, figure, "sampler", {}
    raise ValueError(f"step must be 1..{TOUR_STEPS}, got {step}")


# -- a slide: a tab's view in a given state ---------------------------------------------------------------------


def slide_view(runner: ModelRunner, trace: Trace, slide: Slide, large: bool) -> tuple[str, object, str, dict]:
    """(caption, figure, the tab it shows, link values) of a deck's slide: its tab's main figure in the slide's
    state (a tour step brings its own caption, used when the slide has none, and names its own tab)."""
    state, last = slide.state, trace.n_tokens - 1

    def whole(name: str, default: int, high: int) -> int:
        value = int(state.get(name, default))
        if not 0 <= value <= high:
            raise PromptError(f"slide {slide.title!r}: {name} must be in 0..{high}, got {value}")
        return value

    cfg = runner.cfg
    if slide.tab == "tour":
        _, caption, figure, tab, values = tour_step(runner, trace, int(state["step"]), large)
        return slide.caption or caption, figure, tab, values
    if slide.tab == "tokenization":
        return slide.caption, tour_step(runner, trace, 1, large)[2], slide.tab, {}
    if slide.tab == "embeddings":
        return slide.caption, tour_step(runner, trace, 2, large)[2], slide.tab, {}
    layer, head = whole("layer", 0, cfg.n_layers - 1), whole("head", 0, cfg.n_heads - 1)
    pos = whole("pos", last, last)
    if slide.tab == "attention":
        figure = tab_attention.render_head(runner, trace, layer, head, large)[0]
    elif slide.tab == "rope":
        figure = tab_rope.render(runner, trace, layer, head, pos, max(0, pos - 1), math.log10(cfg.rope_base), large)[0]
    elif slide.tab == "lens":
        figure = tab_lens.render(runner, trace, "top_prob", False, pos, "", large, progress=_quiet)[0]
    elif slide.tab == "block":
        figure = tab_block.render(runner, trace, layer, pos, large)[2]
    elif slide.tab == "routes":
        figure, note = tab_routes.graph_view(runner, trace, pos, state.get("threshold", tab_routes.THRESHOLD), large,
                                             progress=_quiet)
        if figure is None:
            raise PromptError(f"slide {slide.title!r}: {note.removeprefix('⚠️').strip()}")
    elif slide.tab == "sampler":
        values = [state.get(c.link, c.default) if c.link else c.default for c in tab_sampler.CONTROLS]
        figure, *_, message = tab_sampler.render(runner, GenSession.start(runner, trace), state.get("order", "hf"),
                                                 *values, 15, large)
        if figure is None or message:
            raise PromptError(f"slide {slide.title!r}: {message.removeprefix('⚠️').strip()}")
    else:
        raise PromptError(f"slide {slide.title!r}: the {slide.tab} tab cannot be a slide yet")
    return slide.caption, figure, slide.tab, dict(state)


# -- a visitor's walk: which deck, which step, the slides' analyses --------------------------------------------


class Walk:
    """A visitor's walk through the tour or a deck: the slides' analyses, the last few kept, and the next one's
    started in the background (session state: each visitor gets their own from the state's default)."""

    def __init__(self) -> None:
        self._traces: OrderedDict[tuple[str, bool], Trace] = OrderedDict()
        self._mutex = threading.Lock()
        self._pending: dict[tuple[str, bool], threading.Thread] = {}

    def __deepcopy__(self, memo) -> Walk:
        return Walk()

    def trace(self, runner: ModelRunner, prompt: str, chat: bool) -> Trace:
        """The analysis of a slide's prompt: kept, being made in the background (waited for), or made now."""
        key = (prompt, chat)
        with self._mutex:
            pending = self._pending.get(key)
        if pending is not None:
            pending.join()
        with self._mutex:
            kept = self._traces.get(key)
            if kept is not None and not kept.dropped:
                self._traces.move_to_end(key)
                return kept
        return self._analyse(runner, prompt, chat)

    def _analyse(self, runner: ModelRunner, prompt: str, chat: bool) -> Trace:
        key = (prompt, chat)
        trace = runner.analyze(prompt, chat, lens=False)
        with self._mutex:
            self._traces[key] = trace
            while len(self._traces) > KEPT_TRACES:
                self._traces.popitem(last=False)
        return trace

    def prepare(self, runner: ModelRunner, prompt: str, chat: bool) -> None:
        """Start the analysis of the next slide's prompt in the background, if it is not kept already."""
        key = (prompt, chat)
        with self._mutex:
            if key in self._traces or key in self._pending:
                return

        def run() -> None:
            try:
                self._analyse(runner, prompt, chat)
            except PromptError:
                pass  # the slide will say so when shown
            finally:
                with self._mutex:
                    self._pending.pop(key, None)

        thread = threading.Thread(target=run, daemon=True)
        with self._mutex:
            self._pending[key] = thread
        thread.start()


def deck_of(choice: str, decks: dict[str, Deck]) -> Deck | None:
    """The deck chosen (None: the tour of the visitor's own prompt)."""
    return None if choice == THE_TOUR else decks.get(choice)


def show(runner: ModelRunner, decks: dict[str, Deck], trace: Trace | None, walk: Walk | None, choice: str, step,
         large: bool):
    """(progress line, caption, figure, notes, where the view lives (JSON for *Open in its tab*), step)."""
    walk = walk if walk is not None else Walk()
    deck = deck_of(choice, decks)
    total = TOUR_STEPS if deck is None else len(deck.slides)
    if total == 0:
        return "This deck has no slides that load.", "\n".join(deck.problems), None, "", "", 1
    step = int(min(max(int(step or 1), 1), total))
    try:
        if deck is None:
            if trace is None:
                return f"Step {step} of {total}", "Analyze a prompt first: the tour walks through it.", None, "", "", \
                    step
            title, caption, figure, tab, values = tour_step(runner, trace, step, large)
            notes, where = "", {"tab": tab, "values": values}
        else:
            slide = deck.slides[step - 1]
            shown = walk.trace(runner, slide.prompt, slide.chat)
            if step < total:  # the next slide's analysis, while this one is shown
                after = deck.slides[step]
                walk.prepare(runner, after.prompt, after.chat)
            caption, figure, tab, values = slide_view(runner, shown, slide, large)
            title, notes = slide.title, slide.notes
            where = {"tab": tab, "values": values, "prompt": slide.prompt}
    except (PromptError, ValueError) as e:
        return f"Step {step} of {total}", f"⚠️ {e}", None, "", "", step
    progress = f"**Step {step} of {total}** · {title}" + (f" · *{deck.title}*" if deck is not None else "")
    return progress, caption, figure, notes, json.dumps(where), step


def export(runner: ModelRunner, decks: dict[str, Deck], trace: Trace | None, walk: Walk | None, choice: str,
           large: bool):
    """The whole walk (every step or slide) as one self-contained HTML file."""
    walk = walk if walk is not None else Walk()
    deck = deck_of(choice, decks)
    total = TOUR_STEPS if deck is None else len(deck.slides)
    slides, problems = [], []
    for step in range(1, total + 1):
        progress, caption, figure, notes, _, _ = show(runner, decks, trace, walk, choice, step, large)
        if figure is None:
            problems.append(f"step {step}: {caption}")
            continue
        title = progress.split(" · ", 1)[1].split(" · *")[0] if " · " in progress else progress
        slides.append((title, caption, notes, figure))
    if not slides:
        return gr.File(value=None, visible=False), "⚠️ Nothing to export: " + "; ".join(problems)
    name = "tour" if deck is None else choice
    path = Path(export_folder()) / f"{name}.html"
    heading = "A tour of one forward pass" if deck is None else deck.title
    path.write_text(deck_html(heading, slides), encoding="utf-8")
    note = f"Exported {len(slides)} slides" + (f"; left out: {'; '.join(problems)}" if problems else ".")
    return gr.File(value=str(path), visible=True), note


def export_folder() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="deck-")


CSS = "#tour-where { display: none !important; }"
OPEN_JS = """(where) => {
  try { const w = JSON.parse(where);
        if (window.playgroundOpen) window.playgroundOpen(w.tab, w.values || {}, w.prompt); } catch (e) {}
}"""


def checked_decks(runner: ModelRunner, decks: dict[str, Deck]) -> dict[str, Deck]:
    """The decks with every slide's prompt tokenized: a slide whose prompt the model would refuse (over the token
    cap, say) is left out, with a message naming the slide and the field."""
    for deck in decks.values():
        kept = []
        for number, slide in enumerate(deck.slides, 1):
            try:
                runner.tokenize(slide.prompt, slide.chat)
            except PromptError as e:
                deck.problems.append(f"slide {number} ({slide.title!r}) left out: prompt: {e}")
                continue
            kept.append(slide)
        deck.slides = kept
    return decks


def build(ctx: TabContext) -> TabView:
    runner = ctx.runner
    decks = {name: load_deck(path.read_text(encoding="utf-8")) for name, path in built_in_decks().items()}
    decks = checked_decks(runner, {**decks, **ctx.decks})
    intro(
        "A guided walk through one forward pass of **your prompt**, step by step: each step is one view of a tab, "
        "with a caption written from this prompt's numbers. Or choose a **deck**: a talk written as a Markdown file "
        "of views (see the README's *Decks*). ← → (or a clicker) step; *Open this view in its tab* opens the live "
        "view."
    )
    choices = [("Your prompt, step by step (the tour)", THE_TOUR)] + [(d.title, name) for name, d in decks.items()]
    with gr.Row():
        choice = gr.Dropdown(choices, value=ctx.deck if ctx.deck in decks else THE_TOUR, label="Walk through",
                             elem_id="tour-deck", scale=3)
        back = gr.Button("← Back", elem_id="tour-back", scale=1)
        forward = gr.Button("Next →", variant="primary", elem_id="tour-next", scale=1)
    with gr.Row(elem_id="tour-slide", equal_height=False):  # the slide: its caption beside its view, one screen
        with gr.Column(scale=2, min_width=300):
            progress = gr.Markdown(elem_id="tour-progress")
            caption = gr.Markdown(elem_id="tour-caption")
        with gr.Column(scale=3, min_width=360):
            figure = gr.Plot(elem_id="tour-figure", show_label=False)
    with gr.Row():
        open_tab = gr.Button("Open this view in its tab", size="sm", elem_id="tour-open")
        export_btn = gr.Button("Export the whole walk as one HTML file (works offline)", size="sm",
                               elem_id="tour-export")
    exported = gr.File(label="Deck", visible=False, elem_id="tour-file", height=90)
    export_note = gr.Markdown(elem_id="tour-export-note")
    problems = [p for d in decks.values() for p in d.problems]
    gr.Markdown("Deck problems:\n" + "\n".join(f"- {p}" for p in problems) if problems else "",
                elem_id="tour-problems")
    with gr.Accordion("Speaker notes", open=False):
        notes = gr.Markdown(elem_id="tour-notes")
    where = gr.Textbox(elem_id="tour-where", container=False, show_label=False)  # hidden by CSS: JS reads it
    step = session_state(1)
    walk = session_state(Walk())

    def showing(trace, w, c, s, large):
        return show(runner, decks, trace, w, c, s, large)

    def exporting(trace, w, c, large):
        return export(runner, decks, trace, w, c, large)

    def render(trace, w, c, s, large, progress=gr.Progress()):
        return show(runner, decks, trace, w, c, s, large)

    shown = [progress, caption, figure, notes, where, step]
    inputs = [ctx.trace, walk, choice, step, ctx.large]
    back.click(lambda s: max(1, int(s or 1) - 1), step, step, **READ_ONLY).then(showing, inputs, shown, **MODEL_RUN)
    forward.click(lambda s: int(s or 1) + 1, step, step, **READ_ONLY).then(showing, inputs, shown, **MODEL_RUN)
    choice.input(lambda: 1, None, step, **READ_ONLY).then(showing, inputs, shown, **MODEL_RUN)
    open_tab.click(None, where, None, js=OPEN_JS, **READ_ONLY)
    export_btn.click(exporting, [ctx.trace, walk, choice, ctx.large], [exported, export_note], **MODEL_RUN)
    return TabView(render=Event(render, inputs, shown, runs_model=True), from_query={"deck": choice})
