"""The Decoding tab on the tiny model: what it draws is what `model.decoding` computed, settings out of range get a
message, and the KV cache it shows is the model's own keys and values."""

from __future__ import annotations

import numpy as np
import pytest

from model.arithmetic import kv_cache_bytes
from model.decoding import beam_search, greedy
from playground import tab_decoding
from playground.figures.decoding import Continuation, TreeNode, beam_tree_figure, continuations_html

from ..helpers import tiny_config

EARLY = next(iter(tab_decoding.EARLY_STOPPING))
OK = dict(new_tokens=6, width=3, length_penalty=1.0, early_stopping=EARLY, temperature=0.8, top_p=0.95, seed=0,
          large=False)


def test_compare_draws_the_beam_search_it_ran(tiny_runner, tiny_trace, tiny_net):
    summary, tree, table = tab_decoding.compare(tiny_runner, tiny_trace, **OK)
    assert summary.startswith("**Beam search**")
    prompt = tiny_trace.ids.tolist()
    result = beam_search(tiny_net, prompt, 3, 6, 1.0, False, [tiny_runner.eos_token_id])
    nodes = tab_decoding.tree_nodes(tiny_runner, result)
    best = [n for n in nodes if n.on_best]
    assert len({n.step for n in best}) == len(result.sequences[0])  # one marked node per token of the answer
    assert sum(n.finished for n in nodes) == sum(len(s.finished) for s in result.steps)
    shown = [t for t in tree.data if t.name == "the returned best"][0]
    assert len(shown.x) == len(best)
    plain, _ = greedy(tiny_net, prompt, 6, [tiny_runner.eos_token_id])
    assert table.count("<tr>") == 1 + 3 and "greedy" in table and "beam search, width 3" in table
    assert html_tokens(table, 0) == len(plain)


def test_a_second_visitor_asking_the_same_gets_the_same_without_running_the_model(tiny_runner, tiny_trace):
    """The comparison is kept (the runner's memo): the same prompt and settings give the same page at once, and
    any setting changed (here the seed, then the width) runs the model again."""
    first = tab_decoding.compare(tiny_runner, tiny_trace, **{**OK, "seed": 123})
    ran = tiny_runner.memo.computed
    again = tab_decoding.compare(tiny_runner, tiny_trace, **{**OK, "seed": 123})
    assert tiny_runner.memo.computed == ran
    assert again[0] == first[0] and again[2] == first[2] and again[1].to_json() == first[1].to_json()
    other_seed = tab_decoding.compare(tiny_runner, tiny_trace, **{**OK, "seed": 124})
    assert tiny_runner.memo.computed == ran + 1
    rows = lambda table: table.split("<tbody>")[1].split("</tr>")  # noqa: E731
    assert rows(other_seed[2])[:2] == rows(first[2])[:2] and "seed 124" in rows(other_seed[2])[2]  # greedy, beam
    tab_decoding.compare(tiny_runner, tiny_trace, **{**OK, "seed": 123, "width": 2})
    assert tiny_runner.memo.computed == ran + 2


def html_tokens(table: str, row: int) -> int:
    body = table.split("<tbody>")[1].split("</tr>")[row]
    return body.count('class="dtok"')


@pytest.mark.parametrize("change,message", [
    (dict(new_tokens=0), "New tokens"),
    (dict(new_tokens=10_000), "New tokens"),
    (dict(width=0), "Beam width"),
    (dict(width=2.5), "Beam width"),
    (dict(length_penalty=float("nan")), "Length penalty"),
    (dict(early_stopping="sometimes"), "Early stopping"),
    (dict(temperature=0), "Temperature"),
    (dict(top_p=1.5), "Top-p"),
    (dict(seed=-1), "Seed"),
    (dict(seed="x"), "Seed"),
])
def test_compare_bad_settings_get_a_message(tiny_runner, tiny_trace, change, message):
    summary, tree, table = tab_decoding.compare(tiny_runner, tiny_trace, **{**OK, **change})
    assert summary.startswith("⚠️") and message in summary and tree is None and table == ""


def test_every_handler_asks_for_a_prompt_first(tiny_runner):
    assert "Analyze" in tab_decoding.compare(tiny_runner, None, **OK)[0]
    assert "Analyze" in list(tab_decoding.speculate(tiny_runner, None, 6, 2, 1, 0, False))[-1][0]
    buckets = list(tab_decoding.dola_buckets(tiny_runner.cfg))
    assert "Analyze" in tab_decoding.contrast(tiny_runner, None, 6, buckets[0], 0.1, 1.2, 3, 0.5, False)[0]
    assert "Analyze" in tab_decoding.kv_cache(tiny_runner, None, 8, 0, False)[0]


def test_speculate_measures_every_draft_and_matches_greedy(tiny_runner, tiny_trace, tiny_net):
    from model.decoding import speculative

    steps = list(tab_decoding.speculate(tiny_runner, tiny_trace, 8, 3, 1, 0, False))
    note, rounds, plot = steps[-1]
    depths = sorted(set(tab_decoding.draft_depths(tiny_runner.cfg.n_layers)) | {1})
    assert len(steps) == 1 + len(depths)  # a first message, then one update per draft measured
    assert "the same tokens as greedy decoding" in note and "Done." in note
    prompt, eos = tiny_trace.ids.tolist(), [tiny_runner.eos_token_id]
    expected = {k: speculative(tiny_net, prompt, k, 3, 8, stop_ids=eos) for k in depths}  # greedy: deterministic
    assert list(plot.data[0].x) == depths
    np.testing.assert_allclose(plot.data[0].y, [100 * expected[k].acceptance for k in depths])  # what is shown
    shown = expected[1]
    assert rounds.count("<li>") == len(shown.rounds)
    assert f"{len(shown.rounds)} rounds, {100 * shown.acceptance:.0f}% of drafted tokens accepted" in note
    bad = list(tab_decoding.speculate(tiny_runner, tiny_trace, 8, 0, 1, 0, False))
    assert len(bad) == 1 and "Drafted tokens" in bad[0][0]
    bad = list(tab_decoding.speculate(tiny_runner, tiny_trace, 8, 2, tiny_runner.cfg.n_layers, 0, False))
    assert "Draft layers" in bad[0][0]


def transformers_dola_layers(final_layer: int, tied: bool, dola_layers: str) -> list[int]:
    """transformers' `_dola_decoding` (now the hub's transformers-community/dola), its candidate premature layers
    as written there: hidden_states index, 0 = the embedding."""
    if not tied:
        start_layer = 0
    elif final_layer > 2:
        start_layer = 2
    elif final_layer == 2:
        start_layer = 1
    else:
        start_layer = 0
    if dola_layers == "low":
        if start_layer == final_layer // 2:
            return [start_layer]
        return (list(range(start_layer, final_layer // 2, 2)) if final_layer <= 40
                else list(range(start_layer, 20, 2)))
    return (list(range(final_layer // 2, final_layer, 2)) if final_layer <= 40
            else list(range(final_layer - 20, final_layer, 2)))


@pytest.mark.parametrize("n_layers", [2, 3, 30, 48])
@pytest.mark.parametrize("tied", [True, False])
def test_dola_buckets_are_transformers(n_layers, tied):
    from model.contrast import dola_candidate_layers

    ours = dola_candidate_layers(n_layers, tied)
    for which in ("low", "high"):
        expected = transformers_dola_layers(n_layers, tied, which)
        assert ours.get(which, []) == expected  # a set transformers' rule leaves empty is left out
    cfg = tiny_config(n_layers=n_layers, tie_embeddings=tied)
    assert list(tab_decoding.dola_buckets(cfg).values()) == list(ours.values())


def test_dola_buckets_of_smollm2_as_the_tab_names_them():
    buckets = tab_decoding.dola_buckets(tiny_config(n_layers=30, tie_embeddings=True))
    assert list(buckets.values()) == [list(range(2, 15, 2)), list(range(15, 30, 2))]
    assert list(buckets) == ["early layers (2, 4, …, 14)", "late layers (15, 17, …, 29)"]


def test_contrast_rows(tiny_runner, tiny_trace):
    buckets = list(tab_decoding.dola_buckets(tiny_runner.cfg))
    note, table, plot = tab_decoding.contrast(tiny_runner, tiny_trace, 5, buckets[0], 0.1, 1.2, 3, 0.5, False)
    assert "**DoLa**" in note and table.count("<tr>") == 1 + 3 and len(plot.data[0].y) >= 1
    for args, message in (((5, "nowhere", 0.1, 1.2, 3, 0.5), "DoLa's layers"), ((5, buckets[0], 0, 1.2, 3, 0.5), "α"),
                          ((5, buckets[0], 0.1, 0.5, 3, 0.5), "repetition penalty"),
                          ((5, buckets[0], 0.1, 1.2, 99, 0.5), "k"), ((5, buckets[0], 0.1, 1.2, 3, 2), "α")):
        assert message in tab_decoding.contrast(tiny_runner, tiny_trace, *args, False)[0]


def test_kv_cache_shows_the_models_keys_and_values(tiny_runner, tiny_trace, tiny_net):
    import torch

    from model.transformer import KVCache

    cfg, layer, T = tiny_runner.cfg, 1, tiny_trace.n_tokens
    cache = KVCache.empty(cfg, 1, T, torch.float32, "cpu")  # what generation really stores for this prompt
    tiny_net(torch.tensor([tiny_trace.ids.tolist()]), kv_cache=cache)
    keys, values = cache.k[layer][0].numpy(), cache.v[layer][0].numpy()  # (G, T, Dh): keys after RoPE
    assert keys.nbytes + values.nbytes == kv_cache_bytes(cfg, T, 4) // cfg.n_layers
    note, contents, timing = tab_decoding.kv_cache(tiny_runner, tiny_trace, 8, layer, False)
    shown_k, shown_v = np.asarray(contents.data[0].z), np.asarray(contents.data[1].z)
    assert shown_k.shape == (T, cfg.n_kv_heads * cfg.d_head)
    np.testing.assert_allclose(shown_k, keys.transpose(1, 0, 2).reshape(T, -1), atol=1e-5)
    np.testing.assert_allclose(shown_v, values.transpose(1, 0, 2).reshape(T, -1), atol=1e-5)
    assert f"**{kv_cache_bytes(cfg, 1, 4):,} bytes per token**" in note
    assert len(timing.data) == 2 and len(timing.data[0].x) >= 1
    assert "Tokens to time" in tab_decoding.kv_cache(tiny_runner, tiny_trace, 10_000, 0, False)[0]
    assert "Layer" in tab_decoding.kv_cache(tiny_runner, tiny_trace, 8, cfg.n_layers, False)[0]
    dropped = tiny_runner.analyze("the cat sat on the mat")
    dropped.drop()
    assert "Analyze" in tab_decoding.kv_cache(tiny_runner, dropped, 8, 0, False)[0]


def test_tree_figure_and_table_escape_and_mark():
    nodes = [TreeNode(0, 0, -1, "<b>", -0.1, True, True), TreeNode(0, 1, -1, "x", -2.0, False, False),
             TreeNode(1, 0, 0, "EOS", -0.3, True, False, finished=True, normalised=-0.15)]
    fig = beam_tree_figure(nodes, 2, "t")
    names = [t.name for t in fig.data if t.name]
    assert names == ["dropped (no beam continues it)", "the returned best"]
    best = fig.data[-1]
    assert list(best.x) == [0, 1] and "&lt;b&gt;" in best.hovertext[0]
    table = continuations_html("<prompt>", [Continuation("greedy", ["<script>", " ok"], [-0.1, -2.0], 0)])
    assert "<script>" not in table and "&lt;script&gt;" in table and "&lt;prompt&gt;" in table
    assert "-1.050" in table  # the mean log-probability


def test_a_prompt_near_the_context_limit_gets_a_message(tiny_runner):
    trace = tiny_runner.analyze("the cat sat on the mat. " * 6)
    room = tiny_runner.cfg.max_seq_len - trace.n_tokens
    assert 0 < room < 48
    summary, tree, _ = tab_decoding.compare(tiny_runner, trace, **{**OK, "new_tokens": 48})
    assert "would pass the model's context of 64" in summary and tree is None
    note, *_ = list(tab_decoding.speculate(tiny_runner, trace, 48, 2, 1, 0, False))[-1]
    assert "context" in note
    summary, tree, _ = tab_decoding.compare(tiny_runner, trace, **{**OK, "new_tokens": max(1, room - 8)})
    assert tree is not None  # what fits still runs


def test_a_long_sweep_stops_at_its_time_limit(tiny_runner, tiny_trace, monkeypatch):
    monkeypatch.setattr(tab_decoding, "SWEEP_LIMIT_S", 0.0)
    steps = list(tab_decoding.speculate(tiny_runner, tiny_trace, 8, 3, 1, 0, False))
    note, _, plot = steps[-1]
    assert "Stopped after 1 of" in note and len(plot.data[0].x) == 1


def test_stop_ends_a_sweep_between_two_drafts_and_keeps_what_was_measured(tiny_runner, tiny_trace):
    from playground.ui import StopFlag, pressing

    stop = StopFlag()
    stop.press()  # pressed before the run: a new run starts afresh
    steps = tab_decoding.speculate(tiny_runner, tiny_trace, 6, 2, 1, 0, False, stop)
    assert not next(steps)[0].startswith("⏹") and not stop.pressed
    first = next(steps)  # the first draft measured
    assert "Measured 1 of" in first[0]
    assert pressing(stop, first[0]).endswith("⏹ Stopping after the step under way …") and stop.pressed
    rest = list(steps)
    assert len(rest) == 1 and "Stopped by you after 1 of 2 drafts" in rest[0][0]  # no draft started after Stop
    assert len(rest[0][2].data[0].x) == 1 and rest[0][1] == first[1]  # what was measured stays
