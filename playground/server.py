"""Transformer playground: a Gradio app that shows every intermediate tensor of a real Llama-style model.

This module assembles and launches the app (`python app.py`, as a Space starts it, or the
`transformer-playground` command): the tabs come from `playground.registry.TABS`, the model
is reached only through `playground.runner.ModelRunner`, and each visitor's analysis lives
in their own `gr.State`. It also adjusts two of Gradio's internals for a hall of visitors, each
said where it is done and tested: `lighter_sessions` (a session's component configs built
when first asked for, not all at once per visitor) and `queued` (a full queue says when to
come back). `transformer-playground --help`. Open
`/?prompt=...&tab=attention&large=1` to start on a given prompt, tab and text size.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine, before gradio is imported

import argparse  # noqa: E402
import copy  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlencode  # noqa: E402

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from model import DEFAULT_MODEL, CheckpointError  # noqa: E402
from model.allocator import keep_freed_memory  # noqa: E402
from model.selection import HUB_MODEL, choose_model  # noqa: E402
from playground import api, presenter, room  # noqa: E402
from playground.room import Rooms, RoomError  # noqa: E402
from playground.room_http import RoomRoutes  # noqa: E402
from playground.registry import DEFAULT_TAB, TAB_IDS, TABS  # noqa: E402
from playground.runner import MAX_PROMPT_TOKENS, TRACE_MEMORY_MB, ModelRunner, PromptError  # noqa: E402
from playground.trace import Trace  # noqa: E402
from playground.ui import (  # noqa: E402
    ANALYZE, MODEL_CONCURRENCY, MODEL_RUN, READ_ONLY, SERVER_THREADS, Event, TabContext, TabDrawing, bind, scriptable,
    session_state,
)

EXAMPLES = [
    ("Capitals (a fact to recall)", "The capital of France is Paris. The capital of Germany is", False),
    ("Python code",
     "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)", False),
    ("Dates, numbers, emoji", "In 1969, Neil Armstrong walked on the Moon. 🚀 In 2024, 3 + 4 = 7.", False),
    ("A chat question", "Explain what attention does in a transformer, in one sentence.", True),
    ("A novel's first line (repetition)",
     "Mr and Mrs Dursley, of number four, Privet Drive, were proud to say that they were perfectly normal.", False),
]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TAB_ID_OF_QUERY = {"deck": "tour"}  # a link with ?deck= opens that tab unless it names another
QUEUE_SIZE = 256  # requests waiting at most; more are refused with a message that says when to retry
CACHE_SWEEP_S, CACHE_AGE_S = 900, 3600  # every 15 min, Gradio's temporary files (trace downloads) older than 1 h go
UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/process_recording")  # Gradio's file-upload routes: refused

CSS = """
.hint { color: #666; }
#status p { margin: 0.2em 0; }
#examples [data-testid="accordion-content"] .label { display: none; }  /* the accordion already says "Examples" */
/* Phones: a figure keeps a readable width and scrolls inside its own box; the page never scrolls sideways. */
@media (max-width: 640px) {
  .js-plotly-plot { min-width: 560px; }
  div:has(> .js-plotly-plot) { overflow-x: auto; }
}
"""
PRESENTER_JS = "(large) => window.playgroundPresenter ? window.playgroundPresenter(large) : large"  # presenter.js
SLIDE_JS = "() => {{ if (window.playgroundSlide) window.playgroundSlide('{}'); }}"
ROOM_JS = "() => { if (window.playgroundRoom) window.playgroundRoom.start(); }"  # room.js


def theme() -> gr.themes.Base:
    """System fonts only, so the page fetches nothing from outside (talks are often offline)."""
    return gr.themes.Default(
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def lighter_sessions() -> None:
    """Gradio 6 builds every component's config for each new visitor's session (`SessionState.config_values`,
    kept for its deep links, which this app does not use): about 40 ms of a 2-core server per visitor, so a lecture
    hall opening the page at once pays it a hundred times over before any analysis. Build each entry when first
    asked for instead: the same entries with the same values, later or never (tests/app/test_robustness.py compares
    them with Gradio's own)."""
    from gradio import state_holder

    session_class = state_holder.SessionState
    if getattr(session_class, "lazy_configs", False):
        return
    eager_init = session_class.__init__

    class LazyConfigs(dict):
        """config_values, each block's entry built from the session's config on first use."""

        def __init__(self, session, block_ids) -> None:
            super().__init__()
            self._session, self._block_ids, self._filled = session, block_ids, False

        def _build(self, key) -> bool:
            """Build one block's entry if it is due and missing; whether the key has an entry now."""
            if dict.__contains__(self, key):
                return True
            config = self._session.blocks_config
            if self._filled or key not in self._block_ids or key not in config.blocks:
                return False
            dict.__setitem__(self, key, config.config_for_block(key, [], config.blocks[key]))
            return True

        def _fill(self) -> None:
            if not self._filled:
                order = list(self._session.blocks_config.blocks)
                for key in order:
                    self._build(key)
                built = dict(super().items())
                self.clear()  # in the blocks' order, as Gradio builds them
                self.update({key: built.pop(key) for key in order if key in built})
                self.update(built)
                self._filled = True

        def __contains__(self, key) -> bool:
            return self._build(key)

        def __getitem__(self, key):
            self._build(key)
            return super().__getitem__(key)

        def items(self):
            self._fill()
            return super().items()

    def lazy_init(self, blocks) -> None:
        default, blocks.default_config = blocks.default_config, _NoBlocks(blocks.default_config)
        try:
            eager_init(self, blocks)  # everything else as Gradio does it, over a config with no blocks to build
        finally:
            blocks.default_config = default
        self.blocks_config = copy.copy(default)
        self.config_values = LazyConfigs(self, set(blocks.blocks))

    session_class.__init__ = lazy_init
    session_class.lazy_configs = True
    session_class.eager_init = eager_init


class _NoBlocks:
    """A Blocks config seen with no blocks (for `lighter_sessions`)."""

    def __init__(self, config) -> None:
        self._config = config

    def __copy__(self):
        return _NoBlocks(self._config)

    @property
    def blocks(self) -> dict:
        return {}


class RefuseUploads:
    """ASGI middleware: the app takes no files (it has no upload component), so Gradio's upload routes answer 403
    before reading a byte; on a public Space no one can fill its disk. (max_file_size=0 is the second fence.)"""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/").endswith(UPLOAD_PATHS):
            body = b"This app takes no uploads."
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def launch_options() -> dict:
    """What launch() needs besides the address: the theme, the page's and every tab's CSS, the MCP server (the
    public API endpoints as tools for agents, at /gradio_api/mcp/), and no uploads."""
    from starlette.middleware import Middleware

    css = CSS + presenter.CSS + room.CSS + "".join(getattr(tab.module, "CSS", "") for tab in TABS)
    return dict(theme=theme(), css=css,
                head=presenter.head(TABS), mcp_server=True, max_threads=SERVER_THREADS, max_file_size=0,
                app_kwargs={"middleware": [Middleware(RefuseUploads), Middleware(RoomRoutes)]})


def analyze(runner: ModelRunner, prompt: str, chat: bool, progress=gr.Progress()) -> tuple[Trace | None, str]:
    """Run the model on the prompt: (the new trace, a status line). While it waits, its place in line shows."""
    try:
        trace = runner.analyze(prompt, chat, progress=lambda done, what: progress(done, desc=what))
    except PromptError as e:
        return None, f"⚠️ {e}"
    notes = " ".join(trace.notes)
    return trace, f"Analyzed **{trace.n_tokens}** tokens{' in the chat template' if chat else ''}. {notes}".strip()


def analyze_on_load(runner: ModelRunner, rooms: Rooms, prompt: str, chat: bool, request: gr.Request,
                    progress=gr.Progress()) -> tuple[Trace | None, str]:
    """The analysis a page runs when it opens, except for a room's follower: they are shown the speaker's view, so
    their page runs nothing until they explore on their own. An unknown room code is said, and the app runs."""
    code = dict(request.query_params).get("room") if request is not None else None
    if code:
        try:
            rooms.get(code)
            return None, ""
        except RoomError as e:
            trace, status = analyze(runner, prompt, chat, progress)
            return trace, f"⚠️ {e}\n\n{status}"
    return analyze(runner, prompt, chat, progress)


def from_url(first: str, from_query: dict[str, gr.Component], request: gr.Request):
    """Prompt, chat, presenter mode and tab from the page's query string, for prepared links; then the values of
    the tabs' own query parameters (`TabView.from_query`, e.g. `deck`, which opens the Tour on that deck)."""
    params = dict(request.query_params) if request is not None else {}
    yes = ("1", "true", "yes")
    shown = {param: params[param] for param in from_query if param in params and
             params[param] in [value for _, value in getattr(from_query[param], "choices", [])]}
    default = TAB_ID_OF_QUERY.get(next(iter(shown), ""), first)
    tab = params.get("tab", default)
    tab = tab if tab in TAB_IDS else first
    prompt = params.get("prompt", EXAMPLES[0][1])
    return (prompt, params.get("chat", "0") in yes, params.get("large", "0") in yes, gr.Tabs(selected=tab), tab,
            *(shown.get(param, gr.update()) for param in from_query))


def link(prompt: str, chat: bool, large: bool, active: str) -> str:
    """A link that opens this view: the prompt, the tab, chat and presenter mode."""
    query = urlencode({"prompt": prompt or "", "tab": active, **({"chat": 1} if chat else {}),
                       **({"large": 1} if large else {})})
    return f"Link to this view: [`?{query[:60]}{'…' if len(query) > 60 else ''}`](?{query})"


def export(runner: ModelRunner, trace: Trace | None):
    """The trace's tensors as a downloadable .npz."""
    if trace is None:
        return gr.File(value=None, visible=False), ""
    try:
        return gr.File(value=str(runner.export(trace)), visible=True), gr.update()
    except PromptError as e:
        return gr.File(value=None, visible=False), f"⚠️ {e}"


def rope_and_window(cfg) -> str:
    """The model line's RoPE base(s) and sliding window, where it has them."""
    if cfg.rope_local_base is None and cfg.sliding_window is None:
        return f"RoPE base {cfg.rope_base:g}"
    windowed = sum(cfg.window_of(l) is not None for l in range(cfg.n_layers))
    bases = (f"RoPE base {cfg.rope_local_base:,.0f} on sliding-window layers, {cfg.rope_base:,.0f} on global ones"
             if cfg.rope_local_base is not None else f"RoPE base {cfg.rope_base:g}")
    return f"{bases} · sliding window {cfg.sliding_window} on {windowed} of {cfg.n_layers} layers"


def create_app(runner: ModelRunner, model_note: str = "", decks: dict | None = None, deck: str = "",
               second: ModelRunner | None = None) -> gr.Blocks:
    """The app around one loaded model; `decks` (by name, `playground.deck.Deck`) join the built-in ones, and the
    page opens on the Tour at `deck` if given. `second`: another model for the Compare tab (give it the first's
    gate: one model runs at a time)."""
    lighter_sessions()
    cfg = runner.cfg
    with gr.Blocks(title="Transformer playground", delete_cache=(CACHE_SWEEP_S, CACHE_AGE_S)) as app:
        app.rooms = Rooms(runner)  # the rooms this app serves (`room_http.RoomRoutes` finds them here)
        api.register(runner)  # first, so the API's names are its own (a tab's event of the same name gets a suffix)
        trace = session_state()
        with gr.Column(elem_id="top"):
            gr.Markdown("# Transformer playground", elem_id="title")
            gr.Markdown(
                f"**{cfg.name}**: {cfg.n_layers} layers · d_model {cfg.d_model} · {cfg.n_heads} query heads sharing "
                f"{cfg.n_kv_heads} key/value heads · d_head {cfg.d_head} · {rope_and_window(cfg)} · "
                f"vocabulary {cfg.vocab_size:,}"
                f"{f' · {model_note.rstrip(chr(46))}' if model_note else ''}. "
                f"Type a prompt and press **Analyze**: the model runs once, and every tab reads that run.",
                elem_id="model-line",
            )
            with gr.Row(elem_id="prompt-row"):
                # One line that grows to eight: Enter analyzes, Shift+Enter starts a new line.
                prompt = gr.Textbox(label=f"Prompt (up to {MAX_PROMPT_TOKENS} tokens; Enter analyzes, Shift+Enter "
                                          f"starts a new line)", value=EXAMPLES[0][1], lines=1, max_lines=8, scale=4,
                                    elem_id="prompt")
                with gr.Column(scale=1, min_width=200, elem_id="prompt-side"):
                    chat = gr.Checkbox(label="Wrap in the model's chat template" if runner.has_chat_template else
                                       "Chat template: none (a base model)", value=False, elem_id="chat",
                                       interactive=runner.has_chat_template)
                    analyze_btn = gr.Button("Analyze", variant="primary", elem_id="analyze")
                    large = gr.Checkbox(label="Presenter mode (large, high-contrast text; ? for keys)", value=False,
                                        elem_id="large")
                    with gr.Row(elem_id="slide-buttons"):
                        slide_png = gr.Button("Slide ⤓ PNG", size="sm", elem_id="slide-png")
                        slide_svg = gr.Button("SVG", size="sm", elem_id="slide-svg")
                        room_btn = gr.Button("Start a room", size="sm", elem_id="room-start")
        status = gr.Markdown(elem_id="status")
        with gr.Accordion("Examples", open=True, elem_id="examples"):
            gr.Examples([[text, is_chat and runner.has_chat_template] for _, text, is_chat in EXAMPLES], [prompt, chat],
                        label=None,
                        example_labels=[label for label, _, _ in EXAMPLES])

        first = "tour" if deck else DEFAULT_TAB
        active = gr.State(first)  # which tab is showing
        ctx = TabContext(runner=runner, trace=trace, large=large, active=active, decks=dict(decks or {}), deck=deck,
                         second=second)
        from_query: dict[str, gr.Component] = {}
        with gr.Tabs(selected=first) as tabs:
            tab_items, renders = [], []
            for spec in TABS:
                with gr.Tab(spec.label, id=spec.id) as tab:
                    view = spec.module.build(ctx)
                    renders.append(view.render)
                    from_query.update(view.from_query)
                tab_items.append(tab)
        with gr.Row():
            share = gr.Markdown(elem_id="share-link")
            download_btn = gr.Button("Download this trace's tensors (.npz)", elem_id="download-trace", scale=0,
                                     size="sm")
            trace_file = gr.File(label="Trace tensors", elem_id="trace-file", visible=False, scale=1, height=90)

        link_to_view = Event(lambda showing, *values: link(*values, showing), [prompt, chat, large], [share])
        tabs_drawn = TabDrawing(list(TAB_IDS), renders, trace, active, gr.State({}), footer=link_to_view)
        for spec, tab in zip(TABS, tab_items):
            opened = tabs_drawn.on_open(spec.id)
            tab.select(opened.fn, opened.inputs, opened.outputs, **scriptable(MODEL_RUN, f"open_{spec.id}"))
        large.change(None, large, None, js=PRESENTER_JS, **READ_ONLY)
        slide_png.click(None, None, None, js=SLIDE_JS.format("png"), **READ_ONLY)
        slide_svg.click(None, None, None, js=SLIDE_JS.format("svg"), **READ_ONLY)
        room_btn.click(None, None, None, js=ROOM_JS, **READ_ONLY)
        download_btn.click(bind(export, runner), trace, [trace_file, status], **MODEL_RUN)

        drawing = tabs_drawn.after_analyze()
        analyzing = dict(fn=bind(analyze, runner), inputs=[prompt, chat], outputs=[trace, status])
        drawing.then(analyze_btn.click(**analyzing, **scriptable(ANALYZE, "analyze")), name="draw")
        drawing.then(prompt.submit(**analyzing, **ANALYZE))
        def from_this_url(request: gr.Request):
            return from_url(first, from_query, request)

        opened = app.load(from_this_url, None, [prompt, chat, large, tabs, active, *from_query.values()],
                          **READ_ONLY)

        def analyze_opened(prompt: str, chat: bool, request: gr.Request, progress=gr.Progress()):
            return analyze_on_load(runner, app.rooms, prompt, chat, request, progress)

        drawing.then(opened.then(analyze_opened, [prompt, chat], [trace, status], **ANALYZE))
    return app


def queued(app: gr.Blocks, max_size: int = QUEUE_SIZE, runner: ModelRunner | None = None) -> gr.Blocks:
    """The app with Gradio's queue: model runs two at a time by default, at most max_size waiting. A request that
    finds the queue full is refused with a message that says about when to try again (from the runner's measured
    speed when given), instead of Gradio's "Queue is full. Max size is N"."""
    app.queue(default_concurrency_limit=MODEL_CONCURRENCY, max_size=max_size)
    queue, push = app._queue, app._queue.push  # Gradio has no setting for this message: wrap the one call

    async def push_or_say_when(body, request, username):
        ok, detail, state = await push(body, request, username)
        if state == "queue_full":
            detail = full_message(len(queue), runner)
        return ok, detail, state

    queue.push = push_or_say_when
    return app


def full_message(waiting: int, runner: ModelRunner | None) -> str:
    """What a visitor reads when the queue is full: how many wait, and about when to try again (each waiting request
    counted as a short analysis at the speed measured here; at least 5 s)."""
    per_request = runner.estimate_seconds(64 * runner.cfg.n_layers) if runner is not None else 0.2
    retry = max(5, round(waiting * per_request / 5) * 5)
    return (f"The playground is full right now: {waiting} requests are waiting. Please try again in about "
            f"{retry} s.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help=f"preset name, .gguf file, HF model directory or hub id "
                             f"(default: {DEFAULT_MODEL}; on a Space, {HUB_MODEL} from the hub)")
    # Hugging Face Spaces start `python app.py` with GRADIO_SERVER_NAME=0.0.0.0 and GRADIO_SERVER_PORT set.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
                        help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=os.environ.get("GRADIO_SERVER_PORT") or 7860,
                        help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    parser.add_argument("--trace-memory-mb", type=int, default=TRACE_MEMORY_MB,
                        help="memory for all visitors' analyses together; the least recently used are dropped "
                             f"beyond it (default: $PLAYGROUND_TRACE_MEMORY_MB, else {TRACE_MEMORY_MB})")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32",
                        help="the weights' type (default float32; bfloat16 halves the memory on CPU, and moves the "
                             "numbers shown in their third decimal)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the model runs: the CPU for now (auto = cpu)")
    parser.add_argument("--compare-model", default=None,
                        help="a second model for the Compare tab, e.g. gemma3-270m (refused, with the arithmetic, "
                             "when this machine cannot hold it beside the first)")
    parser.add_argument("--room", action="store_true",
                        help="open a room at start: the audience's phones follow this page and guess the next token "
                             "(the console prints the follow link and the speaker's link; see the README's Run a room)")
    parser.add_argument("--public-url", default=os.environ.get("PLAYGROUND_PUBLIC_URL", ""),
                        help="the address the audience reaches this server at, for a room's link and QR code "
                             "(default: a Space's own address; with --host 0.0.0.0, this machine's LAN address)")
    parser.add_argument("--deck", default=None, help="a talk as a Markdown file of views: the page opens on its first "
                                                     "slide (see the README's Decks)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    keep_freed_memory()
    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise CheckpointError("--device cuda: PyTorch sees no GPU here (torch.cuda.is_available() is False: no "
                                  "GPU, no driver, or a CPU-only torch build). Start it with --device cpu, or leave "
                                  "--device out.")
        if args.device == "cuda":
            raise CheckpointError("--device cuda: the app's views run on the CPU for now (the model alone runs on a "
                                  "GPU: `load(device='cuda')` in Python, and bench/bench_gpu.py). Start it with "
                                  "--device cpu, or leave --device out.")
        dtype = DTYPES[args.dtype]
        net, enc, note = choose_model(args.model, dtype)
        if dtype != torch.float32:
            note += (f" · weights in {args.dtype}; every number shown is computed or cast to float32 from "
                     f"{args.dtype} activations")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    runner = ModelRunner(net, enc, memory_mb=args.trace_memory_mb)
    second = None
    if args.compare_model:
        try:
            net2, enc2, note2 = choose_model(args.compare_model, dtype)  # check_fits counts what the first holds
        except CheckpointError as e:
            print(f"error: --compare-model: {e}", file=sys.stderr)
            return 1
        second = ModelRunner(net2, enc2, memory_mb=args.trace_memory_mb, gate=runner.gate)
        second.budget = runner.budget  # one memory budget for both models' traces
        note += f" · compared with {net2.cfg.name}: {note2}"
    decks, deck = {}, ""
    if args.deck:
        from playground.walk import checked_decks, deck_name, load_deck

        try:
            deck = deck_name(Path(args.deck))
            decks[deck] = load_deck(Path(args.deck).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            print(f"error: cannot read the deck {args.deck}: {e}", file=sys.stderr)
            return 1
        for problem in checked_decks(runner, decks)[deck].problems:  # prompts over the token cap too
            print(f"deck {args.deck}: {problem}", file=sys.stderr)
        print(f"deck {args.deck}: {len(decks[deck].slides)} slides, linked as ?deck={deck}", file=sys.stderr)
    app = create_app(runner, note, decks, deck, second=second)
    app.rooms.configure(host=args.host, port=args.port, public_url=args.public_url)
    if args.room:
        opened = app.rooms.create()
        _, reach = app.rooms.base_url()
        print(f"room {opened.code}: the audience opens {opened.follow_url}\n"
              f"room {opened.code}: the speaker opens {opened.follow_url}#key={opened.key} (keep it private)"
              f"{chr(10) + 'room: ' + reach if reach else ''}", file=sys.stderr)
    queued(app, runner=runner).launch(server_name=args.host, server_port=args.port, share=args.share,
                                      **launch_options())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
