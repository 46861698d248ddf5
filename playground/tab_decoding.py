"""Decoding tab: how a continuation is chosen, on the real model. Beam search as a tree (and why beams come out
bland and short), greedy, beam and sampled continuations side by side, self-speculative decoding with the model's
own first layers as the draft, DoLa and contrastive search, and the KV cache that makes all of it affordable.

Every strategy is `model.decoding`'s, run through `ModelRunner.run_strategy` (one run holds the model at a time;
a sweep lets others in between its runs). Beam search matches transformers' `generate`, speculative decoding
matches plain greedy decoding, DoLa and contrastive search (`model.contrast`) match the papers' equations
(tests/model/test_decoding.py). One tab, five sections, each a handler and its layout: hence its length.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import gradio as gr
import numpy as np

from model.arithmetic import kv_cache_bytes, matmul_weights
from model.contrast import contrastive, dola, dola_candidate_layers
from model.decoding import (
    BeamResult, beam_search, greedy, repeated_ngrams, sampled, speculative, time_kv_cache, token_log_probs,
)
from model.sampling import SamplerSettings
from model.transformer import ModelConfig

from .figures.decoding import (
    DECODING_CSS, Continuation, TreeNode, beam_tree_figure, cache_contents_figure, cache_timing_figure,
    continuations_html, premature_figure, speculative_rounds_html, speedup_figure,
)
from .figures.tokens import axis_labels
from .runner import ModelRunner, PromptError
from .trace import Trace
from .view import View
from .ui import (
    HEAVY, Event, StopFlag, TabContext, TabView, bind, heavy_job, font_scale, intro, number, stop_button, stop_state,
    token_text,
)

TAB_ID = "decoding"

CSS = DECODING_CSS
NEW_TOKENS = (1, 48)  # tokens each strategy may generate
WIDTH = (1, 8)  # beams
GAMMA = (1, 8)  # drafted tokens a round
TOP_K = (1, 20)  # contrastive search's candidates
DOLA_REPETITION = (1.0, 2.0)  # DoLa's repetition penalty (transformers recommends 1.2)
KV_TOKENS = (4, 256)  # tokens the KV-cache timing may generate
KV_BUDGET_S = 4.0  # the timing run stops after this long (it holds the model)
SWEEP_LIMIT_S = 60.0  # a speculative sweep measures no more drafts after this long
EARLY_STOPPING = {"False (heuristic)": False, "True (stop at num_beams finished)": True, "never": "never"}


def dola_buckets(cfg: ModelConfig) -> dict[str, list[int]]:
    """DoLa's candidate sets, as transformers' `dola_layers="low"` / `"high"` choose them (`dola_candidate_layers`),
    labelled with their layers (0 = the embedding)."""
    names = {"low": "early layers", "high": "late layers"}
    return {f"{names[key]} ({_span(layers)})": layers
            for key, layers in dola_candidate_layers(cfg.n_layers, cfg.tie_embeddings).items()}


def _span(layers: list[int]) -> str:
    return ", ".join(map(str, layers)) if len(layers) <= 3 else f"{layers[0]}, {layers[1]}, …, {layers[-1]}"


def _setting(value, name: str, low: float, high: float, whole: bool = False) -> float | int:
    """`ui.number`, its message as a PromptError (what every handler here shows)."""
    try:
        return number(value, name, low, high, whole)
    except ValueError as e:
        raise PromptError(f"{e}.") from None


def _prompt(runner: ModelRunner, trace: Trace | None, new_tokens) -> tuple[list[int], int]:
    if trace is None:
        raise PromptError("Analyze a prompt first: the strategies continue it.")
    n = _setting(new_tokens, "New tokens", *NEW_TOKENS, whole=True)
    ids = trace.ids.tolist()
    if len(ids) + n + 8 > runner.cfg.max_seq_len:
        raise PromptError(f"The prompt has {len(ids)} tokens: with {n} more it would pass the model's context of "
                          f"{runner.cfg.max_seq_len}.")
    return ids, n


def _stop_ids(runner: ModelRunner) -> list[int]:
    return [runner.eos_token_id] if runner.eos_token_id is not None else []


def _pieces(runner: ModelRunner, ids: list[int]) -> list[str]:
    return [runner.token_bytes(t).decode("utf-8", errors="replace") for t in ids]


def _continuation(runner: ModelRunner, prompt: list[int], name: str, ids: list[int], note: str = "") -> Continuation:
    log_probs = runner.run_strategy(token_log_probs, prompt, ids)
    return Continuation(name, _pieces(runner, ids), log_probs, repeated_ngrams(ids, 3), note, tuple(ids))


def tree_nodes(runner: ModelRunner, result: BeamResult) -> list[TreeNode]:
    """The beam search's steps as tree nodes, with the returned best hypothesis marked."""
    best = result.sequences[0] if result.sequences else []
    nodes: list[TreeNode] = []
    prefixes: list[list[int]] = []
    for step_index, step in enumerate(result.steps):
        parents = prefixes
        prefixes = [(parents[p] if step_index else []) + [t] for p, t in zip(step.parents, step.tokens, strict=True)]
        continued = set(result.steps[step_index + 1].parents) if step_index + 1 < len(result.steps) else set()
        last = step_index + 1 == len(result.steps)
        for slot, (token, parent, score) in enumerate(zip(step.tokens, step.parents, step.scores, strict=True)):
            if last:  # at the last step the running beams are exactly what finished there: drawn as finished
                continue
            prefix = prefixes[slot]
            nodes.append(TreeNode(step_index, slot, parent if step_index else -1, token_text(runner, token, 12), score,
                                  best[: len(prefix)] == prefix and len(prefix) <= len(best),
                                  slot in continued))
        for j, (ids, normalised, log_p) in enumerate(step.finished):
            parent = next((s for s, p in enumerate(parents) if p == ids[:-1]), 0) if step_index else -1
            nodes.append(TreeNode(step_index, j, parent, token_text(runner, ids[-1], 12), log_p, ids == best, False,
                                  finished=True, normalised=normalised))
    return nodes


def _compared(runner: ModelRunner, prompt: list[int], beams: int, n: int, penalty: float, early, settings,
              seed: int) -> tuple[BeamResult, list[Continuation]]:
    """Beam search, then greedy and seeded sampled continuations, each with its tokens' log-probs: a function of
    its arguments (the runner's `memo` keeps it for the next visitor who asks the same)."""
    stop_ids = _stop_ids(runner)
    result = runner.run_strategy(beam_search, prompt, beams, n, penalty, early, stop_ids)
    greedy_ids, _ = runner.run_strategy(greedy, prompt, n, stop_ids)
    sample = runner.run_strategy(sampled, prompt, n, settings, seed, stop_ids)
    return result, [
        _continuation(runner, prompt, "greedy", greedy_ids),
        _continuation(runner, prompt, f"beam search, width {beams}", result.sequences[0],
                      f"score {result.scores[0]:.3f} = sum log p ÷ {len(result.sequences[0])}^{penalty:g}"),
        _continuation(runner, prompt, f"sampled, T {settings.temperature:g}, top-p {settings.top_p:g}", sample,
                      f"seed {seed}")]


def beam_search_tree(runner: ModelRunner, trace: Trace, new_tokens: int = 16, width: int = 4,
                     length_penalty: float = 1.0, early_stopping: str = "False (heuristic)", temperature: float = 0.8,
                     top_p: float = 0.95, seed: int = 0, large: bool = False) -> View:
    """Beam search's tree over the prompt's continuation, with how its result compares with greedy decoding and a
    seeded sample (the note): the Decoding tab's main view. A long job: run once per prompt and settings (`memo`)."""
    summary, tree, _, facts = _compare(runner, trace, new_tokens, width, length_penalty, early_stopping, temperature,
                                       top_p, seed, large)
    return View(tree, summary, facts)


VIEWS = {"beam_search": beam_search_tree}
SLIDE = None  # a slide would run a long job each time it is shown


def compare(runner: ModelRunner, trace: Trace | None, new_tokens, width, length_penalty, early_stopping: str,
            temperature, top_p, seed, large: bool):
    """The comparison's handler: (summary, beam tree, side-by-side table), or a ⚠️ line."""
    try:
        summary, tree, table, _ = _compare(runner, trace, new_tokens, width, length_penalty, early_stopping,
                                           temperature, top_p, seed, large)
    except PromptError as e:
        return f"⚠️ {e}", None, ""
    return summary, tree, table


def _compare(runner: ModelRunner, trace: Trace | None, new_tokens, width, length_penalty, early_stopping: str,
             temperature, top_p, seed, large: bool):
    """(summary, beam tree, side-by-side table, facts): beam search, greedy and a seeded sample of the prompt."""
    prompt, n = _prompt(runner, trace, new_tokens)
    beams = _setting(width, "Beam width", *WIDTH, whole=True)
    penalty = _setting(length_penalty, "Length penalty", -5, 5)
    early = EARLY_STOPPING.get(early_stopping)
    if early is None:
        raise PromptError(f"Early stopping must be one of {', '.join(EARLY_STOPPING)}.")
    settings = SamplerSettings(temperature=_setting(temperature, "Temperature", 0.05, 5),
                               top_p=_setting(top_p, "Top-p", 0.01, 1))
    seed = _setting(seed, "Seed", 0, 2**31 - 1, whole=True)
    key = ("decoding: compare", tuple(prompt), beams, n, penalty, early, settings, seed)
    result, rows = runner.memo.get(key, lambda: _compared(runner, prompt, beams, n, penalty, early, settings, seed))
    finished = sorted({(tuple(ids), s) for step in result.steps for ids, s, _ in step.finished}, key=lambda x: -x[1])
    greedy_sum, beam_sum = sum(rows[0].log_probs), sum(rows[1].log_probs)
    if list(rows[0].ids) == result.sequences[0]:
        verdict = "Here beam search returns greedy's continuation."
    elif beam_sum > greedy_sum:
        verdict = (f"Its continuation has log-probability **{beam_sum:.2f}** against greedy's **{greedy_sum:.2f}**: "
                   f"beams find likelier text, and likely text is bland and repeats.")
    else:
        verdict = (f"Its continuation has log-probability **{beam_sum:.2f}** against greedy's **{greedy_sum:.2f}** "
                   f"({len(result.sequences[0])} tokens against {len(rows[0].ids)}): the score divides by the "
                   f"length, so a longer hypothesis can win with less probability in total.")
    lines = [f"**Beam search** keeps the {beams} most likely continuations at every step (from {2 * beams} "
             f"candidates, as transformers does) and returns the finished one with the best score = sum of log-probs "
             f"÷ length^{penalty:g}. {verdict}"]
    if finished:
        listed = ", ".join(f"{len(ids)} tokens: {s:.3f}" for ids, s in finished[:6])
        lines.append(f"Finished hypotheses (length: score): {listed}. With length penalty 0 the score is the plain "
                     f"sum of log-probs, and every extra token lowers it: **shorter wins** (the length bias); 1 "
                     f"divides by the length, above 1 favours longer ones.")
    title = f"Beam search, width {beams}, length penalty {penalty:g}, early stopping {early}"
    text = trace.prompt if not trace.chat else "(chat) " + trace.prompt
    facts = {"greedy_log_prob": greedy_sum, "beam_log_prob": beam_sum, "beam": result.sequences[0],
             "beam_is_greedy": list(rows[0].ids) == result.sequences[0]}
    return ("\n\n".join(lines), beam_tree_figure(tree_nodes(runner, result), beams, title, font_scale(large)),
            continuations_html(text, rows, large), facts)


def render(runner: ModelRunner, trace: Trace | None, new_tokens, width, length_penalty, early_stopping, temperature,
           top_p, seed, large: bool):
    if trace is None:
        return "Analyze a prompt to decode it.", None, ""
    return compare(runner, trace, new_tokens, width, length_penalty, early_stopping, temperature, top_p, seed, large)


def draft_depths(n_layers: int) -> list[int]:
    """The drafts a sweep measures: a fifth of the layers up to all but one."""
    return sorted({max(1, round(n_layers * f)) for f in (0.2, 0.4, 0.6, 0.8, 0.9)} | {n_layers - 1})


def speculate(runner: ModelRunner, trace: Trace | None, new_tokens, gamma, shown_layers, temperature,
              large: bool, stop: StopFlag | None = None) -> Iterator[tuple]:
    """Speculative decoding for several draft depths, measured against greedy in the same run: (note, rounds, plot).
    Stop (`stop`, pressed by `ui.stop_button`) ends it between two drafts, keeping what was measured."""
    stop = stop or StopFlag()
    stop.clear()
    try:
        prompt, n = _prompt(runner, trace, new_tokens)
        gamma = _setting(gamma, "Drafted tokens a round", *GAMMA, whole=True)
        shown = _setting(shown_layers, "Draft layers", 1, runner.cfg.n_layers - 1, whole=True)
        temperature = _setting(temperature, "Temperature", 0, 5)
    except PromptError as e:
        yield f"⚠️ {e}", "", None
        return
    stop_ids = _stop_ids(runner)
    depths = sorted(set(draft_depths(runner.cfg.n_layers)) | {shown})
    cfg = runner.cfg
    unembedding = cfg.vocab_size * cfg.d_model / matmul_weights(cfg)
    why_not = (f"In this {cfg.n_layers}-layer model the unembedding is {100 * unembedding:.0f}% of the weights a "
               f"token reads, so a draft of k layers costs that plus k/{cfg.n_layers} of the rest: speculation with "
               f"the model's own layers teaches the rule but rarely pays; it pays with a small, separate draft model "
               f"that agrees often.")
    yield f"Timing plain greedy decoding, then {len(depths)} drafts …", "", None
    plain, plain_s = runner.run_strategy(greedy, prompt, n, stop_ids)
    started = time.monotonic()
    acceptance, speedup, measured = [], [], []
    rounds_html, note = "", ""
    for i, k in enumerate(depths):
        if stop.pressed:  # between two drafts: what was measured stays
            yield (f"{note}\n\n⏹ Stopped by you after {i} of {len(depths)} drafts.", rounds_html,
                   speedup_figure(measured, acceptance, speedup, gamma, font_scale(large)))
            return
        result = runner.run_strategy(speculative, prompt, k, gamma, n, temperature, 0, stop_ids)
        measured.append(k)
        acceptance.append(result.acceptance)
        per_token = result.seconds / max(1, len(result.tokens))
        speedup.append((plain_s / max(1, len(plain))) / per_token)
        if k == shown:
            rounds = [([token_text(runner, t, 12) for t in r.drafted], r.accepted, token_text(runner, r.extra, 12),
                       r.accept_p) for r in result.rounds]
            rounds_html = speculative_rounds_html(rounds, large)
            same = ("the same tokens as greedy decoding, as it must" if result.tokens == plain[: len(result.tokens)]
                    else "not greedy's tokens: something is wrong") if temperature == 0 else \
                "a sample from exactly the model's distribution at this temperature (the accept/resample rule)"
            note = (f"**Draft of {k} layers** (early exit through the final norm and the unembedding: the logit "
                    f"lens's row {k}): {len(result.rounds)} rounds, {100 * result.acceptance:.0f}% of drafted tokens "
                    f"accepted, {len(result.tokens)} tokens: {same}. Each round drafts up to {gamma} tokens, the whole "
                    f"model checks them in one forward and keeps each with probability min(1, p/q); the first "
                    f"rejected one is resampled from max(0, p − q), and if all pass the model adds one more.")
        stopped = i + 1 < len(depths) and time.monotonic() - started > SWEEP_LIMIT_S
        if stopped:
            progress = (f"⏹ Stopped after {i + 1} of {len(depths)} drafts: a sweep measures for at most "
                        f"{SWEEP_LIMIT_S:g} s (fewer new tokens make each draft quicker).")
        else:
            progress = f"Measured {i + 1} of {len(depths)} drafts." if i + 1 < len(depths) else "Done."
        yield (f"{note}\n\n{progress} Greedy took {1000 * plain_s / max(1, len(plain)):.0f} ms a token here. "
               f"Speed-up = greedy's time per token ÷ speculative's, both measured in this run. {why_not}",
               rounds_html, speedup_figure(measured, acceptance, speedup, gamma, font_scale(large)))
        if stopped:
            return


def contrast(runner: ModelRunner, trace: Trace | None, new_tokens, bucket: str, dola_alpha, dola_repetition, top_k,
             cs_alpha, large: bool):
    """DoLa and contrastive search next to greedy: (note, table, DoLa's premature layers)."""
    try:
        prompt, n = _prompt(runner, trace, new_tokens)
        buckets = dola_buckets(runner.cfg)
        layers = buckets.get(bucket)
        if layers is None:
            raise PromptError(f"DoLa's layers must be one of: {'; '.join(buckets)}.")
        alpha = _setting(dola_alpha, "DoLa's plausibility α", 0.001, 1)
        repetition = _setting(dola_repetition, "DoLa's repetition penalty", *DOLA_REPETITION)
        k = _setting(top_k, "Contrastive search's k", *TOP_K, whole=True)
        penalty = _setting(cs_alpha, "Contrastive search's α", 0, 1)
    except PromptError as e:
        return f"⚠️ {e}", "", None
    stop_ids = _stop_ids(runner)
    greedy_ids, _ = runner.run_strategy(greedy, prompt, n, stop_ids)
    dola_steps = runner.run_strategy(dola, prompt, n, layers, alpha, stop_ids, repetition)
    cs_steps = runner.run_strategy(contrastive, prompt, n, k, penalty, stop_ids)
    dola_ids, cs_ids = [s.token for s in dola_steps], [s.token for s in cs_steps]
    rows = [_continuation(runner, prompt, "greedy", greedy_ids),
            _continuation(runner, prompt, f"DoLa, {bucket}, α {alpha:g}, repetition {repetition:g}", dola_ids,
                          f"{sum(s.token != s.plain for s in dola_steps)} of {len(dola_steps)} steps overrule the "
                          "final layer's top token"),
            _continuation(runner, prompt, f"contrastive search, k {k}, α {penalty:g}", cs_ids,
                          f"{sum(s.token != s.plain for s in cs_steps)} of {len(cs_steps)} steps pass over the most "
                          "likely token")]
    note = (f"**DoLa** (Chuang et al. 2023) asks what the last layer knows that an earlier one did not: at each step "
            f"it picks, among layers {_span(layers)}, the one whose early-exit distribution is furthest "
            f"from the final one (Jensen-Shannon divergence), and takes argmax log p_final − log p_early over the "
            f"tokens with p_final ≥ {alpha:g} × the top probability, after a repetition penalty of {repetition:g} on "
            f"those scores (transformers recommends 1.2 with DoLa). The candidate layers are transformers' "
            f"`dola_layers=\"low\"` and `\"high\"` (with tied embeddings, low skips the embedding, whose early exit "
            f"is nearly an identity). Unlike transformers' DoLa, each early exit goes through the final norm, as in "
            f"the paper's code (transformers applies the output head to the raw residual), and the divergence is "
            f"the paper's Jensen-Shannon divergence (transformers averages KL(m‖p) and KL(m‖q) over the vocabulary, "
            f"the other direction, which can pick another layer). **Contrastive search** (Su et al. 2022) scores "
            f"the top {k} tokens by (1 − {penalty:g}) p − {penalty:g} × the highest cosine similarity of the token's "
            f"hidden state with any earlier one, to stop repeating itself. Shade: each token's probability under the "
            f"plain model.")
    figure = premature_figure([s.premature for s in dola_steps], [s.divergence for s in dola_steps],
                              [token_text(runner, s.token, 12) for s in dola_steps],
                              [s.token != s.plain for s in dola_steps], font_scale(large))
    text = trace.prompt if not trace.chat else "(chat) " + trace.prompt
    return note, continuations_html(text, rows, large), figure


def kv_cache(runner: ModelRunner, trace: Trace | None, kv_tokens, layer, large: bool):
    """(what is stored, its contents for one layer, time per token with and without it)."""
    try:
        if trace is None:
            raise PromptError("Analyze a prompt first: its tokens fill the cache.")
        n = _setting(kv_tokens, "Tokens to time", *KV_TOKENS, whole=True)
        layer = _setting(layer, "Layer", 0, runner.cfg.n_layers - 1, whole=True)
    except PromptError as e:
        return f"⚠️ {e}", None, None
    cfg, ids = runner.cfg, trace.ids.tolist()
    try:  # what the cache holds is the layer's keys after RoPE and values, already in the trace's layer view
        tensors = runner.layer(trace, layer)
    except PromptError as e:
        return f"⚠️ {e}", None, None
    keys, values = tensors.rot_k.transpose(1, 0, 2), tensors.v.transpose(1, 0, 2)  # (G, T, Dh)
    timing = runner.run_strategy(time_kv_cache, ids, n, KV_BUDGET_S)
    per_token = kv_cache_bytes(cfg, 1, 4)
    layouts = ((f"multi-head (G = H = {cfg.n_heads})", cfg.n_heads), (f"grouped-query (G = {cfg.n_kv_heads}, "
                                                                       "this model)", cfg.n_kv_heads),
               ("multi-query (G = 1)", 1))
    table = "\n".join(f"| {name} | {kv_cache_bytes(cfg, 1, 4, g):,} | {kv_cache_bytes(cfg, 1, 2, g):,} | "
                      f"{kv_cache_bytes(cfg, len(ids), 4, g) / 2**10:,.0f} KiB | "
                      f"{kv_cache_bytes(cfg, cfg.max_seq_len, 2, g) / 2**20:,.0f} MiB |" for name, g in layouts)
    ratio = np.mean(timing.without_cache) / max(1e-9, np.mean(timing.with_cache))
    stopped = "" if len(timing.context) == n else (f" The run stopped after {len(timing.context)} of {n} tokens: it "
                                                  f"may hold the model for {KV_BUDGET_S:g} s at most.")
    note = (f"**The KV cache** keeps, for every layer and every position so far, the keys (after RoPE) and the values "
            f"of the {cfg.n_kv_heads} key/value heads × {cfg.d_head} dimensions, so a new token computes only its own "
            f"q, k, v and reads the rest: 2 × {cfg.n_layers} layers × {cfg.n_kv_heads} × {cfg.d_head} × 4 bytes = "
            f"**{per_token:,} bytes per token** in float32.\n\n"
            f"| attention | bytes per token (float32) | (bfloat16) | this prompt, {len(ids)} tokens (float32) | "
            f"full {cfg.max_seq_len:,}-token context (bfloat16) |\n|---|---|---|---|---|\n{table}\n\n"
            f"Measured now, greedy from this prompt: with the cache a token took "
            f"{1000 * np.mean(timing.with_cache):.1f} ms on average, without it "
            f"{1000 * np.mean(timing.without_cache):.1f} ms (×{ratio:.1f}), and without it the time grows with the "
            f"context.{stopped}")
    labels = axis_labels([runner.token_bytes(t) for t in ids])
    return (note, cache_contents_figure(keys, values, labels, layer, font_scale(large)),
            cache_timing_figure(timing.context, timing.with_cache, timing.without_cache, font_scale(large)))


def build(ctx: TabContext) -> TabView:
    runner, cfg = ctx.runner, ctx.runner.cfg
    intro(
        "How a continuation is chosen. Greedy takes the top token; **beam search** keeps several hypotheses and "
        "returns the likeliest (bland, repetitive and short: see the tree); **sampling** draws; **speculative "
        "decoding** lets a cheap draft guess and the model check; **DoLa** and **contrastive search** reshape the "
        "choice; the **KV cache** is what makes one token cost one position. Each runs on the real model and is "
        "tested against a reference (transformers' beam search, plain greedy, the papers' equations)."
    )
    with gr.Row():
        new_tokens = gr.Slider(*NEW_TOKENS, value=16, step=1, label="New tokens", elem_id="dec-new")
        width = gr.Slider(*WIDTH, value=4, step=1, label="Beam width", elem_id="dec-width")
        length_penalty = gr.Slider(-2, 3, value=1.0, step=0.1, label="Length penalty", elem_id="dec-penalty")
        early = gr.Dropdown(list(EARLY_STOPPING), value=next(iter(EARLY_STOPPING)), label="Early stopping",
                            elem_id="dec-early")
    with gr.Row():
        temperature = gr.Slider(0.05, 2, value=0.8, step=0.05, label="Sampled: temperature", elem_id="dec-temp")
        top_p = gr.Slider(0.05, 1, value=0.95, step=0.01, label="Sampled: top-p", elem_id="dec-top-p")
        seed = gr.Number(0, precision=0, label="Sampled: seed", elem_id="dec-seed")
        go_btn = gr.Button("Decode", variant="primary", elem_id="dec-go")
    summary = gr.Markdown(elem_id="dec-summary")
    tree = gr.Plot(elem_id="dec-tree", show_label=False)
    side = gr.HTML(elem_id="dec-side")
    with gr.Accordion("Speculative decoding: the model's first layers draft, the whole model checks", open=False):
        with gr.Row():
            gamma = gr.Slider(*GAMMA, value=4, step=1, label="Drafted tokens a round (γ)", elem_id="dec-gamma")
            shown = gr.Slider(1, max(2, cfg.n_layers - 1), value=max(1, cfg.n_layers - 4), step=1,
                              label="Draft layers to show round by round (k)", elem_id="dec-k")
            spec_temp = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)", elem_id="dec-spec-temp")
        with gr.Row():
            spec_btn = gr.Button("Run and time the drafts", variant="primary", elem_id="dec-spec")
            stop = gr.Button("Stop", elem_id="dec-spec-stop")
        spec_note = gr.Markdown(elem_id="dec-spec-note")
        spec_plot = gr.Plot(elem_id="dec-spec-plot", show_label=False)
        spec_rounds = gr.HTML(elem_id="dec-spec-rounds")
    with gr.Accordion("DoLa and contrastive search", open=False):
        with gr.Row():
            buckets = list(dola_buckets(cfg))
            bucket = gr.Radio(buckets, value=buckets[0], label="DoLa contrasts with",
                              elem_id="dec-bucket")
            dola_alpha = gr.Slider(0.01, 1, value=0.1, step=0.01, label="DoLa: plausibility α", elem_id="dec-dola-a")
            dola_repetition = gr.Slider(*DOLA_REPETITION, value=1.2, step=0.05, label="DoLa: repetition penalty",
                                        elem_id="dec-dola-rep")
            top_k = gr.Slider(*TOP_K, value=4, step=1, label="Contrastive: k", elem_id="dec-cs-k")
            cs_alpha = gr.Slider(0, 1, value=0.6, step=0.05, label="Contrastive: α", elem_id="dec-cs-a")
        contrast_btn = gr.Button("Decode with DoLa and contrastive search", variant="primary", elem_id="dec-contrast")
        contrast_note = gr.Markdown(elem_id="dec-contrast-note")
        contrast_side = gr.HTML(elem_id="dec-contrast-side")
        contrast_plot = gr.Plot(elem_id="dec-contrast-plot", show_label=False)
    with gr.Accordion("The KV cache", open=False):
        with gr.Row():
            kv_tokens = gr.Slider(*KV_TOKENS, value=64, step=4, label="Tokens to time", elem_id="dec-kv-n")
            kv_layer = gr.Slider(0, cfg.n_layers - 1, value=0, step=1, label="Layer to show", elem_id="dec-kv-layer")
            kv_btn = gr.Button(f"Measure (at most {KV_BUDGET_S:g} s)", variant="primary", elem_id="dec-kv")
        kv_note = gr.Markdown(elem_id="dec-kv-note")
        kv_timing = gr.Plot(elem_id="dec-kv-timing", show_label=False)
        kv_contents = gr.Plot(elem_id="dec-kv-contents", show_label=False)

    settings = [new_tokens, width, length_penalty, early, temperature, top_p, seed, ctx.large]
    go_btn.click(heavy_job(compare, runner, "a decoding comparison"), [ctx.trace, *settings], [summary, tree, side],
                 **HEAVY)
    stopping = stop_state()
    spec_btn.click(heavy_job(speculate, runner, "a speculative-decoding sweep"),
                   [ctx.trace, new_tokens, gamma, shown, spec_temp, ctx.large, stopping],
                   [spec_note, spec_rounds, spec_plot], trigger_mode="always_last", **HEAVY)
    # always_last: a click while a sweep is still stopping runs once it has stopped (the default would drop it)
    stop_button(stop, stopping, spec_note)
    contrast_inputs = [ctx.trace, new_tokens, bucket, dola_alpha, dola_repetition, top_k, cs_alpha, ctx.large]
    contrast_btn.click(heavy_job(contrast, runner, "a DoLa and contrastive-search run"), contrast_inputs,
                       [contrast_note, contrast_side, contrast_plot], **HEAVY)
    kv_btn.click(heavy_job(kv_cache, runner, "a KV-cache timing"), [ctx.trace, kv_tokens, kv_layer, ctx.large],
                 [kv_note, kv_contents, kv_timing], **HEAVY)
    return TabView(render=Event(bind(render, runner), [ctx.trace, *settings], [summary, tree, side]))

