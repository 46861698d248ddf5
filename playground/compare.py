"""Two sides compared: two models on one prompt, or one model on two prompts, each a (runner, trace).

Each comparison is a named pure function `(left, right, **state) -> Compared`: each side's own view, drawn by the
same named view the tabs draw (`views.view`), and what the two show together, in a note and in facts. Tokenization
says where the two tokenizers split the same text differently; attention compares the head statistics of the layer
at the same relative depth; the lens says from which relative depth each side's final answer is its top-1 guess
for good; the next token compares the two distributions' top tokens. Nothing here holds a model: each side's runner
does the work under its own gate (the app gives two models one gate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import views
from .tour import STEPS, tour_step
from .errors import PromptError
from .runner import ModelRunner
from .text import quoted
from .trace import Trace
from .ui import font_scale
from .view import View, number


@dataclass(frozen=True)
class Side:
    runner: ModelRunner
    trace: Trace
    label: str  # what the column is called: the model's name, or "prompt A"


@dataclass(frozen=True)
class Compared:
    left: View
    right: View
    note: str  # Markdown: what the two show together
    facts: dict = field(default_factory=dict)


def _text_and_boundaries(trace: Trace) -> tuple[bytes, set[int]]:
    """The text the tokens spell (control tokens, like BOS, left out), and the byte offsets in it where one token
    ends and the next begins."""
    pieces = [data for data, special in zip(trace.token_bytes, trace.special) if not special]
    ends, at = set(), 0
    for data in pieces:
        at += len(data)
        ends.add(at)
    ends.discard(at)
    return b"".join(pieces), ends


def tokenization(left: Side, right: Side, large: bool = False) -> Compared:
    """Each side's tokens; on the same text, where the two split it alike and where only one does."""
    a, b = (views.view("tokenization", "table")(s.runner, s.trace, large=large) for s in (left, right))
    facts = {"left_tokens": a.facts["tokens"], "right_tokens": b.facts["tokens"]}
    note = (f"{quoted(left.label)}: **{a.facts['tokens']} tokens**; {quoted(right.label)}: "
            f"**{b.facts['tokens']} tokens**.")
    (text, ends_a), (other_text, ends_b) = _text_and_boundaries(left.trace), _text_and_boundaries(right.trace)
    if text == other_text:
        shared, only_a, only_b = ends_a & ends_b, sorted(ends_a - ends_b), sorted(ends_b - ends_a)
        facts.update(shared_splits=len(shared), only_left=len(only_a), only_right=len(only_b))

        chars = text.decode("utf-8", "replace")
        starts = [0]  # byte offset where each character starts
        for ch in chars:
            starts.append(starts[-1] + len(ch.encode("utf-8")))

        def at(offset: int) -> str:
            """A split between two characters as “ab|cd”; one inside a character's bytes as inside “🤖”."""
            i = max(k for k, start in enumerate(starts) if start <= offset)
            if starts[i] != offset:
                return f"inside “{quoted(chars[i])}”"
            return f"“{quoted(chars[max(0, i - 5):i])}|{quoted(chars[i:i + 5])}”"

        def where(offsets: list[int]) -> str:
            shown = ", ".join(at(o) for o in offsets[:4])
            return shown + (f" and {len(offsets) - 4} more" if len(offsets) > 4 else "")

        note += f" On the same text they split alike at {len(shared)} places."
        if only_a:
            note += f" Only {quoted(left.label)} splits at {where(only_a)}."
        if only_b:
            note += f" Only {quoted(right.label)} splits at {where(only_b)}."
    return Compared(a, b, note, facts)


def attention(left: Side, right: Side, depth: float = 0.5, head: int = 0, large: bool = False) -> Compared:
    """The pattern of one head of the layer at the same relative depth on each side (0 the first layer, 1 the
    last), and that layer's head statistics averaged over its heads."""
    depth = number(depth, "depth", 0.0, 1.0)
    shown, facts = [], {}
    for key, side in (("left", left), ("right", right)):
        cfg = side.runner.cfg
        layer = round(depth * (cfg.n_layers - 1))
        view = views.view("attention", "pattern")(side.runner, side.trace, layer=layer,
                                                  head=min(int(number(head, "head", 0, 10**6, whole=True)),
                                                           cfg.n_heads - 1), large=large)
        stats = side.trace.head_stats[layer].mean(0)  # (4,): over the layer's heads
        facts[f"{key}_layer"] = layer
        facts[f"{key}_to_first"], facts[f"{key}_to_previous"] = float(stats[0]), float(stats[1])
        shown.append(view)
    note = " ".join(
        f"{quoted(side.label)}: layer {facts[key + '_layer']} of {side.runner.cfg.n_layers}, its heads give on average "
        f"{facts[key + '_to_first']:.2f} to the first token and {facts[key + '_to_previous']:.2f} to the previous one."
        for key, side in (("left", left), ("right", right)))
    return Compared(shown[0], shown[1], note, facts)


def settles_at(side: Side, pos: int = -1) -> tuple[int, int]:
    """(row from which the final answer at pos is the lens's top-1 guess for good, rows): row 0 is the embedding,
    the last row the last layer."""
    rows, lens = side.runner.lens(side.trace, False)
    top1 = lens.rank_final[:, pos].numpy() == 0
    settle = len(top1)
    while settle > 0 and top1[settle - 1]:
        settle -= 1
    return settle, len(rows)


def lens(left: Side, right: Side, large: bool = False) -> Compared:
    """Each side's logit lens, and from which relative depth its final answer at the last position is the top-1
    guess for good (the embedding 0, the last layer 1)."""
    shown, facts = [], {}
    for key, side in (("left", left), ("right", right)):
        shown.append(views.view("lens", "grid")(side.runner, side.trace, large=large))
        settle, rows = settles_at(side)
        facts[f"{key}_settles_row"], facts[f"{key}_depth"] = settle, settle / (rows - 1)
        facts[f"{key}_answer"] = shown[-1].facts["answer"]
    note = " ".join(
        f"{quoted(side.label)} answers “{quoted(side.runner.decode([facts[key + '_answer']]))}”, its top-1 guess for "
        f"good from {100 * facts[key + '_depth']:.0f}% of its depth (row {facts[key + '_settles_row']})."
        for key, side in (("left", left), ("right", right)))
    return Compared(shown[0], shown[1], note, facts)


def next_token(left: Side, right: Side, top_n: int = 10, large: bool = False) -> Compared:
    """Each side's next-token distribution (no sampler settings: the model's own), and the tokens both put in their
    top n, compared by text (two vocabularies number them differently)."""
    shown, tops = [], []
    for side in (left, right):
        view = views.view("sampler", "next_token")(side.runner, side.trace, top_n=top_n, large=large)
        shown.append(view)
        logits = side.trace.next_logits  # (V,): after the last position
        order = np.argsort(-logits)[: int(number(top_n, "top_n", 1, 50, whole=True))]
        tops.append([side.runner.decode([int(i)]) for i in order])
    both = [t for t in tops[0] if t in set(tops[1])]
    facts = {"left_best": tops[0][0], "right_best": tops[1][0], "shared_top": len(both),
             "left_p": shown[0].facts["p"], "right_p": shown[1].facts["p"]}
    agree = "agree" if tops[0][0] == tops[1][0] else "differ"
    note = (f"Their most likely next tokens {agree}: {quoted(left.label)} “{quoted(tops[0][0])}” "
            f"(p {facts['left_p']:.2f}), {quoted(right.label)} “{quoted(tops[1][0])}” (p {facts['right_p']:.2f}). "
            f"{len(both)} of their top {len(tops[0])} are the same text.")
    return Compared(shown[0], shown[1], note, facts)


def tour(left: Side, right: Side, step: int = 1, large: bool = False) -> Compared:
    """One step of the tour on each side: its figure, and its caption, which quotes that side's own numbers."""
    step = int(number(step, "step", 1, len(STEPS), whole=True))
    shown = []
    for side in (left, right):
        title, caption, figure, _, _ = tour_step(side.runner, side.trace, step, bool(large))
        shown.append(View(figure, caption))
    note = f"Tour step {step} of {len(STEPS)}, **{title}**, on each side."
    return Compared(shown[0], shown[1], note, {"step": step})


COMPARISONS = {"tokenization": tokenization, "attention": attention, "lens": lens, "next_token": next_token,
               "tour": tour}


def compare(name: str, left: Side, right: Side, **state) -> Compared:
    """A comparison by name."""
    if name not in COMPARISONS:
        raise PromptError(f"no comparison named {name!r}; the comparisons are {', '.join(COMPARISONS)}")
    return COMPARISONS[name](left, right, **state)


# -- a deck's slide: one prompt against a second, in one figure ---------------------------------------

SLIDE_FIELDS = {"prompt_b": "text", "view": "radio", "depth": "slider", "step": "slider"}  # a deck's compare fields


def side_by_side(left: View, right: View, titles: tuple[str, str], large: bool = False) -> go.Figure:
    """Two views' figures as one, in two columns under their titles (a slide shows one figure): each side's traces
    and its axes' titles, kinds and directions; one colour bar, the right side's."""
    kinds = ["table" if any(t.type == "table" for t in v.figure.data) else "xy" for v in (left, right)]
    joint = make_subplots(rows=1, cols=2, specs=[[{"type": k} for k in kinds]], subplot_titles=titles,
                          horizontal_spacing=0.1)
    for col, view in enumerate((left, right), start=1):
        for trace in view.figure.data:
            trace = go.Figure(trace).data[0]  # a copy
            if col == 1 and "showscale" in trace:
                trace.showscale = False
            joint.add_trace(trace, row=1, col=col)
        if kinds[col - 1] == "xy":
            source = view.figure.layout
            for axis, update in (("xaxis", joint.update_xaxes), ("yaxis", joint.update_yaxes)):
                theirs = source[axis]
                update(title_text=theirs.title.text, type=theirs.type, autorange=theirs.autorange,
                       categoryorder=theirs.categoryorder, row=1, col=col)
    scale = font_scale(large)
    joint.update_annotations(font_size=int(16 * scale))
    joint.update_layout(font=dict(size=int(13 * scale), **({"color": "#000"} if large else {})),
                        height=max(left.figure.layout.height or 450, right.figure.layout.height or 450),
                        margin=dict(l=10, r=10, t=int(60 * scale), b=10), paper_bgcolor="white",
                        hoverlabel=dict(font=dict(size=int(13 * scale))), showlegend=False)
    return joint


def slide(runner: ModelRunner, trace: Trace, state: dict, large: bool = False) -> tuple[str, go.Figure]:
    """A deck's compare slide: the slide's prompt against `prompt_b` on the one model, in the comparison `view`
    (default tokenization): (the joint note, one figure of both sides)."""
    prompt_b = state.get("prompt_b")
    if not isinstance(prompt_b, str) or not prompt_b.strip():
        raise PromptError("a compare slide needs prompt_b: the second prompt")
    name = state.get("view", "tokenization")
    extra = {k: state[k] for k in ("depth", "step") if k in state and
             k == {"attention": "depth", "tour": "step"}.get(name)}
    left, right = Side(runner, trace, "prompt A"), Side(runner, runner.analyze(prompt_b, trace.chat), "prompt B")
    shown = compare(name, left, right, large=large, **extra)
    return shown.note, side_by_side(shown.left, shown.right, ("prompt A", "prompt B"), large)
