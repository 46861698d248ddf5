"""The shell's contract: every registered tab builds and renders from a trace, and only the runner reaches the model."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import pytest

from playground.registry import TAB_IDS, TABS
from playground.gen_session import GenSession
from playground.runner import ModelRunner
from playground.turns import ModelGate
from playground.ui import Event, TabContext, TabView

from ..conftest import TINY_PROMPT

ROOT = Path(__file__).resolve().parents[2]


def build(spec, runner):
    with gr.Blocks():
        trace, large, active = gr.State(None), gr.Checkbox(False), gr.State(spec.id)
        view = spec.module.build(TabContext(runner=runner, trace=trace, large=large, active=active))
    return view, trace, active


def _serialised(values) -> list[str]:
    """What a render shows, as text: figures and tables as JSON, everything else as its repr."""
    return [v.to_json() if isinstance(v, (go.Figure, pd.DataFrame)) else repr(v) for v in values]


@pytest.mark.parametrize("spec", TABS, ids=lambda t: t.id)
def test_every_tab_builds_and_renders_from_a_trace(tiny_runner, tiny_trace, spec):
    view, trace, active = build(spec, tiny_runner)
    assert isinstance(view, TabView) and isinstance(view.render, Event)
    assert view.render.inputs[0] is trace  # the shell passes the new trace first
    values = [spec.id if c is active else c.value for c in view.render.inputs[1:]]
    before = view.render.fn(None, *values)  # before any analysis: no error
    assert len(before) == len(view.render.outputs)
    shown = view.render.fn(tiny_trace, *values)
    assert len(shown) == len(view.render.outputs)
    drawn = [o for o in shown if o is not None and not isinstance(o,
                                                                  dict) and not (isinstance(o, str) and not o.strip())]
    assert drawn, f"{spec.id} drew nothing from a trace"
    if spec.id != "bpe":  # Train BPE shows the tokenizer and a typed word, never the prompt
        assert _serialised(shown) != _serialised(before)  # the trace changed what it shows
    after = view.render.fn(None, *values)  # and without a trace again, nothing of that prompt stays
    assert _serialised(after) == _serialised(before), f"{spec.id} keeps something of the last prompt"


def test_a_tab_draws_when_shown_and_once_per_trace(tiny_runner, tiny_trace):
    from playground.ui import TabDrawing

    calls = []
    with gr.Blocks():
        trace, large, active, drawn = gr.State(None), gr.Checkbox(False), gr.State(TABS[0].id), gr.State({})
        views = [spec.module.build(TabContext(runner=tiny_runner, trace=trace, large=large, active=active))
                 for spec in TABS]
        footer = Event(lambda showing, *values: f"showing {showing}", [large], [gr.Markdown()])
    renders = [Event(lambda *a, r=v.render, i=spec.id, **k: calls.append(i) or r.fn(*a, **k), v.render.inputs,
                     v.render.outputs, v.render.runs_model) for spec, v in zip(TABS, views)]
    drawing = TabDrawing([t.id for t in TABS], renders, trace, active, drawn, footer)
    values = [c.value for c in drawing.values]
    after = drawing.after_analyze()
    shown, *out = after.fn(tiny_trace, {}, TABS[1].id, *values)  # after an Analyze: only the tab showing draws
    assert calls == [TABS[1].id] and shown == {TABS[1].id: tiny_trace.serial}
    assert len(out) == len(drawing.outputs) - 1 and out[-1] == f"showing {TABS[1].id}"
    active_id, shown, *out = drawing.on_open(TABS[3].id).fn(tiny_trace, shown, *values)  # another tab, opened
    assert active_id == TABS[3].id and calls == [TABS[1].id, TABS[3].id]
    drawing.on_open(TABS[1].id).fn(tiny_trace, shown, *values)  # back to the first: already drawn
    assert calls == [TABS[1].id, TABS[3].id]


def test_tab_ids_are_unique_and_link_safe():
    assert len(set(TAB_IDS)) == len(TABS)
    assert all(tab_id.isidentifier() for tab_id in TAB_IDS)


def python_files() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "playground").rglob("*.py"))]


MODEL_FUNCTIONS = {"load", "load_checkpoint", "build_model", "generate", "lens_logits", "logit_lens", "Transformer"}
PRIVATE_TO_THE_RUNNER = {"net", "_net", "enc", "_enc", "_locked", "_lock", "decode_single_token_bytes"}


# The runner's jobs in their own modules: the runner calls them with the model held (batch_forward) or hands them its
# lock as `hold` (batcher, lens_worker). They may name the model's type; none may load or build one.
RUNNER_JOBS = {"batch_forward.py", "batcher.py", "lens_worker.py"}


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_runner_reaches_the_model(path):
    if path.name == "runner.py":
        return
    forbidden = MODEL_FUNCTIONS - {"Transformer"} if path.name in RUNNER_JOBS else MODEL_FUNCTIONS
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            where = f"{path.name}:{node.lineno}"
            assert node.attr not in PRIVATE_TO_THE_RUNNER, f"{where} reaches past the runner (.{node.attr})"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("model"):
            names = {alias.name for alias in node.names}
            where = f"{path.name}:{node.lineno}"
            assert not names & forbidden, f"{where} imports {names & forbidden} from {node.module}"
    if "figures" in path.parts:  # pure plotting: no model, no Gradio
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        modules = [a.name for n in imports if isinstance(n, ast.Import) for a in n.names] + \
                  [n.module or "" for n in imports if isinstance(n, ast.ImportFrom)]
        assert not [m for m in modules if m.split(".")[0] in ("model", "gradio",
                                                              "torch")], f"{path.name} imports {modules}"


@pytest.mark.parametrize("spec", TABS, ids=lambda t: t.id)
def test_every_tab_says_plainly_when_a_trace_was_dropped(tiny_runner, spec):
    trace = tiny_runner.analyze("the cat sat on the mat")
    trace.drop()  # the memory budget made room for other visitors
    view, _, active = build(spec, tiny_runner)
    shown = view.render.fn(trace, *[spec.id if c is active else c.value for c in view.render.inputs[1:]])
    texts = " ".join(o for o in shown if isinstance(o, str))
    needs_the_residuals = spec.id in ("attention", "rope", "lens", "block", "routes", "lab")  # lab: flash's q, k, v
    assert ("Press Analyze to run it again" in texts) == needs_the_residuals


def test_generation_from_a_dropped_trace_says_so(tiny_runner):
    from playground import tab_sampler

    trace = tiny_runner.analyze("the cat sat on the mat")
    session = GenSession.start(tiny_runner, trace)
    trace.drop()
    controls = ["HF transformers", 1.0, 0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    _, _, message = tab_sampler.sample_next(tiny_runner, session, 0, False, *controls)
    assert "Press Analyze" in message and session.generated == []


KINDS = {"slider": gr.Slider, "radio": gr.Radio, "number": gr.Number, "text": gr.Textbox}


@pytest.mark.parametrize("spec", TABS, ids=lambda t: t.id)
def test_keys_and_links_name_the_tabs_own_controls(tiny_runner, spec):
    """Presenter keys and prepared links work a tab's controls by elem_id: each must exist in that tab, be of the
    kind the page's script expects, and the head script must carry them."""
    import json

    from playground import presenter

    with gr.Blocks() as blocks:
        trace, large, active = gr.State(None), gr.Checkbox(False), gr.State(spec.id)
        spec.module.build(TabContext(runner=tiny_runner, trace=trace, large=large, active=active))
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    assert spec.figure in by_id
    for key in spec.keys:
        expected = gr.Button if key.step is None else gr.Slider
        assert isinstance(by_id.get(key.target), expected), (spec.id, key)
    for link in spec.links:
        assert isinstance(by_id.get(link.target), KINDS[link.kind]), (spec.id, link)
    for figure, target in spec.clicks.items():  # a click on the figure goes into the textbox, which has a handler
        assert isinstance(by_id.get(figure), gr.Plot) and isinstance(by_id.get(target), gr.Textbox), (figure, target)
        assert any(target_of.elem_id == target for dep in blocks.fns.values() for target_of in
                   [blocks.blocks[t[0]] for t in dep.targets if t[0] in blocks.blocks]), target
    head = presenter.head(TABS)
    config = json.loads(head.split("window.PLAYGROUND_CONFIG = ")[1].split(";</script>")[0])
    assert config == presenter.config(TABS)  # what the page gets is the whole configuration, as JSON
    keys, links = config["keys"], config["links"]
    assert [k["target"] for k in keys[spec.id]] == [k.target for k in spec.keys]
    assert [k["param"] for k in links[spec.id]] == [k.param for k in spec.links]
    assert presenter.SCRIPT.read_text() in head


def _font_sizes(fig) -> list[tuple[str, float]]:
    """Every font size a Plotly figure sets: page font, title, hover labels, legend, axes, traces' text, annotations."""
    layout = fig.layout
    sizes = [("font", layout.font.size), ("title", layout.title.font.size), ("hoverlabel", layout.hoverlabel.font.size)]
    if layout.legend.font.size is not None:
        sizes.append(("legend", layout.legend.font.size))
    for name in dir(layout):
        if name.startswith(("xaxis", "yaxis")) and getattr(layout, name, None) is not None:
            axis = getattr(layout, name)
            if axis.tickfont.size is not None:
                sizes.append((f"{name} ticks", axis.tickfont.size))
    for trace in fig.data:
        font = getattr(trace, "textfont", None)
        if font is not None and font.size is not None:
            sizes.append((f"{trace.type} text", font.size))
        label = getattr(trace, "hoverlabel", None)
        if label is not None and label.font.size is not None:
            sizes.append((f"{trace.type} hover", label.font.size))
    sizes += [("annotation", a.font.size) for a in layout.annotations if a.font.size is not None]
    return sizes


@pytest.mark.parametrize("spec", TABS, ids=lambda t: t.id)
def test_presenter_figures_use_no_font_under_18_px(tiny_runner, tiny_trace, spec):
    """In presenter mode every size a tab's figures set, hover text included, is at least 18 px."""
    import plotly.graph_objects as go

    with gr.Blocks():
        trace, large, active = gr.State(None), gr.Checkbox(True), gr.State(spec.id)
        view = spec.module.build(TabContext(runner=tiny_runner, trace=trace, large=large, active=active))
    values = [spec.id if c is active else True if c is large else c.value for c in view.render.inputs[1:]]
    figures = [o for o in view.render.fn(tiny_trace, *values) if isinstance(o, go.Figure)]
    for fig in figures:
        small = [(what, size) for what, size in _font_sizes(fig) if size is None or size < 18]
        assert not small, (spec.id, fig.layout.title.text, small)


def _arguments(fn, trace_state, trace, shown_tab: str) -> list:
    """What Gradio would pass: each input component's starting value (the visitor's trace for the trace state),
    and a click on the first cell where the handler takes event data."""
    import typing

    args = [trace if c is trace_state else shown_tab if isinstance(c, gr.State) and c.value in TAB_IDS else c.value
            for c in fn.inputs]
    hints = typing.get_type_hints(fn.fn)  # resolved: a handler's own annotations may be strings
    for i, name in enumerate(inspect.signature(fn.fn).parameters):
        hint = hints.get(name)
        if isinstance(hint, type) and issubclass(hint, gr.EventData):
            args.insert(i, hint(None, {"index": [0, 0], "value": "0", "selected": True, "row_value": [0, 1],
                                       "col_value": None}))
        elif hint is gr.Request:  # a page opened with a prepared link
            args.insert(i, gr.Request(session_hash="a-visitor", query_params={"prompt": "the cat", "tab": "rope"}))
    return args


def test_handlers_declared_lock_free_never_take_the_model_lock(tiny_net, tiny_enc):
    """The event contract: a READ_ONLY handler (no concurrency limit) must not hold the shared model even briefly;
    a handler that may recompute a layer is declared LAYER_VIEW (or MODEL_RUN) and gets a limit. Every lock-free
    handler of the whole app runs here on a real trace, and the lock counts whether it was taken."""
    from app import create_app

    lock = ModelGate()  # counts how often the model is taken
    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False, gate=lock)
    app = create_app(runner)
    trace = runner.analyze(TINY_PROMPT, lens=False)
    (analyze,) = [fn for fn in app.fns.values() if fn.name == "analyze" and fn.api_name == "analyze"]
    trace_state = analyze.outputs[0]
    tab_of = {spec.module.__name__: spec.id for spec in TABS}  # a tab's handlers run as if it were showing
    ran, offenders = 0, []
    for fn in app.fns.values():
        if fn.fn is None or fn.concurrency_limit is not None:  # only JavaScript, or allowed the model
            continue
        trace.layers.clear()  # nothing cached hides a recomputation
        trace.lens.clear()
        trace.resid_mid = None
        before = lock.taken
        out = fn.fn(*_arguments(fn, trace_state, trace, tab_of.get(fn.fn.__module__, TAB_IDS[0])))
        if inspect.isgenerator(out):
            list(out)
        ran += 1
        if lock.taken != before:
            offenders.append(f"{fn.fn.__module__}.{fn.name}")
    assert not offenders, f"declared lock-free, yet took the model's lock: {sorted(set(offenders))}"
    assert ran >= 20  # most handlers ran through on a real trace, so the check saw their model calls


def _local_imports(path: Path) -> set[str]:
    """The project modules a file imports (model.x, playground.x), resolving relative imports."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in [*parts, base] if p)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
            found.update(n for n in names if (ROOT / (n.replace(".", "/") + ".py")).exists())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if (ROOT / (a.name.replace(".", "/") + ".py")).exists())
    return found


def test_no_import_circles():
    """model/ and playground/ import each other's modules without a cycle (a type-only import counts too)."""
    files = sorted((ROOT / "model").rglob("*.py")) + sorted((ROOT / "playground").rglob("*.py"))
    graph = {".".join(p.relative_to(ROOT).with_suffix("").parts): _local_imports(p) for p in files}
    graph = {name.removesuffix(".__init__"): deps for name, deps in graph.items()}
    done, path = set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            if dep != module and not module.startswith(dep + "."):  # a package's own __init__ is not a circle
                visit(dep)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)
    assert "playground.runner" in graph and graph["playground.batcher"].isdisjoint({"playground.runner"})


def test_every_long_job_is_counted_per_visitor(tiny_net, tiny_enc):
    """An event in the long jobs' concurrency group is wrapped by `heavy_job` (Gradio passes it the request first),
    and the events that run a sweep, a decoding comparison or a generation are in that group."""
    from app import create_app

    app = create_app(ModelRunner(tiny_net, tiny_enc, background_lens=False))
    heavy = {fn.name for fn in app.fns.values() if fn.concurrency_id == "heavy_job"}
    assert {"patch", "sweep_layers", "compare", "speculate", "contrast", "kv_cache", "generate_n", "measure"} <= heavy
    for fn in app.fns.values():
        if fn.concurrency_id == "heavy_job" and fn.api_name != "patch":  # the API's /patch counts its visitor itself
            first = next(iter(inspect.signature(fn.fn).parameters.values()))
            assert first.name == "request" and first.annotation is gr.Request, fn.name
