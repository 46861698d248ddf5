"""Intervene tab on the tiny model: ablation, the layer sweep, patching and attribution show the runs' true numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.interventions import Ablation
from playground import tab_intervene


class Click:
    def __init__(self, index):
        self.index = index


def test_clicks_toggle_heads(tiny_runner, tiny_trace):
    cell = tab_intervene.CELL + 2
    layer, head = 1, 3
    at = [2 + layer * cell + 5, 2 + head * cell + 5]
    selected, grid, text = tab_intervene.toggle_head(tiny_runner, tiny_trace, [], Click(at))
    assert selected == [(layer, head)] and "L1H3" in text and grid is not None
    selected, _, text = tab_intervene.toggle_head(tiny_runner, tiny_trace, selected, Click(at))
    assert selected == [] and "none" in text


def test_ablation_shows_the_ablated_run(tiny_runner, tiny_trace):
    note, figure = tab_intervene.ablate(tiny_runner, tiny_trace, [], [], [], "zero", "", "", False)
    assert "Nothing to ablate" in note and figure is None
    note, figure = tab_intervene.ablate(tiny_runner, tiny_trace, [(1, 2)], [], [0], "zero", "", "", False)
    after = tiny_runner.ablate(tiny_trace, Ablation(heads=frozenset({(1, 2)}), mlp=frozenset({0})))
    p_after = torch.from_numpy(after).softmax(-1).numpy()
    shown = np.array(figure.data[1].x, dtype=float)
    np.testing.assert_allclose(np.sort(shown)[::-1][:1], np.sort(p_after)[::-1][:1], atol=1e-6)
    assert "1 head(s)" in note and "MLP of layer(s) [0]" in note
    every = [(l, h) for l in range(tiny_runner.cfg.n_layers) for h in range(tiny_runner.cfg.n_heads)]
    note, figure = tab_intervene.ablate(tiny_runner, tiny_trace, every, [], [], "mean over the prompt's positions", "",
                                        "",
                                        False)
    assert "every head of the model" in note and "mean over the prompt's positions" in note and figure is not None


def test_the_layer_sweep_equals_ablating_by_hand(tiny_runner, tiny_trace, tiny_net):
    a, b = 5, 9
    result = tiny_runner.layer_sweep(tiny_trace, "zero", a, b)
    ids = torch.tensor([tiny_trace.ids.tolist()])
    for layer, part in ((0, "mlp"), (1, "attn")):
        logits = tiny_net.run_with_hooks(ids, [(f"blocks.{layer}.hook_{part}_out", lambda x,
                                                hook: torch.zeros_like(x))])[0]
        loss = F.cross_entropy(logits[:-1], ids[0, 1:])
        assert float(getattr(result, f"loss_{part}")[layer]) == pytest.approx(float(loss), abs=1e-4)
        difference = float(logits[-1, a] - logits[-1, b])
        assert float(getattr(result, f"diff_{part}")[layer]) == pytest.approx(difference, abs=1e-4)
    plain = tiny_net(ids)[0]
    assert result.loss == pytest.approx(float(F.cross_entropy(plain[:-1], ids[0, 1:])), abs=1e-4)
    assert result.diff == pytest.approx(float(plain[-1, a] - plain[-1, b]), abs=1e-4)
    mean = tiny_runner.layer_sweep(tiny_trace, "mean", a, b)  # mean ablation: each position gets the mean
    logits = tiny_net.run_with_hooks(ids, [("blocks.0.hook_mlp_out",
                                            lambda x, hook: x.mean(1, keepdim=True).expand_as(x).clone())])[0]
    assert float(mean.loss_mlp[0]) == pytest.approx(float(F.cross_entropy(logits[:-1], ids[0, 1:])), abs=1e-4)
    assert float(mean.diff_mlp[0]) == pytest.approx(float(logits[-1, a] - logits[-1, b]), abs=1e-4)
    note, figure = tab_intervene.sweep_layers(tiny_runner, tiny_trace, "zero", "", "", False)
    assert "Without ablation" in note and len(figure.data) == 4


def test_attribution_sums_to_the_logit_difference(tiny_runner, tiny_trace):
    note, bars, heads = tab_intervene.attribute(tiny_runner, tiny_trace, "", "", False)
    parts = np.array(bars.data[0].y, dtype=float)
    logits = tiny_trace.next_logits
    top = np.argsort(-logits)[:2]
    assert parts.sum() == pytest.approx(float(logits[top[0]] - logits[top[1]]), abs=1e-4)
    assert np.array(heads.data[0].z).shape == (tiny_runner.cfg.n_layers, tiny_runner.cfg.n_heads)


def test_patching_streams_each_layer(tiny_runner):
    steps = list(tab_intervene.patch(tiny_runner, "the cat sat on the", "the mat sat on the", " cat", " mat", "resid",
                                     False))
    assert "about" in steps[0][0]  # the estimate comes first
    final_note, final = steps[-1]
    assert "done" in final_note
    values = np.array(final.data[0].z, dtype=float)
    assert values.shape == (tiny_runner.cfg.n_layers, 6) and np.isfinite(values).all()  # layers x the 6 positions
    assert len(steps) == 1 + tiny_runner.cfg.n_layers
    assert np.isnan(np.array(steps[1][1].data[0].z, dtype=float)[1:]).all()  # rows not yet run are blank


@pytest.mark.parametrize("clean,corrupted,a,b,message", [
    ("the cat sat", "the cat sat on the mat", " cat", " mat", "the clean prompt has 4 tokens, the corrupted one 7"),
    ("the cat sat", "the mat sat", "", " mat", "two different tokens"),
    ("the cat sat", "the mat sat", " cat", " cat", "two different tokens"),
    ("", "the mat sat", " cat", " mat", "Type a prompt"),
])
def test_patching_bad_input_gets_a_message(tiny_runner, clean, corrupted, a, b, message):
    (note, figure), = list(tab_intervene.patch(tiny_runner, clean, corrupted, a, b, "resid", False))
    assert message in note and figure is None


def test_sweeps_beyond_the_limit_are_refused_with_the_estimate(tiny_runner, monkeypatch):
    monkeypatch.setattr(tab_intervene, "MAX_SWEEP_S", 0)
    (note, figure), = list(tab_intervene.patch(tiny_runner, "the cat sat", "the mat sat", " cat", " mat", "resid",
                                               False))
    assert "would take about" in note and "limit is 0 s" in note and figure is None


def test_token_pairs(tiny_runner, tiny_trace):
    a, b, label = tab_intervene.token_pair(tiny_runner, tiny_trace.next_logits, " cat", "")
    assert a == tiny_runner.first_token(" cat") and b != a and "`·cat`" in label
    with pytest.raises(ValueError, match="different"):
        tab_intervene.token_pair(tiny_runner, tiny_trace.next_logits, " cat", " cat sat")


def test_stop_ends_patching_between_two_layers(tiny_runner):
    from playground.ui import StopFlag

    stop = StopFlag()
    steps = tab_intervene.patch(tiny_runner, "the cat sat on the", "the mat sat on the", " cat", " mat", "resid",
                                False, stop)
    assert "Running" in next(steps)[0]
    note, figure = next(steps)
    assert "layer 1 of" in note
    stop.press()
    rest = list(steps)
    assert len(rest) == 1 and "stopped by you after layer 1 of 2" in rest[0][0]
    rows = np.array(rest[0][1].data[0].z, dtype=float)
    assert np.isfinite(rows[0]).all() and np.isnan(rows[1]).all()  # the layer done stays; the next never ran
