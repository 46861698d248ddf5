"""The tour: ten steps through one forward pass of the visitor's own prompt, as a table of (view, state, caption).

Each step names a tab's view (`views.show`), the state it is drawn in for this trace (its link values too, so
*Open in its tab* lands on the same view), and a caption written from this prompt's numbers (never a canned
sentence). A step reads the views it draws and the trace, nothing else: tokens, embeddings, RoPE, a
previous-token head and an attention sink, the residual stream, an MLP's neurons, the logit lens, the route, the
next-token distribution and a few generated tokens. Visitor and model text in a caption is `quoted`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import views
from .runner import ModelRunner
from .tab_block import loudest_mlp
from .tab_routes import THRESHOLD
from .text import quoted
from .trace import Trace
from .ui import token_markdown
from .view import View

GENERATED = 8  # tokens the last step generates
TEMPERATURE, TOP_P = 0.7, 0.9  # what step 9 shows the distribution under


@dataclass(frozen=True)
class Step:
    title: str
    tab: str  # the tab whose view it draws (and *Open in its tab* opens)
    view: str  # the view's name in that tab
    state: Callable[[ModelRunner, Trace], dict]  # the view's state (and the tab's link values) for a trace
    caption: Callable[[ModelRunner, Trace, dict, View], str]  # from the state, the view and the trace's numbers


def _last(trace: Trace) -> int:
    return trace.n_tokens - 1


def _token(runner: ModelRunner, token: int) -> str:
    return token_markdown(runner, token)


def _embedding(runner: ModelRunner, trace: Trace, state: dict, view: View) -> str:
    cfg = runner.cfg
    return (f"Each token becomes a row of **{cfg.d_model} numbers** from the embedding matrix ({cfg.vocab_size:,} × "
            f"{cfg.d_model}). The last token: {view.note} Tokens used alike get rows alike.")


def _rope(runner: ModelRunner, trace: Trace, state: dict, view: View) -> str:
    f, d, base = view.facts, runner.cfg.d_head, runner.cfg.rope_base
    return (f"Position enters by rotation (RoPE): each head's q and k are split into {f['pairs']} pairs, and pair i "
            f"turns by position × {base:g}^(−2i/{d}). At the last position ({f['pos']}) the fastest pair has turned "
            f"{f['pos']} radians (**{f['fastest_deg']:.0f}°** past whole turns) and the slowest only "
            f"**{f['slowest_deg']:.3f}°**; q·k then depends on how far apart two tokens are, not where they are.")


def _head_stats(trace: Trace) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """The heads' statistics (the analysis keeps them), the previous-token head and the attention sink: the
    largest of each statistic."""
    stats = np.nan_to_num(trace.head_stats)
    prev = tuple(int(v) for v in np.unravel_index(int(stats[:, :, 1].argmax()), stats.shape[:2]))
    sink = tuple(int(v) for v in np.unravel_index(int(stats[:, :, 0].argmax()), stats.shape[:2]))
    return stats, prev, sink


def _heads(runner: ModelRunner, trace: Trace, state: dict, view: View) -> str:
    cfg = runner.cfg
    stats, prev, sink = _head_stats(trace)
    return (f"Attention moves information between positions. **L{prev[0]}H{prev[1]}** is a previous-token head: on "
            f"average it puts **{view.facts['to_previous']:.0%}** of its weight on the token just before. "
            f"**L{sink[0]}H{sink[1]}** is an attention sink: **{stats[sink][0]:.0%}** on the first token (found "
            f"from this prompt's head statistics, of {cfg.n_layers * cfg.n_heads} heads; {cfg.n_groups} query heads "
            f"share each key/value head).")


def _residual(runner: ModelRunner, trace: Trace, state: dict, view: View) -> str:
    f = view.facts
    return (f"Every layer adds to the **residual stream**: at the last token its norm grows from **{f['embed']:.2f}** "
            f"after the embedding to **{f['top']:.1f}** after layer {runner.cfg.n_layers - 1} (largest after "
            f"L{f['largest_layer']}: {f['largest']:.1f}). Each block reads it through an RMSNorm and writes its output "
            f"back by addition.")


def _neurons(runner: ModelRunner, trace: Trace, state: dict, view: View) -> str:
    f = view.facts
    return (f"The MLP works on each token alone: {runner.cfg.d_mlp} neurons, each writing one column of w2 scaled by "
            f"its activation. At {_token(runner, int(trace.ids[-1]))} the MLP that writes the most is layer "
            f"**{f['layer']}**'s (‖out‖ = {f['mlp_out']:.1f}); its strongest neuron, **n{f['neuron']}**, writes "
            f"{f['writes']:.2f} of it (activation {f['activation']:+.2f}).")


def _lens(runner: ModelRunner, trace: Trace, state: dict, view: View) -> str:
    f = view.facts
    return (f"The **logit lens** reads every layer's residual stream as if it were the last. At the last position the "
            f"model's answer, {_token(runner, f['answer'])}, {f['appears']} (of {f['rows']} rows). Earlier rows show "
            f"what the stream held before.")


def _route(runner: ModelRunner, trace: Trace, state: dict, view: View) -> str:
    f = view.facts
    return (f"The **route** to the prediction: back from the last token, the parts that make up at least "
            f"{THRESHOLD:.0%} of each state. The head that moves the most into the last position is "
            f"**L{f['layer']}H{f['head']}** ({f['share']:.0%} of its layer's state), mostly from "
            f"{_token(runner, int(trace.ids[f['source']]))}; the last MLP makes up {f['mlp']:.0%} of the final state.")


def _distribution(runner: ModelRunner, trace: Trace, state: dict, view: View) -> str:
    f, best = view.facts, _token(runner, view.facts["best"])
    return (f"The last position's logits become the next-token distribution: {best} with p = **{f['p']:.3f}**. "
            f"Temperature {TEMPERATURE} sharpens it and top-p {TOP_P} keeps the smallest set reaching {TOP_P:.0%}: "
            f"**{f['kept']:,}** of {f['vocabulary']:,} tokens stay, and {best} now has p = **{f['p_after']:.3f}**.")


def _continuation(runner: ModelRunner, trace: Trace, state: dict, view: View) -> str:
    tail = quoted(" ".join(trace.prompt.split()[-6:]))
    return (f"Append the chosen token and run again, token after token. After “…{tail}”: {view.note} The Sampler and "
            f"Decoding tabs show other ways to choose.")


STEPS = (
    Step("The prompt becomes tokens", "tokenization", "table", lambda r, t: {}, lambda r, t, s, v: v.note),
    Step("Each token becomes a vector", "embeddings", "nearest", lambda r, t: {"pos": _last(t), "k": 6}, _embedding),
    Step("RoPE rotates q and k", "rope", "pairs", lambda r, t: {"layer": 0, "head": 0, "pos": _last(t)}, _rope),
    Step("Heads look back", "attention", "pattern",
         lambda r, t: dict(zip(("layer", "head"), _head_stats(t)[1])), _heads),
    Step("The residual stream grows", "block", "norms",
         lambda r, t: {"layer": r.cfg.n_layers - 1, "pos": _last(t)}, _residual),
    Step("The MLP's neurons", "block", "neurons",
         lambda r, t: {"layer": loudest_mlp(r, t)[0], "pos": _last(t)}, _neurons),
    Step("The answer appears", "lens", "grid", lambda r, t: {"pos": _last(t)}, _lens),
    Step("The route it took", "routes", "graph", lambda r, t: {"pos": _last(t)}, _route),
    Step("The next-token distribution", "sampler", "next_token",
         lambda r, t: {"temperature": TEMPERATURE, "top_p": TOP_P}, _distribution),
    Step("A few more tokens", "sampler", "continuation", lambda r, t: {"tokens": GENERATED}, _continuation),
)


def tour_step(runner: ModelRunner, trace: Trace, step: int, large: bool) -> tuple[str, str, object, str, dict]:
    """Step `step` (1..10) of the tour of this trace: (title, caption, figure, the tab it comes from, that tab's
    link values)."""
    if not 1 <= step <= len(STEPS):
        raise ValueError(f"step must be 1..{len(STEPS)}, got {step}")
    s = STEPS[step - 1]
    state = s.state(runner, trace)
    view = views.show(s.tab, s.view, runner, trace, state, large)
    links = {name: value for name, value in state.items() if name in views.slides().get(s.tab, {})}
    return s.title, s.caption(runner, trace, state, view), view.figure, s.tab, links
