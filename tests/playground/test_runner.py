"""The runner, the one seam to the model: it returns the model's own tensors; bad prompts get clear messages."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
import torch

from model.interventions import Ablation
from playground.batcher import MAX_BATCH_TOKENS, PromptRequest, Batcher, pack
from playground.lens_worker import BackgroundLens
from playground.runner import ModelBusyError, ModelRunner, PromptError, TraceDropped
from playground.batch_forward import trace_batch
from playground.turns import ModelGate
from playground.trace import HEAD_STAT_NAMES, KEPT_LAYERS, head_statistics

from ..conftest import TINY_PROMPT
from ..helpers import BAD_PROMPTS, TINY_MISSING_BYTE


def test_trace_equals_the_model_cache(tiny_runner, tiny_trace, tiny_net, tiny_enc):
    tokens = torch.tensor([tiny_trace.ids.tolist()])
    logits, cache = tiny_net.run_with_cache(tokens)
    assert tiny_trace.ids.tolist() == tiny_enc.encode(TINY_PROMPT) and tiny_trace.prompt == TINY_PROMPT
    np.testing.assert_allclose(tiny_trace.resid[0], cache["hook_embed"][0].numpy())
    for layer in range(tiny_net.cfg.n_layers):
        np.testing.assert_allclose(tiny_trace.resid[layer + 1], cache[f"blocks.{layer}.hook_resid_post"][0].numpy(),
                                   atol=1e-6)
    np.testing.assert_allclose(tiny_trace.next_logits, logits[0, -1].numpy(), atol=1e-5)
    log_probs = logits[0].log_softmax(-1)
    expected = [-float(log_probs[i - 1, t]) / np.log(2) for i, t in enumerate(tiny_trace.ids.tolist()) if i > 0]
    np.testing.assert_allclose(tiny_trace.surprisal[1:], expected, rtol=1e-4)
    assert np.isnan(tiny_trace.surprisal[0])
    assert b"".join(tiny_trace.token_bytes).decode() == TINY_PROMPT
    patterns = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][0] for l in range(tiny_net.cfg.n_layers)])
    np.testing.assert_allclose(tiny_trace.head_stats, head_statistics(patterns), atol=1e-6)


@pytest.mark.parametrize("which", ["tiny", "real"])
def test_layers_recomputed_from_the_residual_equal_the_forward(which, request):
    """q, k, v, RoPE and the pattern of any layer, recomputed when shown, equal the model's own hooks (1e-6)."""
    runner, trace = (request.getfixturevalue(f"{which}_runner" if which == "tiny" else "runner"),
                     request.getfixturevalue(f"{which}_trace" if which == "tiny" else "trace"))
    net = request.getfixturevalue("tiny_net") if which == "tiny" else request.getfixturevalue("real")[0]
    _, cache = net.run_with_cache(torch.tensor([trace.ids.tolist()]),
                                  names_filter=r"attn\.hook_(q|k|v|rot_q|rot_k|pattern)$")
    for layer in sorted({0, runner.cfg.n_layers // 2, runner.cfg.n_layers - 1}):
        tensors = runner.layer(trace, layer)
        for name in ("q", "k", "v", "rot_q", "rot_k", "pattern"):
            np.testing.assert_allclose(getattr(tensors, name), cache[f"blocks.{layer}.attn.hook_{name}"][0].numpy(),
                                       atol=1e-6, rtol=0, err_msg=f"layer {layer} {name}")
    assert len(trace.layers) <= KEPT_LAYERS  # only the last few shown are kept


@pytest.mark.parametrize("prompt,message", BAD_PROMPTS)
def test_bad_prompts_get_clear_messages(tiny_runner, prompt, message):
    with pytest.raises(PromptError, match=message):
        tiny_runner.analyze(prompt)


def test_unencodable_characters_are_replaced_with_a_note(tiny_runner):
    bad = chr(TINY_MISSING_BYTE)
    trace = tiny_runner.analyze(f"bell{bad} and {bad} here")
    assert "2 character(s)" in trace.notes[0] and "replaced by U+FFFD" in trace.notes[0]
    assert "\ufffd" in trace.prompt and bad not in trace.prompt


def test_special_token_text_is_plain_text_but_the_chat_template_is_real(tiny_runner, tiny_enc):
    plain = tiny_runner.analyze("<|im_start|>user")
    assert not plain.special.any()
    chat = tiny_runner.analyze("hello", chat=True)
    assert chat.chat and chat.special.sum() == 3  # <|im_start|> user, <|im_end|>, <|im_start|> assistant
    assert tiny_runner.decode(chat.ids.tolist()) == tiny_enc.render_chat([{"role": "user", "content": "hello"}])


def test_model_busy_is_a_clear_message(tiny_net, tiny_enc):
    gate = ModelGate()
    busy = ModelRunner(tiny_net, tiny_enc, wait_s=0.05, background_lens=False, gate=gate)
    with gate:
        with pytest.raises(ModelBusyError, match=r"busy with other requests \(waited 0.05 s\)"):
            busy.analyze("hello")
        with pytest.raises(ModelBusyError):
            busy.next_logits([1, 2, 3])
    assert busy.next_logits([1, 2, 3]).shape == (tiny_net.cfg.vocab_size,)  # free again


def test_next_logits_and_generation_steps_equal_a_full_forward(tiny_runner, tiny_trace, tiny_net):
    ids = tiny_trace.ids.tolist()
    np.testing.assert_allclose(tiny_runner.next_logits(ids), tiny_net(torch.tensor([ids]))[0, -1].numpy(), atol=1e-5)
    cache = tiny_runner.generation_cache(tiny_trace, extra=3)
    assert cache.length == tiny_trace.n_tokens and cache.max_len == tiny_trace.n_tokens + 3
    for token in (5, 77, 101):
        stepped = tiny_runner.step(token, cache)
        ids.append(token)
        np.testing.assert_allclose(stepped, tiny_net(torch.tensor([ids]))[0, -1].numpy(), atol=1e-5)


def test_hooked_runs_leave_the_shared_model_clean(tiny_runner, tiny_trace, tiny_net):
    ids = tiny_trace.ids.tolist()
    zeroed = tiny_runner.ablate(tiny_trace, Ablation(mlp=frozenset([1])))
    expected = tiny_net.run_with_hooks(torch.tensor([ids]), [("blocks.1.hook_mlp_out", lambda x, hook: 0 * x)])
    np.testing.assert_allclose(zeroed, expected[0, -1].numpy(), atol=1e-5)
    assert not np.allclose(zeroed, tiny_trace.next_logits, atol=1e-3)
    tiny_runner.layer_sweep(tiny_trace, "mean", 5, 9)
    tiny_runner.step(5, tiny_runner.generation_cache(tiny_trace, 1), attention=True)
    tiny_runner.block(tiny_trace, 1, 0)
    assert all(not point.fns for point in tiny_net.hook_points.values())


def test_lens_is_computed_once_per_trace(tiny_runner, tiny_trace, monkeypatch):
    labels, first = tiny_runner.lens(tiny_trace, False)
    assert labels == ["embed"] + [f"L{l}" for l in range(tiny_trace.n_layers)]
    import playground.lens_worker as lens_worker

    monkeypatch.setattr(lens_worker, "LogitLens", lambda *a, **k: pytest.fail("recomputed"))
    assert tiny_runner.lens(tiny_trace, False)[1] is first


def test_lens_rows_interleave_after_attention_and_after_each_layer(tiny_runner, tiny_trace, tiny_net):
    L = tiny_trace.n_layers
    labels, rows = tiny_runner.lens_rows(tiny_trace, with_mid=False)
    assert labels == ["embed", *[f"L{l}" for l in range(L)]] and rows.shape[0] == L + 1
    labels, rows = tiny_runner.lens_rows(tiny_trace, with_mid=True)
    assert labels[:4] == ["embed", "L0 attn", "L0", "L1 attn"] and len(labels) == rows.shape[0] == 2 * L + 1
    _, cache = tiny_net.run_with_cache(torch.tensor([tiny_trace.ids.tolist()]), names_filter="hook_resid_mid")
    np.testing.assert_allclose(rows[labels.index("L1 attn")], cache["blocks.1.hook_resid_mid"][0].numpy(), atol=1e-5)
    np.testing.assert_array_equal(rows[labels.index("L1")], tiny_trace.resid[2])


def test_export_round_trips_every_array(tiny_runner, tiny_trace, tiny_net, tmp_path):
    data = np.load(tiny_runner.export(tiny_trace, tmp_path))
    _, cache = tiny_net.run_with_cache(torch.tensor([tiny_trace.ids.tolist()]), names_filter="hook_pattern")
    patterns = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][0] for l in range(tiny_net.cfg.n_layers)])
    np.testing.assert_array_equal(data["ids"], tiny_trace.ids)
    np.testing.assert_allclose(data["pattern"], patterns.numpy(), atol=1e-6)
    np.testing.assert_array_equal(data["resid"], tiny_trace.resid)
    assert data["rot_q"].shape == (tiny_net.cfg.n_layers, tiny_trace.n_tokens, tiny_net.cfg.n_heads,
                                   tiny_net.cfg.d_head)
    assert str(data["prompt"]) == tiny_trace.prompt and not bool(data["chat"])
    assert [bytes.fromhex(h) for h in data["token_bytes"]] == tiny_trace.token_bytes
    assert list(data["head_stat_names"]) == list(HEAD_STAT_NAMES)


def test_token_text(tiny_runner, tiny_enc):
    ids = tiny_enc.encode(" the cat")
    assert [tiny_runner.token_bytes(i) for i in ids] == [b" the", b" cat"]
    assert tiny_runner.first_token(" cat sat") == ids[1]
    assert tiny_runner.first_token("") is None
    assert tiny_runner.first_token(chr(TINY_MISSING_BYTE)) is not None  # replaced, never an exception


# -- many visitors: batching, the memory budget, the background lens --------------------------


def _batcher(net, enc, max_tokens=MAX_BATCH_TOKENS):
    """A batcher on its own, as the runner builds it: a gate the test holds to make the model busy, and a run that
    records each batch's prompt lengths."""
    lock, batches = ModelGate(), []

    @contextlib.contextmanager
    def hold(wait_s, give_up=None, waiting=None):
        if not lock.acquire(wait_s, give_up=give_up, waiting=waiting):
            yield None
            return
        try:
            yield net
        finally:
            lock.release()

    def run(batch):
        batches.append([len(r.ids) for r in batch])
        return trace_batch(net, enc, batch)

    return Batcher(hold, run, net.cfg.n_layers, max_tokens), lock, batches


def _arrive(batcher, enc, prompts, results):
    """Submit the prompts from threads, one after another in this order; wait until all of them wait."""
    threads = []
    for p in prompts:
        request = PromptRequest(enc.encode(p), p, False, [])
        threads.append(threading.Thread(target=lambda r=request: results.setdefault(r.prompt, batcher.submit(r, 30))))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while batcher.waiting < len(threads) and time.monotonic() < deadline:
            time.sleep(0.005)
    assert batcher.waiting == len(prompts)
    return threads


def test_analyses_that_arrive_together_run_as_one_batch_equal_to_running_alone(tiny_net, tiny_enc):
    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    prompts = ["the cat", "the cat sat on the mat. the cat sat on the", "on the mat the cat sat"]
    alone = [runner.analyze(p) for p in prompts]
    batcher, lock, batches = _batcher(tiny_net, tiny_enc)
    together: dict[str, object] = {}
    with lock:  # the model is busy: the three queue up
        threads = _arrive(batcher, tiny_enc, prompts, together)
    for t in threads:
        t.join(timeout=30)
    assert len(batches) == 1 and sorted(batches[0]) == sorted(len(a.ids) for a in alone)  # one forward for all three
    for prompt, a in zip(prompts, alone):
        b = together[prompt]
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(b.resid, a.resid, atol=1e-5, rtol=1e-5)  # float32: batch shapes change sums
        np.testing.assert_allclose(b.next_logits, a.next_logits, atol=1e-5)
        np.testing.assert_allclose(b.surprisal, a.surprisal, atol=1e-4)
        np.testing.assert_allclose(b.head_stats, a.head_stats, atol=1e-5)
        assert np.abs(b.thumbnails.astype(int) - a.thumbnails).max() <= 1  # colour levels, rounding aside


def test_a_batch_holds_what_fits_and_the_rest_waits(tiny_net, tiny_enc):
    batcher, lock, batches = _batcher(tiny_net, tiny_enc, max_tokens=40)
    prompts = ["the cat sat on the mat " * 3, "the cat", "on the mat", "the mat sat on the cat " * 3]
    lengths = [len(tiny_enc.encode(p)) for p in prompts]
    with lock:
        threads = _arrive(batcher, tiny_enc, prompts, {})
    for t in threads:
        t.join(timeout=30)
    assert sorted(sum(batches, [])) == sorted(lengths)
    assert batches[0] == [len(r.ids) for r in pack([PromptRequest([0] * n, "", False, []) for n in lengths], 40)]
    assert batches[0][0] == lengths[0]  # the oldest goes first
    assert all(len(b) * max(b) <= 40 or len(b) == 1 for b in batches)


def test_pack_takes_the_oldest_and_whatever_else_fits():
    waiting = [PromptRequest([0] * n, "", False, []) for n in (20, 30, 5, 10, 25)]
    assert [len(r.ids) for r in pack(waiting, 64)] == [20, 30]  # 2 x 30 fits; a third would pad to 3 x 30
    assert [len(r.ids) for r in pack(waiting, 50)] == [20, 5]  # 2 x 30 does not fit; 3 x 20 would not either
    assert [len(r.ids) for r in pack(waiting[1:2], 8)] == [30]  # one too long for the budget still runs alone
    assert pack([], 64) == []


def test_the_memory_budget_drops_the_least_recently_used_trace(tiny_net, tiny_enc):
    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    first, second = runner.analyze("the cat sat"), runner.analyze("on the mat")
    runner.layer(first, 0)  # first is now the most recently used
    runner.budget.limit = first.nbytes + second.nbytes + 1000  # room for two
    third = runner.analyze("the mat sat")  # as long as second; a request while the budget is full is served...
    assert second.dropped and not first.dropped and not third.dropped  # ...by dropping the least recently used
    assert runner.budget.total() <= runner.budget.limit
    with pytest.raises(TraceDropped, match="Press Analyze"):
        runner.layer(second, 0)
    assert second.head_stats is not None and second.token_bytes  # tokens and statistics stay


def test_the_budget_forgets_traces_nobody_holds(tiny_net, tiny_enc):
    import gc

    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    runner.analyze("the cat sat")
    gc.collect()
    assert runner.budget.total() == 0


def test_the_lens_is_computed_in_the_background_when_the_model_is_idle(tiny_net, tiny_enc):
    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    trace = runner.analyze("the cat sat", lens=False)
    held, asked, someone_waits = [], threading.Semaphore(0), threading.Event()
    someone_waits.set()

    @contextlib.contextmanager
    def hold(wait_s):
        held.append(wait_s)
        yield tiny_net

    def busy() -> bool:
        asked.release()
        return someone_waits.is_set()

    background = BackgroundLens(hold, busy)
    try:
        background.add(trace)
        for _ in range(3):  # it asked three times whether anyone waits, was told yes each time...
            assert asked.acquire(timeout=10)
        assert held == [] and "post" not in trace.lens  # ...and so never took the model
        someone_waits.clear()
        deadline = time.monotonic() + 10
        while "post" not in trace.lens and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "post" in trace.lens and held
    finally:
        background.close()
    _, lens = runner.lens(trace, False)  # opening the tab now costs nothing
    assert lens is trace.lens["post"]


def test_a_long_prompt_keeps_little(runner, real):
    """At 512 tokens a trace holds the residual streams and the layer shown: about 49 MB, not the 440 MB the
    patterns, q, k and v of every layer would take."""
    enc = real[1]
    ids = enc.encode("The quick brown fox jumps over the lazy dog. " * 60)[: runner.max_tokens]
    trace = runner.analyze(runner.decode(ids), lens=False)
    assert trace.n_tokens == runner.max_tokens
    runner.layer(trace, 0)
    assert trace.nbytes < 55 * 2**20, trace.nbytes / 2**20


def test_an_id_the_tokenizer_does_not_use_has_a_label(tiny_runner, tiny_enc):
    from ..helpers import TINY_MISSING_BYTE

    assert tiny_runner.token_bytes(TINY_MISSING_BYTE) == f"<unused id {TINY_MISSING_BYTE}>".encode()
    token = tiny_enc.encode("cat")[0]
    assert tiny_runner.token_bytes(token) == tiny_enc.token_bytes(token)
