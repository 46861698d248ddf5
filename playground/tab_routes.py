"""Routes tab: which positions, heads and MLPs carried one prediction (information flow routes, Ferrando & Voita
2024), and why a head attends where it does (its pre-softmax score split into the residual stream's components).

The importances (`model.routes.flow`, about 1.6 s for 64 tokens on two cores) are computed once per prompt, a layer
per turn at the model, and kept with the trace; moving the position or the threshold only rebuilds the graph.
A click on the graph (a node, an attention edge's midpoint, an MLP's square) comes back through a hidden textbox
(`presenter.js` writes the point's JSON there) and opens its details below.
"""

from __future__ import annotations

import json

import gradio as gr
import numpy as np

from model.routes import Flow, named_terms, route_graph

from .figures.routes import level_name, routes_figure, split_figure
from .figures.tokens import axis_labels
from .runner import ModelRunner, PromptError
from .trace import Trace
from .ui import (
    LAYER_VIEW, MODEL_RUN, READ_ONLY, Event, Link, TabContext, TabView, arrows, bind, font_scale, intro, number,
    token_markdown,
)
from .view import View, head_of, layer_of, position_of, threshold_of

TAB_ID = "routes"
THRESHOLD = 0.04  # the paper's
KEYS = (*arrows("routes-position", "position"), *arrows("routes-threshold", "threshold", "ArrowDown", "ArrowUp"))
LINKS = (Link("pos", "routes-position"), Link("threshold", "routes-threshold"), Link("layer", "routes-layer"),
         Link("head", "routes-head"), Link("query", "routes-query"), Link("key", "routes-key", last=True))
CLICKS = {"routes-graph": "routes-picked"}  # a click on the figure writes the point's identity into the textbox
TOP_TOKENS = 5


def _text(runner: ModelRunner, token: int) -> str:
    return token_markdown(runner, token)


def drawn_edges(f: Flow, position: int, threshold: float, tokens: list[str]) -> list[tuple]:
    """The graph's edges as the figure draws them: each key -> query attention edge with its heads merged (kind
    "attn"), and the residual and MLP edges."""
    graph = route_graph(f, position, threshold)
    merged: dict[tuple, list] = {}
    drawn = []
    for e in graph.edges:
        if e.kind == "attn":
            merged.setdefault((e.layer, e.source, e.target), []).append((e.head, e.importance))
            continue
        what = "the MLP's output" if e.kind == "mlp" else "the residual"
        where = f"L{e.layer} {'MLP' if e.kind.startswith('mlp') else 'attention'}"
        drawn.append((e.kind, e.layer, e.source, e.target, e.importance,
                      f"{where} at {tokens[e.target]}: {what}, {e.importance:.0%} (before the threshold {e.raw:.1%})"))
    for (layer, source, target), heads in merged.items():
        heads.sort(key=lambda h: -h[1])
        listed = ", ".join(f"H{h} {share:.0%}" for h, share in heads)
        drawn.append(("attn", layer, source, target, sum(share for _, share in heads),
                      f"L{layer}: {tokens[source]} → {tokens[target]}<br>{listed} (click for why)"))
    return drawn


def strongest_head(f: Flow, position: int) -> tuple[int, int, float]:
    """The head that moves the most into `position`: (layer, head, its share of its layer's state there)."""
    shares = f.attn[:, position].sum(-1)  # (L, H): each head's total share at this position
    layer, head = (int(v) for v in np.unravel_index(int(shares.argmax()), shares.shape))
    return layer, head, float(shares[layer, head])


def graph(runner: ModelRunner, trace: Trace, pos: int = -1, threshold: float = THRESHOLD, large: bool = False,
          progress=None) -> View:
    """The routes to the prediction after `pos`, kept above `threshold` of each state: the Routes tab's main view."""
    pos = position_of(trace.n_tokens, pos)
    threshold = threshold_of(threshold)
    f = runner.routes(trace, progress=progress)
    cfg = runner.cfg
    tokens = axis_labels(trace.token_bytes)
    edges = drawn_edges(f, pos, threshold, tokens)
    attention_edges = [e for e in edges if e[0] == "attn"]
    layer, head, share = strongest_head(f, pos)
    note = (f"**{len(edges)} edges** ({len(attention_edges)} of them attention edges from a key to a query) carry the "
            f"prediction after {tokens[pos]}, keeping parts above **{threshold:g}** of each state and renormalising. "
            f"At the top, the last MLP is **{float(f.mlp[-1, pos]):.0%}** of the final state. The head that moves the "
            f"most into this position: **L{layer}H{head}** ({share:.0%} of its layer's state after attention). Each "
            f"query head is its own part: here {cfg.n_groups} query heads share each key/value head ({cfg.n_heads} "
            f"query heads, {cfg.n_kv_heads} key/value heads), and an edge's heads are listed on hover. Click a node, "
            f"an attention edge's dot or an MLP's square.")
    if cfg.post_norms:
        note += (" This model norms each attention output again before adding it (ln1_post): each head's and key's "
                 "part passes through that norm with its scale frozen at this run's, so the parts still sum to what "
                 "the attention adds.")
    facts = {"layer": layer, "head": head, "share": share, "source": int(f.attn[layer, pos, head].argmax()),
             "mlp": float(f.mlp[-1, pos]), "edges": len(edges), "attention_edges": len(attention_edges)}
    return View(routes_figure(edges, cfg.n_layers, tokens, pos, threshold, font_scale(large)), note, facts)


def graph_view(runner: ModelRunner, trace: Trace | None, position, threshold, large: bool, progress=gr.Progress()):
    """The graph's handler: (the routes figure, a note), or a ⚠️ line."""
    if trace is None:
        return None, ""
    try:
        shown = graph(runner, trace, position, threshold, large, lambda done, what: progress(done, desc=what))
    except PromptError as e:
        return None, f"⚠️ {e}"
    return shown.figure, shown.note


def why(runner: ModelRunner, trace: Trace, layer: int, head: int, query: int = -1, key: int | None = None,
        large: bool = False) -> View:
    """Why a head attends from `query` to `key` (default: the key it attends most): its score split into the
    residual stream's components, a note with the largest terms, and against the key the head attends most."""
    cfg = runner.cfg
    layer, head = layer_of(cfg, layer), head_of(cfg, head)
    query = position_of(trace.n_tokens, query, "query")
    pattern = runner.layer(trace, layer).pattern[head, query]
    most = int(pattern.argmax())
    key = most if key is None else position_of(trace.n_tokens, key, "key")
    if key > query:
        raise PromptError(f"key must be in 0..{query} (at or before the query: a head attends only to earlier "
                          f"tokens), got {key}")
    split = runner.score_split(trace, layer, head, query, key)
    other = runner.score_split(trace, layer, head, query, most) if most != key else None
    tokens = axis_labels(trace.token_bytes)
    named = "\n".join(f"- {name}: **{value:+.3f}**" for name, value in named_terms(split, tokens[query], tokens[key]))
    note = (f"**L{layer}H{head}** attends from {tokens[query]} (query {query}) to {tokens[key]} (key {key}) with "
            f"weight **{float(pattern[key]):.3f}**. Its score q·k/√d = **{split.score:+.3f}** is the sum of the grid's "
            f"cells: with the attention norm's scale frozen at this run's, q and k are sums over the residual stream's "
            f"components and RoPE is linear. The largest terms:\n{named}")
    if other is not None:
        top3 = "; ".join(f"{n} **{v:+.2f}**" for n, v in named_terms(other, tokens[query], tokens[most], 3))
        note += (f"\n\nThe key this head attends most from here is {tokens[most]} (key {most}), score "
                 f"**{other.score:+.3f}**: {top3}.")
    title = f"Why L{layer}H{head} attends from {tokens[query]} to {tokens[key]}"
    return View(split_figure(split.terms.numpy(), split.labels, tokens[query], tokens[key], split.score, title,
                             font_scale(large)), note)


VIEWS = {"graph": graph, "why": why}
SLIDE = "graph"  # the view a deck's slide of this tab shows


def why_view(runner: ModelRunner, trace: Trace | None, layer, head, query, key, large: bool):
    """The split's handler: (figure, note), or a ⚠️ line."""
    if trace is None:
        return None, ""
    try:
        shown = why(runner, trace, layer, head, query, key, large)
    except PromptError as e:
        return None, f"⚠️ {e}"
    return shown.figure, shown.note


def why_most(runner: ModelRunner, trace: Trace | None, layer, head, query, large: bool):
    """Another head or query chosen: the key it attends most from there, and why (key, figure, note)."""
    if trace is None:
        return gr.update(), None, ""
    try:
        query = number(query, "query", 0, trace.n_tokens - 1, whole=True)
        layer = number(layer, "layer", 0, runner.cfg.n_layers - 1, whole=True)
        head = number(head, "head", 0, runner.cfg.n_heads - 1, whole=True)
        key = int(runner.layer(trace, layer).pattern[head, query].argmax())
    except (PromptError, ValueError) as e:
        return gr.update(), None, f"⚠️ {e}"
    return gr.update(value=key), *why_view(runner, trace, layer, head, query, key, large)


def _top(runner: ModelRunner, logits: np.ndarray, n: int = TOP_TOKENS) -> tuple[str, str]:
    order = np.argsort(logits)
    up = ", ".join(f"{_text(runner, t)} {logits[t]:+.2f}" for t in order[::-1][:n])
    down = ", ".join(f"{_text(runner, t)} {logits[t]:+.2f}" for t in order[:n])
    return up, down


def pick(runner: ModelRunner, trace: Trace | None, picked: str, layer, head, query, key):
    """A click on the graph: (details, and the why-here controls moved to a clicked attention edge)."""
    keep = (gr.update(),) * 4
    if trace is None or not picked:
        return "", *keep
    try:
        what = json.loads(picked.split("#")[0])
        tokens = axis_labels(trace.token_bytes)
        if "node" in what:
            level, position = (int(v) for v in what["node"])
            logits = runner.lens_logits(runner.node_vector(trace, level, position)).numpy()
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            best = np.argsort(probs)[::-1][:TOP_TOKENS]
            listed = ", ".join(f"{_text(runner, t)} {probs[t]:.3f}" for t in best)
            return (f"**The residual state {level_name(level)} at {tokens[position]}** (position {position}), read "
                    f"through the final norm and the unembedding (the logit lens): {listed}.", *keep)
        if "attn" in what:
            layer, source, target = (int(v) for v in what["attn"])
            f = runner.routes(trace)
            shares = f.attn[layer, target, :, source].numpy()
            heads = [h for h in np.argsort(shares)[::-1] if shares[h] > 0][:3]
            lines = []
            for h in heads:
                up, down = _top(runner, runner.head_logits(trace, layer, int(h), target))
                lines.append(f"- **L{layer}H{h}** ({shares[h]:.1%} of the state; key/value head "
                             f"{runner.cfg.kv_head_of(int(h))}): promotes {up}; suppresses {down}")
            best = int(heads[0]) if heads else 0
            text = (f"**Attention in L{layer}: {tokens[source]} (key {source}) → {tokens[target]} (query "
                    f"{target})**. Each head's whole output at the query, as direct effects on the logits:\n"
                    + "\n".join(lines) + f"\n\nWhy does L{layer}H{best} attend there? See the split below.")
            return text, layer, best, target, source
        if "mlp" in what:
            layer, position = (int(v) for v in what["mlp"])
            view = runner.block(trace, layer, position)
            size = np.abs(view.post) * view.w2_norms
            best = np.argsort(size)[::-1][:8]
            listed = ", ".join(f"n{n} ({view.post[n]:+.3f} × ‖w2‖ {view.w2_norms[n]:.2f})" for n in best)
            share = float(runner.routes(trace).mlp[layer, position])
            return (f"**L{layer} MLP at {tokens[position]}**: {share:.0%} of the state after it. The neurons that "
                    f"write the most: {listed}. *Open in Inside a block* for all of them.", *keep)
    except (PromptError, ValueError, KeyError, TypeError) as e:
        return f"⚠️ {e}", *keep
    return "", *keep


def render(runner: ModelRunner, trace: Trace | None, position, threshold, layer, head, query, key, large: bool,
           progress=gr.Progress()):
    """A new trace shown: the routes from its last position, and why the strongest head there attends where it
    does most."""
    if trace is None:
        return (gr.update(),) * 6 + (None, "", None, "", "")
    last = trace.n_tokens - 1
    figure, note = graph_view(runner, trace, last, threshold, large, progress)
    f = trace.routes
    if f is None:
        return (gr.update(),) * 6 + (figure, note, None, "", "")
    layer, head, _ = strongest_head(f, last)
    key = int(runner.layer(trace, layer).pattern[head, last].argmax())
    why, why_note = why_view(runner, trace, layer, head, last, key, large)
    ranges = [gr.update(maximum=max(last, 1), value=last), gr.update(),
              gr.update(value=layer), gr.update(value=head), gr.update(maximum=max(last, 1), value=last),
              gr.update(maximum=max(last, 1), value=key)]
    return (*ranges, figure, note, why, why_note, "")


OPEN_HEAD_JS = "(layer, head) => { if (window.playgroundOpen) window.playgroundOpen('attention', {layer, head}); }"
OPEN_BLOCK_JS = """(picked) => {
  try { const mlp = JSON.parse(picked.split('#')[0]).mlp;
        if (mlp && window.playgroundOpen) window.playgroundOpen('block', {layer: mlp[0], pos: mlp[1]}); } catch (e) {}
}"""
CSS = "#routes-picked { display: none !important; }"


def build(ctx: TabContext) -> TabView:
    runner, cfg = ctx.runner, ctx.runner.cfg
    intro(
        "**Routes** (Ferrando & Voita, 2024): every residual state is a sum of parts, and a part's importance is how "
        "close it brings the sum: max(ε, ‖y‖₁ − ‖y − part‖₁), normalised over the parts. After attention the parts "
        "are each head's term from each earlier token (its weight × value, through its slice of W_O) and the "
        "residual; after the MLP, the MLP's output and the residual. Back from one position at the top, the graph "
        "keeps the parts above the threshold. **Why here?** splits one head's attention score into the residual "
        f"stream's components on the query side and the key side. {cfg.n_groups} query heads share each key/value "
        "head here; each query head is its own part."
    )
    with gr.Row():
        position = gr.Slider(0, 1, value=1, step=1, label="Prediction after position", elem_id="routes-position")
        threshold = gr.Slider(0.01, 0.5, value=THRESHOLD, step=0.01, label="Threshold τ (the paper's: 0.04)",
                              elem_id="routes-threshold")
    note = gr.Markdown(elem_id="routes-note")
    graph = gr.Plot(elem_id="routes-graph", show_label=False)
    picked = gr.Textbox(elem_id="routes-picked", container=False, show_label=False)
    details = gr.Markdown(elem_id="routes-details")
    with gr.Row():
        open_head = gr.Button("Open this head in the Attention tab", size="sm", elem_id="routes-open-head")
        open_block = gr.Button("Open the clicked MLP in Inside a block", size="sm", elem_id="routes-open-block")
    with gr.Accordion("Why here? An attention score split into its causes", open=True):
        with gr.Row():
            layer = gr.Slider(0, cfg.n_layers - 1, value=0, step=1, label="Layer", elem_id="routes-layer")
            head = gr.Slider(0, cfg.n_heads - 1, value=0, step=1, label="Head", elem_id="routes-head")
            query = gr.Slider(0, 1, value=1, step=1, label="Query position", elem_id="routes-query")
            key = gr.Slider(0, 1, value=0, step=1, label="Key position", elem_id="routes-key")
        why_note = gr.Markdown(elem_id="routes-why-note")
        why = gr.Plot(elem_id="routes-why", show_label=False)

    graph_inputs = [ctx.trace, position, threshold, ctx.large]
    for control in (position, threshold):
        control.input(bind(graph_view, runner), graph_inputs, [graph, note], **MODEL_RUN)
    why_inputs = [ctx.trace, layer, head, query, key, ctx.large]
    for control in (layer, head, query):  # the key it attends most from there, and why
        control.input(bind(why_most, runner), [ctx.trace, layer, head, query, ctx.large], [key, why, why_note],
                      **LAYER_VIEW)
    key.input(bind(why_view, runner), why_inputs, [why, why_note], **LAYER_VIEW)
    picked.change(bind(pick, runner), [ctx.trace, picked, layer, head, query, key], [details, layer, head, query, key],
                  **LAYER_VIEW).then(bind(why_view, runner), why_inputs, [why, why_note], **LAYER_VIEW)
    open_head.click(None, [layer, head], None, js=OPEN_HEAD_JS, **READ_ONLY)
    open_block.click(None, [picked], None, js=OPEN_BLOCK_JS, **READ_ONLY)
    outputs = [position, threshold, layer, head, query, key, graph, note, why, why_note, details]
    return TabView(render=Event(bind(render, runner), [ctx.trace, position, threshold, layer, head, query, key,
                                                       ctx.large], outputs, runs_model=True))
