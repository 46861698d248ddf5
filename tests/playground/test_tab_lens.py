"""Logit-lens tab on the tiny model's trace: the grid holds the lens, the watch holds direct computation."""

from __future__ import annotations

import numpy as np
import torch

from model.lens import lens_logits
from playground import tab_lens
from playground.figures.lens import STATISTICS, LensStat


def test_every_statistic_renders(tiny_runner, tiny_trace):
    for stat in STATISTICS:
        grid, watch, note = tab_lens.render(tiny_runner, tiny_trace, stat.value, False, tiny_trace.n_tokens - 1,
                                            " the, cat", False)
        assert np.array(grid.data[0].z).shape == (tiny_trace.n_layers + 1, tiny_trace.n_tokens)
        assert STATISTICS[stat].label in grid.layout.title.text


def test_grid_and_watch_show_the_lens(tiny_runner, tiny_trace, tiny_net):
    _, lens = tiny_runner.lens(tiny_trace, False)
    position = 3
    grid, watch, _ = tab_lens.render(tiny_runner, tiny_trace, LensStat.TOP_PROB, False, position, " mat", False)
    np.testing.assert_allclose(np.array(grid.data[0].z, dtype=float), lens.top_probs[..., 0].numpy(), atol=1e-6)
    names = [d.name for d in watch.data]
    assert any(n.startswith("final prediction") for n in names) and any(n.startswith("actual next") for n in names)
    assert "' mat'" in names
    p_rows = lens_logits(tiny_net, torch.from_numpy(tiny_trace.resid[:, position])).softmax(-1)
    final_top = int(p_rows[-1].argmax())
    np.testing.assert_allclose(np.array(watch.data[0].y, dtype=float), p_rows[:, final_top].numpy(), atol=1e-6)


def test_after_attention_rows(tiny_runner, tiny_trace):
    grid, _, note = tab_lens.render(tiny_runner, tiny_trace, LensStat.KL, True, 0, "", False)
    assert np.array(grid.data[0].z).shape == (2 * tiny_trace.n_layers + 1, tiny_trace.n_tokens)
    assert "after each attention block" in note


def test_after_analyze_moves_the_watch_to_the_end(tiny_runner, tiny_trace):
    last = tiny_trace.n_tokens - 1
    slider, grid, watch, note = tab_lens.after_analyze(tiny_runner, tiny_trace, "top_prob", False, 0, "", False)
    assert slider["value"] == last and grid is not None and f"position {last}" in watch.layout.title.text
    assert tab_lens.redraw_if_shown(tiny_runner, tiny_trace, "top_prob", False, 0, "", True,
                                    "rope")[0] == {"__type__": "update"}
