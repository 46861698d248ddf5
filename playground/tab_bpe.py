"""BPE tab: train a byte-level BPE on your own text, merge by merge, and watch the model's tokenizer build a word.

Training (`model.bpe.train_bpe`) follows Hugging Face tokenizers' BPE trainer and learns the
same merges (a test checks it); the model's merges are replayed with tiktoken's rule, the
lowest-ranked adjacent pair first.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from model.bpe import MAX_MERGES, MAX_TRAINING_CHARS, BpeTraining, train_bpe
from model.tokenizer import token_text_to_bytes

from .figures.bpe import candidates_figure, compression_figure
from .figures.tokens import token_label
from .runner import ModelRunner, PromptError
from .trace import Trace
from .ui import READ_ONLY, Event, TabContext, TabView, bind, clamp, font_scale, session_state, intro
from .view import View, number

TAB_ID = "bpe"

TEXT = ("the cat sat on the mat. the cat ate the rat. a fat cat sat on a flat mat; the rat ran from the fat cat, "
        "and the cat chased the rat around the mat until the rat hid under the hat.")


def shown(piece: str) -> str:
    """A byte-level piece ('Ġthe') as readable text ('·the')."""
    return token_label(token_text_to_bytes(piece), True, 24)


def train(runner: ModelRunner, text: str, merges: int, large: bool):
    """(training, summary, merges table, compression plot, step slider, candidates plot)."""
    try:
        result = train_bpe(text, clamp(merges, 1, MAX_MERGES))
    except ValueError as e:
        return None, f"⚠️ {e}", None, None, gr.update(), None
    steps = result.steps
    if not steps:
        return result, "No pair occurs: every word is already one byte.", None, None, gr.update(), None
    table = pd.DataFrame({"merge": range(1, len(steps) + 1),
                          "pair": [f"{shown(s.left)} + {shown(s.right)}" for s in steps],
                          "count": [s.count for s in steps], "new token": [shown(s.left + s.right) for s in steps],
                          "vocabulary": [s.vocab_size for s in steps], "tokens": [s.tokens for s in steps],
                          "bytes/token": [round(s.bytes_per_token, 3) for s in steps]})
    summary = (f"Trained on {result.n_bytes:,} bytes in {result.words:,} distinct words: **{len(steps)} merges** "
               f"({result.stopped}); the text went from {result.initial_tokens:,} tokens (one per byte) to "
               f"{steps[-1].tokens:,} ({steps[-1].bytes_per_token:.2f} bytes per token). The vocabulary starts with "
               f"the 256 bytes and gains one token per merge.")
    last = len(steps)
    curve = compression_figure([s.bytes_per_token for s in steps], [s.vocab_size for s in steps], 1,
                               font_scale=font_scale(large))
    return result, summary, table, curve, gr.update(maximum=last, value=1), step_view(runner, result, 1, large)


def step_view(runner: ModelRunner, result: BpeTraining | None, step: int, large: bool):
    """The candidate pairs when merge `step` was chosen: BPE's counts, and WordPiece's scores on the same counts."""
    if result is None or not result.steps:
        return None
    chosen = result.steps[clamp(step, 1, len(result.steps)) - 1]
    labels = [f"{shown(a)} + {shown(b)}" for a, b, _, _ in chosen.candidates]
    best_wordpiece = max(chosen.candidates, key=lambda c: c[3])
    title = (f"Merge {clamp(step, 1, len(result.steps))}: BPE takes {shown(chosen.left)} + {shown(chosen.right)}, "
             f"WordPiece {shown(best_wordpiece[0])} + {shown(best_wordpiece[1])}")
    return candidates_figure(labels, [c[2] for c in chosen.candidates], [c[3] for c in chosen.candidates], title,
                             font_scale=font_scale(large))


def replay(runner: ModelRunner, word: str) -> str:
    """The model's tokenizer building a word, merge by merge, with each merge's rank."""
    if not word or not word.strip():
        return "⚠️ Type a word, e.g. ` capital` (with its leading space)."
    blocks = []
    for piece, steps in runner.merge_steps(word[:200]):
        lines = [f"**{token_label(piece, True, 40)}**", "", "| step | parts | merged | rank |", "|---|---|---|---|"]
        for i, step in enumerate(steps):
            parts = " · ".join(f"`{token_label(p, True, 20)}`" for p in step.parts)
            merged = "(its bytes)" if step.merged is None else f"`{token_label(step.merged, True, 20)}`"
            lines.append(f"| {i} | {parts} | {merged} | {'' if step.rank is None else f'{step.rank:,}'} |")
        blocks.append("\n".join(lines))
    return ("Each step merges the adjacent pair whose result has the lowest rank (the earliest merge learned), "
            "until no pair is in the vocabulary. Ranks are token ids; single bytes have the lowest.\n\n"
            + "\n\n".join(blocks))


def training(runner: ModelRunner, trace: Trace, merges: int = 20, step: int = 1, large: bool = False) -> View:
    """BPE trained on the prompt's own text: the candidate pairs when merge `step` was chosen (BPE's counts beside
    WordPiece's scores), and the training's summary."""
    merges = number(merges, "merges", 1, MAX_MERGES, whole=True)
    result, summary, *_ = train(runner, trace.prompt, merges, large)
    if result is None:
        raise PromptError(summary.removeprefix("⚠️").strip())
    if not result.steps:
        raise PromptError(summary)
    step = number(step, "step", 1, len(result.steps), whole=True)
    chosen = result.steps[step - 1]
    return View(step_view(runner, result, step, large), summary,
                {"merges": len(result.steps), "pair": (chosen.left, chosen.right), "count": chosen.count})


VIEWS = {"training": training}
SLIDE = None  # trained on the prompt, a slide would rarely be what a speaker means


def render(runner: ModelRunner, trace: Trace | None, word: str) -> tuple[str]:
    """Nothing here depends on the prompt; the replay of the word in the box is drawn once the tab opens."""
    return (replay(runner, word),)


def build(ctx: TabContext) -> TabView:
    intro(
        "**Byte-level BPE from scratch.** Start from the 256 bytes; count every adjacent pair of tokens in the "
        "text; merge the most frequent pair into a new token; repeat. WordPiece would choose by "
        "count(ab) / (count(a)·count(b)) instead, favouring pairs whose parts are rare on their own. "
        f"Training text up to {MAX_TRAINING_CHARS:,} characters, up to {MAX_MERGES} merges."
    )
    training = session_state()
    with gr.Row():
        text = gr.Textbox(TEXT, label="Training text", lines=4, max_lines=10, elem_id="bpe-text", scale=4)
        with gr.Column(scale=1, min_width=200):
            merges = gr.Slider(1, MAX_MERGES, value=40, step=1, label="Merges", elem_id="bpe-merges")
            train_btn = gr.Button("Train", variant="primary", elem_id="bpe-train")
    summary = gr.Markdown(elem_id="bpe-summary")
    with gr.Row():
        compression = gr.Plot(elem_id="bpe-compression", show_label=False)
        candidates = gr.Plot(elem_id="bpe-candidates", show_label=False)
    step = gr.Slider(1, 2, value=1, step=1, label="Show the candidates at merge", elem_id="bpe-step")
    table = gr.Dataframe(interactive=False, elem_id="bpe-table", max_height=360)
    gr.Markdown(f"**The model's own merges** ({ctx.runner.n_merges:,} of them): how its tokenizer builds a word.")
    word = gr.Textbox(" capital", label="Word (pieces are split as the model splits text)", elem_id="bpe-word")
    replayed = gr.Markdown(elem_id="bpe-replay")

    train_btn.click(bind(train, ctx.runner), [text, merges, ctx.large],
                    [training, summary, table, compression, step, candidates], **READ_ONLY)
    step.input(bind(step_view, ctx.runner), [training, step, ctx.large], [candidates], **READ_ONLY)
    word.submit(bind(replay, ctx.runner), [word], [replayed], **READ_ONLY)
    return TabView(render=Event(bind(render, ctx.runner), [ctx.trace, word], [replayed]))
