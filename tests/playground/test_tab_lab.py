"""The Lab tab: what its views show against transformers and the weights, its bad input, its sweep as a long job,
and that nothing it does reaches another visitor's model."""

from __future__ import annotations

import math
import re
import threading

import gradio as gr
import numpy as np
import pytest
import torch

from model.lab import MaskSpec, additive_mask, attention_mask
from model.scaling import compute_optimal
from playground import tab_lab, ui
from playground.errors import PromptError
from playground.ui import StopFlag

from .test_ui import _Request

TEXT = ("A sliding window keeps the last few tokens in view and forgets the rest. StreamingLLM noticed that the "
        "first tokens soak up attention, and that keeping four of them rescues the window.")


def _hf_log_probs(hf_model, ids, mask=None) -> torch.Tensor:
    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": additive_mask(mask)}
        return torch.log_softmax(hf_model(torch.tensor([ids]), **kwargs).logits[0].double(), -1)


def test_the_masks_view_shows_transformers_numbers(runner, hf_model):
    trace = runner.analyze(TEXT, lens=False)
    ids = trace.ids.tolist()
    shown = tab_lab.masks(runner, trace, "window", 6, 0)
    p0 = _hf_log_probs(hf_model, ids)
    p1 = _hf_log_probs(hf_model, ids, attention_mask(MaskSpec("window", window=6), len(ids)))
    target = torch.tensor(ids[1:])[:, None]
    s0, s1 = (-p[:-1].gather(1, target)[:, 0] for p in (p0, p1))
    unchanged, masked, kl, changed = shown.figure.data
    np.testing.assert_allclose(unchanged.y, s0.numpy() / math.log(2), atol=3e-3)  # bits, as the axis says
    np.testing.assert_allclose(unchanged.y, trace.surprisal[1:], atol=1e-4)  # the analysis's own surprisal
    np.testing.assert_allclose(masked.y, s1.numpy() / math.log(2), atol=3e-3)
    np.testing.assert_allclose(kl.y, (p0.exp() * (p0 - p1)).sum(-1).numpy(), atol=2e-3)
    flips = np.flatnonzero(p0.argmax(-1).numpy() != p1.argmax(-1).numpy())
    assert list(changed.x) == flips.tolist()
    loss = re.search(r"loss \*\*([\d.]+) → ([\d.]+) nats\*\*", shown.note)
    assert float(loss[1]) == pytest.approx(float(s0.mean()), abs=1e-3)
    assert float(loss[2]) == pytest.approx(float(s1.mean()), abs=1e-3)
    bits = re.search(r"\(([\d.]+) → ([\d.]+) bits", shown.note)
    assert float(bits[2]) == pytest.approx(float(s1.mean()) / math.log(2), abs=1e-3)
    assert f"**{len(flips)} of {len(ids)}** positions" in shown.note
    kl_hf = (p0.exp() * (p0 - p1)).sum(-1)
    mean_kl = float(re.search(r"mean KL\(unchanged ‖ masked\) ([\d.]+) nats", shown.note)[1])
    largest = float(re.search(r"largest ([\d.]+) after", shown.note)[1])
    assert mean_kl == pytest.approx(float(kl_hf.mean()), abs=2e-3) and largest == pytest.approx(float(kl_hf.max()),
                                                                                                    abs=2e-3)


def test_the_pattern_view_draws_the_mask_it_runs(runner, trace):
    shown = tab_lab.pattern(runner, trace, "sinks", 3, 2)
    z = np.array(shown.figure.data[0].z, dtype=float)
    mask = attention_mask(MaskSpec("sinks", window=3, sinks=2), trace.n_tokens).numpy()
    assert (np.nan_to_num(z, nan=-1) == np.where(np.tril(np.ones_like(mask)), mask, -1)).all()
    assert f"{100 * mask.sum() / (trace.n_tokens * (trace.n_tokens + 1) / 2):.1f}%" in shown.note


def test_the_flash_view_equals_the_model_and_shows_each_step(runner, trace):
    shown = tab_lab.flash(runner, trace, 4, 7, 3, 5, 6)
    assert shown.facts["error"] < 1e-5 and shown.facts["error_model"] < 1e-5
    _, _, _, _, partial = shown.figure.data
    tensors = runner.layer(trace, 4)
    g = runner.cfg.kv_head_of(7)
    scores = tensors.rot_q[:, 7].astype(np.float64) @ tensors.rot_k[:, g].T.astype(np.float64) / runner.cfg.attn_scale
    scores[np.triu_indices(trace.n_tokens, 1)] = -np.inf
    # step 6 with blocks of 3 and 5: query block 1 (rows 3-5) has two tiles; block 2 (rows 6-8) starts at step 4
    r0, last_row, _, last_key = map(int, re.search(r"Step 6: rows (\d+)–(\d+) against keys (\d+)–(\d+)",
                                                   shown.note).groups())
    r1, k1 = last_row + 1, last_key + 1
    seen = scores[r0:r1, :k1]
    weights = np.exp(seen - seen.max(1, keepdims=True))
    expected = (weights / weights.sum(1, keepdims=True)) @ tensors.v[:k1, g]
    np.testing.assert_allclose(np.array(partial.z, dtype=float), expected, atol=1e-5)
    for n in (trace.n_tokens, 8192, 131072):
        assert f"| {n:,}" in shown.note
    assert "Theorem 2" in shown.note and "B_c = ⌈M/4d⌉ = 384" in shown.note  # 192 KB / 2 bytes / (4 · 64)


def test_the_scaling_view_counts_the_weights_and_measures_the_loss(runner, hf_model):
    trace = runner.analyze(TEXT, lens=False)
    shown = tab_lab.scaling(runner, trace, 21.0)
    total = sum(p.numel() for p in hf_model.parameters())  # transformers counts a tied matrix once
    embedding = hf_model.model.embed_tokens.weight.numel()
    assert shown.facts["parameters"] == total == 134_515_008
    assert shown.facts["non_embedding"] == total - embedding
    ids = trace.ids.tolist()
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(hf_model(torch.tensor([ids])).logits[0, :-1], torch.tensor(ids[1:]))
    assert shown.facts["measured"] == pytest.approx(float(loss), abs=1e-3)
    assert f"**{total:,} parameters**" in shown.note and f"**{float(loss):.3f} nats**" in shown.note
    assert "2 T tokens" in shown.note and f"{6 * total * 2e12:.2e}" in shown.note
    power = shown.figure.data[0]
    assert power.y[0] == pytest.approx((8.8e13 / power.x[0]) ** 0.076)  # Kaplan et al. eq. (1.1)
    in_data = tab_lab.data(runner, trace)
    assert in_data.facts["kaplan_d"] == pytest.approx((5.4e13 / 2e12) ** 0.095)  # eq. (1.2) at 2T tokens
    assert in_data.figure.data[1].x[0] == 2e12 and "its size limits it more" in in_data.note


@pytest.mark.parametrize("call, setting", [
    (lambda r, t: tab_lab.draw_pattern(r, t, "window", 0, 0, 0, "", False), "window must be in 1..512, got 0"),
    (lambda r, t: tab_lab.draw_pattern(r, t, "window", 10**4, 0, 0, "", False), "window must be in 1..512"),
    (lambda r, t: tab_lab.warned(tab_lab.pattern, r, t, "window", t.n_tokens + 1), "is outside 1 …"),
    (lambda r, t: tab_lab.run_masks(r, t, "sinks", 3, 5, 0, "", "", False), "sinks 5"),
    (lambda r, t: tab_lab.run_masks(r, t, "window", 3, 0, 0, "0-99", "", False), "layers"),
    (lambda r, t: tab_lab.run_masks(r, t, "window", 3, 0, 0, "", "x", False), "at least two tokens"),
    (lambda r, t: tab_lab.draw_flash(r, t, 0, 0, 0, 4, 1, False), "query block"),
    (lambda r, t: tab_lab.draw_flash(r, t, 0, 0, 4, 10**4, 1, False), "key block"),
    (lambda r, t: tab_lab.warned(tab_lab.flash, r, t, 0, 0, 4, t.n_tokens + 1), "key block"),
    (lambda r, t: tab_lab.draw_scaling(r, t, 30, False), "budget"),
    (lambda r, t: tab_lab.draw_scaling(r, t, 16.9, False), "budget"),
])
def test_bad_input_gets_a_message_naming_the_setting(tiny_runner, tiny_trace, call, setting):
    note, *rest = call(tiny_runner, tiny_trace)
    assert note.startswith("⚠️") and setting in note and rest[0] is None


def test_a_window_past_a_short_prompt_is_cut_and_said(tiny_runner, tiny_trace):
    T = tiny_trace.n_tokens
    note, figure = tab_lab.run_masks(tiny_runner, tiny_trace, "sinks", T + 5, T + 2, 0, "", "", False)
    assert figure is not None and f"A window of {T + 5} is past the {T} tokens measured on: {T} used" in note
    assert f"sinks cut to {T}" in note and "changed at **0 of" in note  # the causal mask: nothing changes
    note, figure = tab_lab.draw_pattern(tiny_runner, tiny_trace, "window", T + 1, 0, 0, "", False)
    assert figure is not None and "keeps **100.0%**" in note


def test_blocks_past_a_short_prompt_are_cut_and_said(tiny_runner, tiny_trace):
    T = tiny_trace.n_tokens
    note, figure, _ = tab_lab.draw_flash(tiny_runner, tiny_trace, 0, 0, T + 3, 4, 1, False)
    assert figure is not None and f"Blocks of {T + 3} × 4 are past the prompt's {T} tokens: {T} × 4 used" in note
    assert f"tiles of {T} queries × 4 keys" in note


def test_too_many_tiles_are_refused_before_any_is_computed(tiny_runner, tiny_trace, monkeypatch):
    monkeypatch.setattr(tab_lab, "MAX_TILES", 10)
    note, figure, _ = tab_lab.draw_flash(tiny_runner, tiny_trace, 0, 0, 1, 1, 1, False)
    T = tiny_trace.n_tokens
    assert figure is None and f"makes {T * (T + 1) // 2} tiles" in note and "the limit is 10" in note
    assert tab_lab.draw_flash(tiny_runner, tiny_trace, 0, 0, T, T, 1, False)[1] is not None  # one tile


def test_before_an_analysis_each_part_says_so(tiny_runner):
    for note in (tab_lab.draw_pattern(tiny_runner, None, "log", 1, 0, 0, "", False)[0],
                 tab_lab.draw_flash(tiny_runner, None, 0, 0, 4, 4, 1, False)[0],
                 tab_lab.draw_scaling(tiny_runner, None, 21, False)[0],
                 next(tab_lab.sweep(tiny_runner, None, "", "", False))[0]):
        assert note == "Analyze a prompt first."


def test_the_flash_step_slider_follows_the_blocks(tiny_runner, tiny_trace):
    T = tiny_trace.n_tokens
    note, _, slider = tab_lab.draw_flash(tiny_runner, tiny_trace, 0, 0, 4, 4, 10**6, False)
    tiles = sum(1 for q0 in range(0, T, 4) for k0 in range(0, T, 4) if k0 <= min(q0 + 4, T) - 1)
    assert slider["maximum"] == tiles and slider["value"] == tiles and f"tile {tiles} of {tiles}" not in note
    assert f"**{tiles} tiles computed**" in note
    _, figure, slider = tab_lab.draw_flash(tiny_runner, tiny_trace, 0, 0, T, T, 1, False)  # one tile
    assert figure is not None and slider["value"] == 1 and not slider["interactive"]
    gr.Slider(1, slider["maximum"], value=slider["value"])  # what Gradio builds from the update: no error


def test_stop_keeps_the_sweep_measured_so_far(tiny_runner, tiny_trace):
    stop = StopFlag()
    shown = []
    for note, figure in tab_lab.sweep(tiny_runner, tiny_trace, "", "", False, stop):
        shown.append((note, figure))
        if figure is not None and len(shown) == 3:
            stop.press()
    note, figure = shown[-1]
    assert "stopped by you after 2 of" in note
    assert sum(len(trace.x) for trace in figure.data[:-1]) == 2  # the two points measured, still drawn
    assert len(tiny_runner.jobs) == 0


def test_a_sweep_is_one_long_job_per_visitor(tiny_runner, tiny_trace):
    job = ui.heavy_job(tab_lab.sweep, tiny_runner, "a window sweep")
    first = job(_Request("A"), tiny_trace, "", "", False, StopFlag())
    next(first)
    with pytest.raises(gr.Error, match="You already have a window sweep running"):
        next(job(_Request("A"), tiny_trace, "", "", False, StopFlag()))
    assert sum(1 for _ in job(_Request("B"), tiny_trace, "", "", False, StopFlag())) > 2  # another visitor's runs
    first.close()
    assert len(tiny_runner.jobs) == 0


def test_the_lab_never_changes_the_model_another_visitor_uses(runner):
    """A sweep's masked runs and another visitor's analyses, in parallel: every analysis gets the unchanged
    logits, including those answered between two of the sweep's runs."""
    other = "The capital of France is"
    expected = runner.next_logits(runner.tokenize(other, False)[0])
    sweep_trace = runner.analyze(TEXT * 2, lens=False)
    measured: list[tuple[float, np.ndarray]] = []
    sweeping = threading.Event()
    finished = threading.Event()

    def sweep() -> None:
        for _ in tab_lab.sweep(runner, sweep_trace, "", "", False):
            sweeping.set()
        finished.set()

    worker = threading.Thread(target=sweep)
    worker.start()
    assert sweeping.wait(60)
    while not finished.is_set():
        measured.append((finished.is_set(), runner.next_logits(runner.tokenize(other, False)[0])))
    worker.join()
    during = [logits for done, logits in measured if not done]
    assert len(during) >= 2  # answered while the sweep held masks on the model between its runs
    for logits in during:
        assert np.abs(logits - expected).max() < 1e-4


def test_the_slide_runs_each_experiment_and_names_a_bad_field(tiny_runner, tiny_trace):
    for experiment, words in (("masks", "loss"), ("flash", "tiles computed"), ("scaling", "Chinchilla")):
        shown = tab_lab.experiment(tiny_runner, tiny_trace, experiment, window=4, bq=4, bk=4)
        assert words in shown.note
    with pytest.raises(PromptError, match="step must be in 1.."):  # a flash field on a scaling slide
        tab_lab.experiment(tiny_runner, tiny_trace, "scaling", step=999)
    with pytest.raises(PromptError, match="experiment must be one of masks, flash, scaling"):
        tab_lab.experiment(tiny_runner, tiny_trace, "everything")


def test_the_what_if_deck_loads_whole_and_its_captions_hold(runner):
    """The built-in deck's slides open the Lab in their state, and what its captions say is what the model does on
    the deck's prompt: a window of 8 costs loss, four sinks bring most of it back, the tiles equal the model."""
    from playground import walk
    from playground.deck import built_in_decks

    deck = walk.load_deck(built_in_decks()["what-if"].read_text())
    assert deck.problems == [] and len(deck.slides) == 4 and all(s.notes for s in deck.slides)
    assert walk.checked_decks(runner, {"what-if": deck})["what-if"].problems == []
    trace = runner.analyze(deck.slides[0].prompt, lens=False)
    shown = []
    for slide in deck.slides:
        caption, figure, tab, state = walk.slide_view(runner, trace, slide, False)
        assert tab == "lab" and figure is not None and caption
        shown.append(tab_lab.experiment(runner, trace, **state))
    window, sinks, flash, scaling = shown
    assert window.facts["loss_masked"] > 2 * window.facts["loss"]  # "the loss jumps"
    gap = window.facts["loss_masked"] - window.facts["loss"]
    assert sinks.facts["loss_masked"] - sinks.facts["loss"] < 0.1 * gap  # "most of the loss comes back"
    assert flash.facts["error_model"] < 1e-5  # "the note checks it equals the model's own attention"
    n, d = scaling.facts["parameters"], scaling.facts["training_tokens"]
    n_opt, d_opt = compute_optimal(6 * n * d)
    assert d / n > 10 * d_opt / n_opt  # "trained far past compute-optimal"
