"""Lab tab: the course notes' what-ifs run on the real weights, measured and checked.

Attention masks: the model run with its causal mask replaced (sliding window, sinks + window, logarithmic,
strided, random) in all layers or chosen ones, through the scores' hook (`model.lab`); each token's surprisal, the
loss, the KL to the unchanged model and where its top-1 changes; a sweep of loss against window size with and
without sink tokens (a long job: one per visitor, Stop keeps what was measured). Flash attention: one head's
attention computed tile by tile with the online softmax, equal to the ordinary form, with what each keeps in memory
and reads. Scaling laws: Kaplan's and Chinchilla's fits with the papers' constants (`model.scaling`), the
compute-optimal split of a budget, and this model's place.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator

import gradio as gr
import numpy as np
import torch

from model.lab import (
    A100_SRAM_BYTES, HALF, PATTERNS, MaskError, MaskSpec, attention_mask, attention_memory, attention_scores,
    flash_attention, flash_blocks, io_accesses, sweep_windows, tile_count,
)
from model.scaling import (
    CHINCHILLA, CITATIONS, FLOPS_PER_PARAMETER_TOKEN, KAPLAN, TRAINING, chinchilla_loss, compute_optimal,
    exponential_fit, kaplan_loss_d, kaplan_loss_n,
)

from .figures.lab import (
    data_figure, flash_figure, isoflop_figure, kaplan_figure, mask_figure, mask_result_figure, sweep_figure,
)
from .figures.tokens import axis_labels
from .runner import ModelRunner, PromptError
from .trace import Trace
from .ui import (
    HEAVY, LAYER_VIEW, MODEL_RUN, READ_ONLY, Event, Link, StopFlag, TabContext, TabView, bind, clamp, font_scale,
    heavy_job, intro, stop_button, stop_state,
)
from .view import View, head_of, layer_of, number

TAB_ID = "lab"

EXPERIMENTS = {"masks": "Attention masks", "flash": "Flash attention, tile by tile", "scaling": "Scaling laws"}
CHOICES = [p for p in PATTERNS if p != "causal"]
BUDGET_RANGE = (17.0, 26.0)  # log10 of the compute budget C in FLOPs the slider offers
SWEEP_SINKS = (0, 4)  # the sweep's curves: windowed attention alone, and with StreamingLLM's four sink tokens
RESIZE = "() => { window.dispatchEvent(new Event('resize')); }"  # Plotly refits figures drawn while hidden
BLOCK_MAX = 128  # the tile sliders' end
MAX_TILES = 4096  # tiles one flash view computes and keeps at most (blocks of 8 over 512 tokens make 2,080)
CONTEXTS = (8192, 131072)  # the longer contexts the memory table adds to the prompt's
LINKS = (Link("experiment", "lab-experiment", "radio"), Link("pattern", "lab-pattern", "radio"),
         Link("window", "lab-window"), Link("sinks", "lab-sinks"), Link("layers", "lab-layers", "text"),
         Link("layer", "lab-flash-layer"), Link("head", "lab-flash-head"), Link("bq", "lab-bq"), Link("bk", "lab-bk"),
         Link("step", "lab-step", last=True), Link("budget", "lab-budget"))


# -- attention masks ------------------------------------------------------------------------------------------------

def layers_of(cfg, text) -> tuple[int, ...] | None:
    """Layers from '0-9, 20' (empty: None, every layer), checked."""
    text = "" if text is None else str(text)
    if not text.strip():
        return None
    picked = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise PromptError(f"layers must look like '0-9, 20' (empty: every layer), got {part.strip()!r}")
        low, high = int(match[1]), int(match[2] or match[1])
        for value in (low, high):
            layer_of(cfg, value, "layers")
        if high < low:
            raise PromptError(f"layers: the range {low}-{high} runs backwards")
        picked.update(range(low, high + 1))
    return tuple(sorted(picked))


def spec_of(pattern, window, sinks, seed, T: int) -> MaskSpec:
    """The pattern's settings checked against T tokens: PromptError naming the setting."""
    if pattern not in CHOICES:
        raise PromptError(f"pattern must be one of {', '.join(CHOICES)}, got {pattern!r}")
    spec = MaskSpec(str(pattern), number(window, "window", whole=True), number(sinks, "sinks", whole=True),
                    number(seed, "seed", 0, 2**31 - 1, whole=True))
    try:
        return spec.checked(T)
    except MaskError as e:
        raise PromptError(str(e)) from None


def tokens_of(runner: ModelRunner, trace: Trace, text) -> tuple[list[int], list[bytes], str]:
    """The tokens to measure on: the pasted text's (up to the token cap) or the analysed prompt's."""
    if text is not None and str(text).strip():
        ids, _, _ = runner.tokenize(str(text), False)
        where = f"the pasted text ({len(ids)} tokens)"
    else:
        ids, where = trace.ids.tolist(), f"the prompt ({trace.n_tokens} tokens)"
    if len(ids) < 2:
        raise PromptError("The Lab measures next-token loss: give it at least two tokens.")
    return ids, [runner.token_bytes(t) for t in ids], where


def pattern(runner: ModelRunner, trace: Trace, pattern: str = "sinks", window: int = 8, sinks: int = 4,
            seed: int = 0, text: str = "", large: bool = False) -> View:
    """The attention pattern as a heatmap over the tokens measured on (no model run)."""
    ids, token_bytes, _ = tokens_of(runner, trace, text)
    spec = spec_of(pattern, window, sinks, seed, len(ids))
    mask = attention_mask(spec, len(ids)).numpy()
    density = mask.sum() / (len(ids) * (len(ids) + 1) / 2)
    note = (f"**{spec.label}**: {PATTERNS[spec.kind]}. Each query sees {mask.sum(1).min()}–{mask.sum(1).max()} "
            f"keys; the pattern keeps **{100 * density:.1f}%** of the causal mask's.")
    return View(mask_figure(mask, axis_labels(token_bytes), f"Attention pattern: {spec.label}",
                            font_scale(large)), note, {"density": float(density)})


def masks(runner: ModelRunner, trace: Trace, pattern: str = "sinks", window: int = 8, sinks: int = 4, seed: int = 0,
          layers: str = "", text: str = "", large: bool = False) -> View:
    """The model run unchanged and with the pattern (in the chosen layers, default all): each token's surprisal
    both ways, the mean loss in nats and bits, the KL of each position's next-token distribution to the unchanged
    model's, and the positions whose most likely next token changed."""
    ids, token_bytes, where = tokens_of(runner, trace, text)
    spec = spec_of(pattern, window, sinks, seed, len(ids))
    chosen = layers_of(runner.cfg, layers)
    result = runner.mask_experiment(ids, spec, chosen)
    bits = 1 / math.log(2)
    which = "every layer" if chosen is None else f"layers {layers.strip()}"
    changed = result.changed
    worst = int(np.argmax(result.kl))
    labels = axis_labels(token_bytes)
    note = (f"**{spec.label}** in {which}, on {where}: loss **{result.loss:.3f} → {result.loss_masked:.3f} nats** "
            f"per token ({result.loss * bits:.3f} → {result.loss_masked * bits:.3f} bits; "
            f"{result.loss_masked - result.loss:+.3f} nats). The most likely next token changed at "
            f"**{len(changed)} of {len(ids)}** positions; mean KL(unchanged ‖ masked) {result.kl.mean():.4f} nats, "
            f"largest {result.kl[worst]:.4f} after `{labels[worst]}`. The pattern keeps {100 * result.density:.1f}% "
            f"of the causal mask's keys (a hook on `hook_attn_scores` writes −∞ where it hides one).")
    title = f"Surprisal with {spec.label} ({which}) and without"
    figure = mask_result_figure(labels, result.surprisal * bits, result.surprisal_masked * bits, result.kl, changed,
                                title, font_scale(large))
    return View(figure, note, {"loss": result.loss, "loss_masked": result.loss_masked, "changed": len(changed),
                               "kl_mean": float(result.kl.mean()), "density": result.density})


def sweep(runner: ModelRunner, trace: Trace | None, text: str, layers: str, large: bool,
          stop: StopFlag | None = None) -> Iterator[tuple[str, object]]:
    """Loss against window size with no sinks and with four (StreamingLLM's finding), streamed point by point:
    (note, figure). Stop ends it between two points, keeping the points measured."""
    stop = stop or StopFlag()
    stop.clear()
    if trace is None:
        yield "Analyze a prompt first.", None
        return
    try:
        ids, _, where = tokens_of(runner, trace, text)
        chosen = layers_of(runner.cfg, layers)
        windows = sweep_windows(len(ids))
        points = runner.mask_sweep(ids, windows, SWEEP_SINKS, chosen)
    except PromptError as e:
        yield f"⚠️ {e}", None
        return
    T, total = len(ids), sum(w >= s for s in SWEEP_SINKS for w in windows)
    curves: dict[int, list[tuple[int, float]]] = {s: [] for s in SWEEP_SINKS}
    unchanged = math.nan
    scale = font_scale(large)
    which = "every layer" if chosen is None else f"layers {layers.strip()}"

    def shown(status: str) -> tuple[str, object]:
        finding = streaming_finding(curves, T)
        return (f"Window sweep on {where}, {which}: {status}. {finding}",
                sweep_figure(curves, unchanged, T, f"Loss against window size on {where}", scale))

    estimate = runner.estimate_seconds(total * T * runner.cfg.n_layers)
    yield f"Window sweep on {where}: {total} runs of {T} tokens, about {estimate:.0f} s …", None
    done, started = 0, time.monotonic()
    for point in points:
        done += 1
        curves[point.sinks].append((point.window, point.loss))
        if point.window == T:
            unchanged = point.loss
        yield shown(f"{done} of {total} runs" if done < total else f"done in {time.monotonic() - started:.1f} s")
        if stop.pressed and done < total:
            yield shown(f"⏹ stopped by you after {done} of {total} runs")
            return


def streaming_finding(curves: dict[int, list[tuple[int, float]]], T: int) -> str:
    """What the sweep shows so far: the loss with and without sinks at the windows both have."""
    without, with_sinks = dict(curves.get(0, [])), dict(curves.get(4, []))
    both = sorted(set(without) & set(with_sinks) - {T})
    if not both:
        return ""
    gaps = ", ".join(f"W={w}: {without[w]:.2f} vs {with_sinks[w]:.2f}" for w in both)
    return f"Loss without sinks vs with 4 sinks (nats): {gaps}."


# -- flash attention ------------------------------------------------------------------------------------------------

def blocks_of(T: int, bq, bk) -> tuple[int, int]:
    """The query and key block sizes, checked against T tokens (None: 16, or T if shorter)."""
    return tuple(number(min(16, T) if b is None else b, name, 1, T, whole=True)
                 for b, name in ((bq, "query block"), (bk, "key block")))


def flash(runner: ModelRunner, trace: Trace, layer: int = 0, head: int = 0, bq: int | None = None,
          bk: int | None = None, step: int = 1, large: bool = False) -> View:
    """One head's attention computed a (bq x bk) tile at a time with the online softmax, at step `step`: the tile,
    the running max and sum and the partial output; the note checks the result against softmax(QKᵀ/√d)V and the
    model's own attention, and compares what each form holds in memory and reads."""
    cfg, T = runner.cfg, trace.n_tokens
    layer, head = layer_of(cfg, layer), head_of(cfg, head)
    bq, bk = blocks_of(T, bq, bk)
    computed = tile_count(T, bq, bk, cfg.window_of(layer))
    if computed > MAX_TILES:
        raise PromptError(f"query block {bq} × key block {bk} makes {computed:,} tiles over {T} tokens; the limit is "
                          f"{MAX_TILES:,}: choose larger blocks")
    tensors = runner.layer(trace, layer)
    g = cfg.kv_head_of(head)
    q, k, v = (torch.from_numpy(x) for x in (tensors.rot_q[:, head], tensors.rot_k[:, g], tensors.v[:, g]))
    window = cfg.window_of(layer)
    run = flash_attention(q, k, v, 1 / cfg.attn_scale, bq, bk, window)
    step = number(step, "step", 1, len(run.steps), whole=True)
    s = run.steps[step - 1]
    model_out = tensors.pattern[head] @ tensors.v[:, g]  # the forward's own weights times v
    scores = attention_scores(q, k, 1 / cfg.attn_scale, window)  # the whole matrix: the reference and the figure's
    reference = (torch.softmax(scores, -1) @ v.double()).numpy()
    err_ref, err_model = float(np.abs(run.output - reference).max()), float(np.abs(run.output - model_out).max())
    tiles = math.ceil(T / bq) * math.ceil(T / bk)
    done = [(t.rows, t.keys) for t in run.steps[:step - 1]]
    skipped = [((qb * bq, min(qb * bq + bq, T)), (kb * bk, min(kb * bk + bk, T))) for qb, kb in run.skipped]
    final_rows = run.output[s.rows[0]:s.rows[1]]
    left = float(np.abs(s.partial - final_rows).max())
    note = (f"Layer {layer} head {head} (key/value head {g}), {T} tokens in tiles of {bq} queries × {bk} keys: "
            f"**{len(run.steps)} tiles computed**, {len(run.skipped)} of {tiles} skipped (the causal mask"
            f"{' and the window' if window else ''} hides them whole). Step {step}: rows {s.rows[0]}–{s.rows[1] - 1} "
            f"against keys {s.keys[0]}–{s.keys[1] - 1}. For each row: m ← max(m, tile max); l ← e^(m_old − m)·l + "
            f"Σ e^(s − m); acc ← e^(m_old − m)·acc + e^(s − m)·V; output = acc / l once the row's last tile is done "
            f"(now {left:.2e} from it). **The tiled output equals softmax(QKᵀ/√d)V to {err_ref:.1e}** and the model's "
            f"own attention (pattern × V from the forward) to {err_model:.1e}.")
    memory = memory_markdown(cfg, T, bq, bk)
    figure = flash_figure(scores.float().numpy(), done, skipped, (s.rows, s.keys),
                          np.arange(*s.rows), s.tile_max, s.running_max, s.running_sum, s.partial,
                          f"Flash attention, L{layer}H{head}: tile {step} of {len(run.steps)}", font_scale(large))
    return View(figure, note + "\n\n" + memory, {"steps": len(run.steps), "error": err_ref, "error_model": err_model})


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def memory_markdown(cfg, T: int, bq: int, bk: int) -> str:
    """What each form holds in memory per layer (float32) and what it reads and writes in GPU memory per head
    (Dao et al. 2022), for this prompt and longer contexts at this model's shape."""
    sram = A100_SRAM_BYTES // HALF
    b_r, b_c = flash_blocks(cfg.d_head, sram)
    rows = []
    for n in (T, *CONTEXTS):
        mem = attention_memory(n, cfg.n_heads, cfg.d_head, bq, bk)
        io = io_accesses(n, cfg.d_head, sram)
        rows.append(f"| {n:,}{' (this prompt)' if n == T else ''} | {_bytes(mem['standard'])} | "
                    f"{_bytes(mem['tiled'])} | {_bytes(io['standard'] * HALF)} | {_bytes(io['flash'] * HALF)} | "
                    f"{io['standard'] / io['flash']:.1f}× |")
    return ("| N tokens | scores H·N² | tiles + m, l, acc | HBM traffic, standard | … flash | ratio |\n"
            "|---|---|---|---|---|---|\n" +
            "\n".join(rows) +
            f"\n\nMemory (float32, one layer's {cfg.n_heads} heads): the standard form holds H·N² scores; the tiled "
            f"one a {bq}×{bk} tile, the query block's m, l and partial output per head. HBM traffic: what each reads "
            f"and writes in GPU memory per head, Dao et al. 2022 (*FlashAttention*, "
            f"arXiv:2205.14135, Theorem 2): standard attention Θ(N·d + N²) (Algorithm 0: 4N·d + 4N²), "
            f"FlashAttention Θ(N²·d²/M) (Algorithm 1: 3N·d + 2N + T_c·(3N·d + 4N), T_c = ⌈N/B_c⌉), counted in fp16 "
            f"with d = {cfg.d_head} and M = 192 KB of SRAM (an A100 streaming multiprocessor, the paper's example): "
            f"B_c = ⌈M/4d⌉ = {b_c}, B_r = min(B_c, d) = {b_r}.")


# -- scaling laws ---------------------------------------------------------------------------------------------------

def _si(x: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:,.3g} {unit}"
    return f"{x:,.3g}"


def scaling(runner: ModelRunner, trace: Trace, budget: float = 21.0, large: bool = False) -> View:
    """Kaplan's L(N) against an exponential fitted through it (log-log and linear axes), Chinchilla's compute-optimal
    N and D for a budget of 10^budget FLOPs, and this model's place: its parameters counted from the weights, its
    published training tokens, the fits' predictions beside its measured loss on the prompt."""
    budget = number(budget, "budget", *BUDGET_RANGE)
    facts = place(runner, trace)
    C = 10 ** budget
    n_opt, d_opt = compute_optimal(C)
    N = np.geomspace(1e5, 1e12, 300)
    fit_x = np.linspace(1e8, 1e9, 12)
    a, k, c = exponential_fit(fit_x, kaplan_loss_n(fit_x))
    figure = kaplan_figure(N, kaplan_loss_n(N), fit_x, kaplan_loss_n(fit_x), c + a * np.exp(-k * N),
                           facts["non_embedding"], facts["measured"],
                           "Kaplan's power law and an exponential through the same dots", font_scale(large))
    c_ = CHINCHILLA
    note = (f"**Kaplan et al.** L(N) = (N_c/N)^α_N, N_c = {KAPLAN['N_c']:.1e}, α_N = {KAPLAN['alpha_N']} (N: "
            f"non-embedding parameters; {CITATIONS['kaplan']}). Through the 12 dots (N from 100M to 1B) an "
            f"exponential c + a·e^(−kN) (c = {c:.3f}) fits so closely that on linear axes (right) the two are hard "
            f"to tell apart, yet it flattens at {c:.2f} while the power law goes on falling: on log-log axes "
            f"(left) a power law is a straight line, the test the notes warn to use.\n\n"
            f"**Chinchilla** L(N, D) = E + A/N^α + B/D^β, E = {c_['E']}, A = {c_['A']}, B = {c_['B']}, "
            f"α = {c_['alpha']}, β = {c_['beta']} ({CITATIONS['chinchilla']}). For a budget C = 6·N·D = "
            f"**10^{budget:.1f} FLOPs**: N_opt = G·(C/6)^a = **{_si(n_opt)}** parameters and D_opt = G⁻¹·(C/6)^b = "
            f"**{_si(d_opt)}** tokens ({d_opt / n_opt:.0f} tokens per parameter), with a = β/(α+β), b = α/(α+β), "
            f"G = (αA/(βB))^(1/(α+β)).\n\n" + facts["text"])
    return View(figure, note, {"n_opt": n_opt, "d_opt": d_opt, **{k_: v for k_, v in facts.items() if k_ != "text"}})


def data(runner: ModelRunner, trace: Trace, large: bool = False) -> View:
    """Kaplan's loss against training tokens, L(D) = (D_c/D)^α_D, with this model's published training tokens."""
    D = np.geomspace(1e7, 1e14, 300)
    trained = TRAINING.get(runner.cfg.name)
    at = float(kaplan_loss_d(trained.tokens)) if trained else None
    note = (f"**Kaplan et al.** L(D) = (D_c/D)^α_D, D_c = {KAPLAN['D_c']:.1e}, α_D = {KAPLAN['alpha_D']} (D: "
            f"tokens, for a model large enough that D alone limits it). "
            + (f"At this model's {_si(trained.tokens)} tokens: {at:.3f} nats, "
               f"{'below' if at < place_n(runner) else 'above'} L(N) = {place_n(runner):.3f} for its size: by "
               f"Kaplan's laws its {'size' if at < place_n(runner) else 'data'} limits it more."
               if trained else "This model's training tokens are not published here."))
    return View(data_figure(D, kaplan_loss_d(D), trained.tokens if trained else None, at,
                            "Kaplan's power law in the data", font_scale(large)), note, {"kaplan_d": at})


def isoflop(runner: ModelRunner, trace: Trace, budget: float = 21.0, large: bool = False) -> View:
    """Chinchilla's predicted loss along the budget 10^budget FLOPs (D = C / 6N), the optimum marked, and this
    model's own N and D."""
    budget = number(budget, "budget", *BUDGET_RANGE)
    C = 10 ** budget
    facts = place(runner, trace)
    n_opt, d_opt = compute_optimal(C)
    N = np.geomspace(min(n_opt / 300, facts["parameters"] / 3), max(n_opt * 300, facts["parameters"] * 3), 300)
    figure = isoflop_figure(N, chinchilla_loss(N, C / (FLOPS_PER_PARAMETER_TOKEN * N)),
                            (n_opt, float(chinchilla_loss(n_opt, d_opt))),
                            (facts["parameters"], facts["predicted"] if facts["predicted"] is not None else math.nan),
                            f"Chinchilla's fit along C = 10^{budget:.1f} FLOPs", font_scale(large))
    return View(figure, f"The curve: L(N, C/6N) for C = 10^{budget:.1f}; its minimum is the compute-optimal N.",
                {"n_opt": n_opt, "d_opt": d_opt})


def place_n(runner: ModelRunner) -> float:
    """Kaplan's L(N) for this model's non-embedding parameters."""
    return float(kaplan_loss_n(runner.parameter_count - runner.embedding_parameter_count))


def place(runner: ModelRunner, trace: Trace) -> dict:
    """This model's parameters (from the weights), training tokens (published), compute, the fits' predictions
    and its measured loss on the prompt, with a paragraph saying so."""
    total = runner.parameter_count
    non_embedding = total - runner.embedding_parameter_count
    bits = trace.surprisal[1:]
    measured = float(np.nanmean(bits) * math.log(2)) if np.isfinite(bits).any() else None
    trained = TRAINING.get(runner.cfg.name)
    kaplan = place_n(runner)
    text = (f"**This model** ({runner.cfg.name}): **{total:,} parameters** counted from the weights, "
            f"{non_embedding:,} of them outside the embedding (Kaplan's N). Its loss on this prompt: "
            + (f"**{measured:.3f} nats** per token" if measured is not None else "no next token to score") +
            f"; Kaplan's L(N) predicts {kaplan:.3f}.")
    facts = {"parameters": total, "non_embedding": non_embedding, "measured": measured, "kaplan": kaplan,
             "predicted": None}
    if trained is None:
        return {**facts, "text": text + " Its training tokens are not published here, so the Chinchilla "
                                       "comparison is left out."}
    C = FLOPS_PER_PARAMETER_TOKEN * total * trained.tokens
    n_opt, d_opt = compute_optimal(C)
    predicted = float(chinchilla_loss(total, trained.tokens))
    text += (f" Trained on **{_si(trained.tokens)} tokens** ({trained.source}): C = 6·N·D ≈ **{C:.2e} FLOPs**, "
             f"{trained.tokens / total:,.0f} tokens per parameter. For that C, Chinchilla's fit would train "
             f"{_si(n_opt)} parameters on {_si(d_opt)} tokens: this model is {n_opt / total:.0f}× smaller and "
             f"trained on {trained.tokens / d_opt:.0f}× more tokens than compute-optimal. That is deliberate: "
             f"compute-optimal minimises the training bill, but every token a model ever generates costs about "
             f"2·N FLOPs, so a small model trained far past the optimum is cheaper to run for the same loss "
             f"(and fits a phone). The fit predicts L(N, D) = **{predicted:.3f} nats** for its N and D, beside its "
             f"measured {measured if measured is not None else math.nan:.3f}: a rough comparison only, since the "
             f"fits were made on other data with other tokenizers (a nat per token is not the same nat), and on "
             f"one prompt.")
    return {**facts, "predicted": predicted, "training_tokens": trained.tokens, "text": text}


# -- the slide, and the tab ------------------------------------------------------------------------------------------

def experiment(runner: ModelRunner, trace: Trace, experiment: str = "masks", pattern: str = "sinks",
               window: int = 8, sinks: int = 4, layers: str = "", layer: int = 0, head: int = 0,
               bq: int | None = None, bk: int | None = None, step: int = 1, budget: float = 21.0,
               large: bool = False) -> View:
    """A deck's slide of the Lab: the experiment named (masks, flash or scaling) in the state given. Every setting
    is checked, the other experiments' too, so a slide's mistake is named wherever it is."""
    if experiment not in EXPERIMENTS:
        raise PromptError(f"experiment must be one of {', '.join(EXPERIMENTS)}, got {experiment!r}")
    cfg, T = runner.cfg, trace.n_tokens
    spec_of(pattern, window, sinks, 0, T)
    layers_of(cfg, layers)
    layer, head = layer_of(cfg, layer), head_of(cfg, head)
    bq, bk = blocks_of(T, bq, bk)
    number(step, "step", 1, tile_count(T, bq, bk, cfg.window_of(layer)), whole=True)
    number(budget, "budget", *BUDGET_RANGE)
    if experiment == "masks":
        return masks(runner, trace, pattern, window, sinks, 0, layers, "", large)
    if experiment == "flash":
        return flash(runner, trace, layer, head, bq, bk, step, large)
    return scaling(runner, trace, budget, large)


VIEWS = {"pattern": pattern, "masks": masks, "flash": flash, "scaling": scaling, "data": data, "isoflop": isoflop,
         "experiment": experiment}
SLIDE = "experiment"


def warned(fn, *args) -> tuple:
    """fn's View as (note, figure), or (⚠️ message, None)."""
    try:
        shown = fn(*args)
    except PromptError as e:
        return f"⚠️ {e}", None
    return shown.note, shown.figure


def cut_to(runner: ModelRunner, trace: Trace, window, sinks, text) -> tuple[int, int, str]:
    """The tab's window and sinks for the text measured on: a window past a short text is cut to it (the causal
    mask), and the sinks with it, said in a line; out of the sliders' range, PromptError naming the setting."""
    window = number(window, "window", 1, runner.max_tokens, whole=True)
    sinks = number(sinks, "sinks", 0, runner.max_tokens, whole=True)
    T = len(tokens_of(runner, trace, text)[0])
    if window <= T:
        return window, sinks, ""
    return T, min(sinks, T), (f"\n\n(A window of {window} is past the {T} tokens measured on: {T} used, which is the "
                              f"causal mask{f'; sinks cut to {T}' if sinks > T else ''}.)")


def _with_cut(view, runner: ModelRunner, trace: Trace | None, kind: str, window, sinks, seed, text, *rest):
    """A mask view for the tab: (note, figure), the window cut to a short text (`cut_to`) and said, or a ⚠️ line."""
    if trace is None:
        return "Analyze a prompt first.", None
    try:
        window, sinks, cut = cut_to(runner, trace, window, sinks, text)
    except PromptError as e:
        return f"⚠️ {e}", None
    note, figure = warned(view, runner, trace, kind, window, sinks, seed, *rest)
    return note + (cut if figure is not None else ""), figure


def draw_pattern(runner: ModelRunner, trace: Trace | None, kind: str, window: int, sinks: int, seed: int, text: str,
                 large: bool):
    return _with_cut(pattern, runner, trace, kind, window, sinks, seed, text, text, large)


def run_masks(runner: ModelRunner, trace: Trace | None, kind: str, window: int, sinks: int, seed: int, layers: str,
              text: str, large: bool):
    return _with_cut(masks, runner, trace, kind, window, sinks, seed, text, layers, text, large)


def draw_flash(runner: ModelRunner, trace: Trace | None, layer: int, head: int, bq: int, bk: int, step: int,
               large: bool):
    """(note, figure, the step slider's range): the step kept if it still exists."""
    if trace is None:
        return "Analyze a prompt first.", None, gr.update()
    try:
        layer = layer_of(runner.cfg, layer)
        T = trace.n_tokens
        asked = blocks_of(runner.max_tokens, bq, bk)  # a block of 0 is refused; one past a short prompt is cut
        bq, bk = (min(b, T) for b in asked)
        n_steps = tile_count(T, bq, bk, runner.cfg.window_of(layer))
        step = clamp(step, 1, n_steps)  # the step kept when it still exists, else the last
        shown = flash(runner, trace, layer, head, bq, bk, step, large)
    except PromptError as e:
        return f"⚠️ {e}", None, gr.update()
    cut = (f"\n\n(Blocks of {asked[0]} × {asked[1]} are past the prompt's {T} tokens: {bq} × {bk} used.)"
           if asked != (bq, bk) else "")
    # Gradio refuses a slider whose maximum is its minimum: one tile leaves it at 1..2, still (the step is clamped)
    return shown.note + cut, shown.figure, gr.update(maximum=max(n_steps, 2), value=step, interactive=n_steps > 1)


def draw_scaling(runner: ModelRunner, trace: Trace | None, budget: float, large: bool):
    """(note, L(N), L(D), the budget's isoFLOP curve)."""
    if trace is None:
        return "Analyze a prompt first.", None, None, None
    try:
        shown, curve = scaling(runner, trace, budget, large), isoflop(runner, trace, budget, large)
    except PromptError as e:
        return f"⚠️ {e}", None, None, None
    in_data = data(runner, trace, large)
    return shown.note + "\n\n" + in_data.note, shown.figure, in_data.figure, curve.figure


def render(runner: ModelRunner, trace: Trace | None, kind: str, window: int, sinks: int, seed: int, text: str,
           layer: int, head: int, bq: int, bk: int, step: int, budget: float, large: bool):
    """A new prompt: the pattern, cleared results, the flash steps and the scaling figures."""
    return (*draw_pattern(runner, trace, kind, window, sinks, seed, text, large), "", None, "", None,
            *draw_flash(runner, trace, layer, head, bq, bk, step, large), *draw_scaling(runner, trace, budget, large))


def build(ctx: TabContext) -> TabView:
    cfg, runner = ctx.runner.cfg, ctx.runner
    intro(
        "The course notes ask *what if?*: each question here is an experiment on the real weights. Replace the "
        "causal mask (sliding window, attention sinks, the notes' logarithmic pattern) and measure what breaks; "
        "compute attention tile by tile as FlashAttention does and check it equals the ordinary form; place this "
        "model on the scaling laws."
    )
    choice = gr.Radio([(label, key) for key, label in EXPERIMENTS.items()], value="masks", label="Experiment",
                      elem_id="lab-experiment")
    with gr.Group(visible=True) as masks_box:
        with gr.Row():
            kind = gr.Radio([(PATTERNS[p].split(":")[0].split(" (")[0], p) for p in CHOICES], value="sinks",
                            label="Pattern", elem_id="lab-pattern", scale=3)
            layers = gr.Textbox("", label="Layers (empty: all; e.g. 0-9, 20)", elem_id="lab-layers", scale=1)
        with gr.Row():
            window = gr.Slider(1, runner.max_tokens, value=8, step=1, label="Window W (the stride, for strided)",
                               elem_id="lab-window")
            sinks = gr.Slider(0, 64, value=4, step=1, label="Sink tokens s", elem_id="lab-sinks")
            seed = gr.Number(0, label="Seed (random)", precision=0, elem_id="lab-seed", minimum=0)
        text = gr.Textbox("", label="A longer text to measure on (empty: the analysed prompt)", lines=2,
                          elem_id="lab-text", max_length=20_000)
        pattern_note = gr.Markdown(elem_id="lab-pattern-note")
        pattern_plot = gr.Plot(elem_id="lab-mask", show_label=False)
        with gr.Row():
            run_btn = gr.Button("Run with this pattern", variant="primary", elem_id="lab-run")
            sweep_btn = gr.Button("Sweep the window (0 and 4 sinks)", elem_id="lab-sweep")
            stop = gr.Button("Stop", elem_id="lab-stop")
        result_note = gr.Markdown(elem_id="lab-result-note")
        result_plot = gr.Plot(elem_id="lab-result", show_label=False)
        sweep_note = gr.Markdown(elem_id="lab-sweep-note")
        sweep_plot = gr.Plot(elem_id="lab-sweep-plot", show_label=False)
    with gr.Group(visible="hidden") as flash_box:  # hidden, not absent: a prepared link sets its sliders
        with gr.Row():
            layer = gr.Slider(0, cfg.n_layers - 1, value=0, step=1, label="Layer", elem_id="lab-flash-layer")
            head = gr.Slider(0, cfg.n_heads - 1, value=0, step=1, label="Head", elem_id="lab-flash-head")
            bq = gr.Slider(1, BLOCK_MAX, value=8, step=1, label="Query block", elem_id="lab-bq")
            bk = gr.Slider(1, BLOCK_MAX, value=8, step=1, label="Key block", elem_id="lab-bk")
        step = gr.Slider(1, 64, value=1, step=1, label="Step (tile)", elem_id="lab-step")
        flash_note = gr.Markdown(elem_id="lab-flash-note")
        flash_plot = gr.Plot(elem_id="lab-flash", show_label=False)
    with gr.Group(visible="hidden") as scaling_box:
        budget = gr.Slider(*BUDGET_RANGE, value=21.0, step=0.1, label="Compute budget: log10 C (FLOPs)",
                           elem_id="lab-budget")
        scaling_note = gr.Markdown(elem_id="lab-scaling-note")
        kaplan_plot = gr.Plot(elem_id="lab-kaplan", show_label=False)
        data_plot = gr.Plot(elem_id="lab-kaplan-d", show_label=False)
        iso_plot = gr.Plot(elem_id="lab-isoflop", show_label=False)

    def show(which: str):
        return tuple(gr.update(visible=True if which == name else "hidden") for name in EXPERIMENTS)
    def redraw(trace: Trace | None, which: str, *values):
        """The experiment just shown drawn again: a figure drawn while hidden has no width to fit."""
        *flash_values, budget_value, large = values
        if which == "flash":
            return (*draw_flash(runner, trace, *flash_values, large), *(gr.update(),) * 4)
        if which == "scaling":
            return (gr.update(), gr.update(), gr.update(), *draw_scaling(runner, trace, budget_value, large))
        return (gr.update(),) * 7
    choice.change(show, [choice], [masks_box, flash_box, scaling_box], **READ_ONLY).then(
        None, None, None, js=RESIZE, **READ_ONLY).then(
        redraw, [ctx.trace, choice, layer, head, bq, bk, step, budget, ctx.large],
        [flash_note, flash_plot, step, scaling_note, kaplan_plot, data_plot, iso_plot], **LAYER_VIEW)
    pattern_inputs = [ctx.trace, kind, window, sinks, seed, text, ctx.large]
    for control in (kind, window, sinks, seed):
        control.change(bind(draw_pattern, runner), pattern_inputs, [pattern_note, pattern_plot], **READ_ONLY)
    text.submit(bind(draw_pattern, runner), pattern_inputs, [pattern_note, pattern_plot], **READ_ONLY)
    run_btn.click(bind(run_masks, runner), [ctx.trace, kind, window, sinks, seed, layers, text, ctx.large],
                  [result_note, result_plot], **MODEL_RUN)
    stopping = stop_state()
    sweep_btn.click(heavy_job(sweep, runner, "a window sweep"), [ctx.trace, text, layers, ctx.large, stopping],
                    [sweep_note, sweep_plot], **HEAVY)
    stop_button(stop, stopping, sweep_note)
    flash_inputs = [ctx.trace, layer, head, bq, bk, step, ctx.large]
    for control in (layer, head, bq, bk, step):
        control.input(bind(draw_flash, runner), flash_inputs, [flash_note, flash_plot, step], **LAYER_VIEW)
    budget.input(bind(draw_scaling, runner), [ctx.trace, budget, ctx.large],
                   [scaling_note, kaplan_plot, data_plot, iso_plot], **READ_ONLY)
    outputs = [pattern_note, pattern_plot, result_note, result_plot, sweep_note, sweep_plot, flash_note, flash_plot,
               step, scaling_note, kaplan_plot, data_plot, iso_plot]
    inputs = [ctx.trace, kind, window, sinks, seed, text, layer, head, bq, bk, step, budget, ctx.large]
    return TabView(render=Event(bind(render, runner), inputs, outputs, runs_model=True))
