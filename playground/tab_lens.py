"""Logit-lens tab: what each layer would predict if decoding stopped there, at every position.

The lens (exact float32, about 1.5-3 s for 128 tokens on two cores) is computed in the background
after each Analyze while the model is idle, so the tab usually opens on a finished grid; opened
sooner, it finishes the rest with a progress bar. It is kept in the trace.
"""

from __future__ import annotations

import gradio as gr
import numpy as np

from .figures.lens import STATISTICS, LensStat, lens_grid, rankings_watch, statistic_values
from .figures.tokens import axis_labels, token_label
from .runner import ModelRunner, PromptError
from .trace import Trace
from .view import View, flag_of, position_of
from .ui import LAYER_VIEW, Link, MODEL_RUN, Event, TabContext, TabView, bind, clamp, font_scale, intro, arrows

KEYS = arrows("lens-position", "position")
LINKS = (Link("pos", "lens-position"),)
TAB_ID = "lens"


def watch(runner: ModelRunner, trace: Trace, position: int, with_mid: bool, extra: str, scale: float):
    """Ecco-style rankings watch: the probability of chosen tokens at one position, across the rows."""
    labels, rows = runner.lens_rows(trace, with_mid)
    logits = runner.lens_logits(rows[:, position])  # (R, V)
    probs = logits.softmax(-1)

    def name(token: int) -> str:
        return repr(token_label(runner.token_bytes(token), False))

    final_top = int(logits[-1].argmax())
    tokens = {final_top: f"final prediction {name(final_top)}"}
    if position + 1 < trace.n_tokens:
        nxt = int(trace.ids[position + 1])
        tokens.setdefault(nxt, f"actual next {name(nxt)}")
    for word in [w for w in (extra or "").split(",") if w.strip()]:
        token = runner.first_token(word.rstrip())
        if token is not None:
            tokens.setdefault(token, name(token))
    ids = list(tokens)
    p = probs[:, ids].T.numpy()  # (n, R)
    ranks = (logits[:, None, :] > logits[:, ids][:, :, None]).sum(-1).T.numpy()
    return rankings_watch(labels, p, ranks, list(tokens.values()), axis_labels(trace.token_bytes)[position],
                          font_scale=scale)


def answer_rows(hits: np.ndarray) -> tuple[int, int, list[int]]:
    """Where the final prediction is the lens's top-1 at one position, from each row's hit (R,) bottom to top:
    (the first row it is top-1, the row from which it stays top-1 to the end, the rows between where it is not).
    The last row is the model's own output, so it is always a hit."""
    rows = [int(r) for r in np.flatnonzero(hits)]
    settled = len(hits) - 1
    while settled > 0 and hits[settled - 1]:
        settled -= 1
    return rows[0], settled, [r for r in range(rows[0], settled) if not hits[r]]


def answer_sentence(labels: list[str], hits: np.ndarray) -> str:
    """When the final prediction appears: its first top-1 row and, if it is lost again, where it settles."""
    first, settled, lost = answer_rows(hits)
    if first == settled:
        return f"is the top-1 guess from row **{labels[settled]}** on"
    gaps = _runs(lost)
    where = ", ".join(labels[a] if a == b else f"{labels[a]}–{labels[b]}" for a, b in gaps)
    return (f"is first the top-1 guess at row **{labels[first]}**, lost again at {where}, and top-1 for good from "
            f"row **{labels[settled]}** on")


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for r in rows:
        if runs and runs[-1][1] == r - 1:
            runs[-1] = (runs[-1][0], r)
        else:
            runs.append((r, r))
    return runs


def grid(runner: ModelRunner, trace: Trace, statistic: str = "top_prob", with_mid: bool = False, pos: int = -1,
         large: bool = False, progress=None) -> View:
    """Every layer's top-1 guess at every position, coloured by a statistic: the Logit-lens tab's main view. The
    note says where the final prediction at `pos` appears."""
    if statistic not in STATISTICS:
        raise PromptError(f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}")
    pos = position_of(trace.n_tokens, pos)
    row_labels, lens = runner.lens(trace, flag_of(with_mid, "with_mid"), progress=progress)
    colour, shown = statistic_values(statistic, lens.top_probs.numpy(), lens.rank_final.numpy(), lens.rank_next.numpy(),
                                     lens.kl_to_final.numpy(), lens.entropy.numpy())
    next_ids = np.append(trace.ids[1:], -1)
    figure = lens_grid(row_labels, axis_labels(trace.token_bytes), lens.top_ids.numpy(), lens.top_probs.numpy(),
                       colour, shown, statistic, next_ids, lambda i: token_label(runner.token_bytes(i), False, 12),
                       font_scale=font_scale(large))
    at = "the last position" if pos == trace.n_tokens - 1 else f"position {pos}"
    appears = answer_sentence(row_labels, lens.rank_final[:, pos].numpy() == 0)
    note = (f"At {at} the final prediction {appears}. "
            f"Rows: the residual stream after the embedding and after each layer"
            f"{' (and after each attention block)' if with_mid else ''}, each through the final RMSNorm "
            f"(its own RMS recomputed) and the unembedding.")
    return View(figure, note, {"answer": int(lens.top_ids[-1, pos, 0]), "appears": appears, "rows": len(row_labels)})


VIEWS = {"grid": grid}
SLIDE = "grid"  # the view a deck's slide of this tab shows


def render(runner: ModelRunner, trace: Trace | None, statistic: str, with_mid: bool, position: int, extra: str,
           large: bool, progress=gr.Progress()):
    """(grid, rankings watch, note); computes the lens for this trace the first time, showing its progress."""
    if trace is None:
        return None, None, ""
    position = clamp(position, 0, trace.n_tokens - 1)
    try:
        shown = grid(runner, trace, statistic, bool(with_mid), position, large,
                     progress=lambda done, what: progress(done, desc=what))
        watched = watch(runner, trace, position, with_mid, extra, font_scale(large))
    except PromptError as e:  # dropped to make room, or the model stayed busy
        return gr.update(), gr.update(), f"⚠️ {e}"
    return shown.figure, watched, shown.note


def redraw_if_shown(runner: ModelRunner, trace: Trace | None, statistic: str, with_mid: bool, position: int, extra: str,
                    large: bool, active: str):
    """Presenter mode toggled: redraw at the new size, only if this tab is showing."""
    if active != TAB_ID:
        return gr.update(), gr.update(), gr.update()
    return render(runner, trace, statistic, with_mid, position, extra, large)


def after_analyze(runner: ModelRunner, trace: Trace | None, statistic: str, with_mid: bool, position: int, extra: str,
                  large: bool, progress=gr.Progress()):
    """A new prompt, shown: move the watched position to its end and draw (the lens may already be done)."""
    if trace is None:
        return gr.update(), None, None, ""
    last = trace.n_tokens - 1
    return (gr.update(maximum=max(last, 1), value=last), *render(runner, trace, statistic, with_mid, last, extra, large,
                                                                 progress))


def build(ctx: TabContext) -> TabView:
    intro(
        "The **logit lens** (nostalgebraist, 2020) decodes every layer's residual stream as if it were the last: "
        "final RMSNorm, then the unembedding. Read it bottom to top: where does the model's answer appear? "
        "Each cell shows that layer's top-1 token; hover for its top-10. **Bold** (or a ring, when cells are too small "
        "for text) marks a layer whose top-1 is the token that really comes next."
    )
    with gr.Row():
        statistic = gr.Dropdown([(info.label, stat.value) for stat, info in STATISTICS.items()],
                                value=LensStat.TOP_PROB.value,
                                label="Colour by", elem_id="lens-stat")
        with_mid = gr.Checkbox(label="Also after each attention block (resid_mid)", value=False, elem_id="lens-mid")
    note = gr.Markdown(elem_id="lens-note")
    grid = gr.Plot(label="Logit lens", elem_id="lens-grid", show_label=False)
    with gr.Row():
        position = gr.Slider(0, 1, value=1, step=1, label="Position to watch", elem_id="lens-position", scale=2)
        extra = gr.Textbox(label="Also watch these tokens (comma-separated)", placeholder=" Paris, London",
                           elem_id="lens-tokens", scale=2)
    watch_plot = gr.Plot(label="Rankings watch", elem_id="lens-watch", show_label=False)

    inputs = [ctx.trace, statistic, with_mid, position, extra, ctx.large]
    outputs = [grid, watch_plot, note]
    draw = bind(render, ctx.runner)  # may compute a lens (seconds, with a progress bar) or read the kept one
    for control in (statistic, with_mid, position):
        control.input(draw, inputs, outputs, **MODEL_RUN)
    extra.submit(draw, inputs, outputs, **MODEL_RUN)
    ctx.large.change(bind(redraw_if_shown, ctx.runner), [*inputs, ctx.active], outputs, **LAYER_VIEW)
    return TabView(render=Event(bind(after_analyze, ctx.runner), inputs, [position, *outputs], runs_model=True))
