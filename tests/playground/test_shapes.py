"""Every tab holds for any shape: a second tiny model unlike SmolLM2 in every way a tab could assume (3 layers, MQA,
a head size that is not d_model / n_heads, untied, q/k/v biases, q/k norm, a sliding window, a no-RoPE layer,
Llama 3's RoPE scaling) renders every tab and the tour, and what they show is still the model's."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from model.transformer import apply_rope, rope_angles, rope_frequencies, rope_rotations
from playground import tab_attention, tab_routes, tour
from playground.registry import TABS
from playground.rope_formulas import rope_frequencies as formula_frequencies
from playground.runner import ModelRunner
from playground.trace import attention_stages
from playground.ui import TabContext

from ..helpers import other_config, random_model

PROMPT = "the cat sat on the mat. the cat sat on the mat and the dog"


@pytest.fixture(scope="module")
def other(tiny_enc):
    runner = ModelRunner(random_model(other_config(), seed=3), tiny_enc, background_lens=False)
    return runner, runner.analyze(PROMPT, lens=False)


def _texts(values) -> str:
    return " ".join(v for v in values if isinstance(v, str))


@pytest.mark.parametrize("spec", TABS, ids=lambda t: t.id)
def test_every_tab_renders_on_another_shape(other, spec):
    runner, trace = other
    with gr.Blocks():
        state, large, active = gr.State(None), gr.Checkbox(False), gr.State(spec.id)
        view = spec.module.build(TabContext(runner=runner, trace=state, large=large, active=active))
    values = [spec.id if c is active else c.value for c in view.render.inputs[1:]]
    shown = view.render.fn(trace, *values)
    assert "⚠️" not in _texts(shown), (spec.id, _texts(shown)[:300])
    assert any(isinstance(v, (go.Figure, pd.DataFrame, np.ndarray)) or (isinstance(v, str) and v.strip())
               for v in shown), spec.id


def test_the_tour_walks_another_shape(other):
    runner, trace = other
    for step in range(1, 11):
        title, caption, figure, tab, values = tour.tour_step(runner, trace, step, False)
        assert figure is not None and "⚠️" not in caption, (step, caption)
    assert "4 query heads share each key/value head" in tour.tour_step(runner, trace, 4, False)[1]


def test_the_last_layer_and_head_and_the_window_are_the_models(other):
    runner, trace = other
    cfg = runner.cfg
    figure, note = tab_routes.why_view(runner, trace, cfg.n_layers - 1, cfg.n_heads - 1, trace.n_tokens - 1,
                                       trace.n_tokens - 3, False)
    assert figure is not None and "bias" in figure.data[0].x, note
    tensors = runner.layer(trace, 0)
    rotations = rope_rotations(rope_angles(torch.arange(trace.n_tokens), cfg.d_head, cfg.rope_base, cfg.rope_scaling))
    for name in ("q", "k"):  # the q and k the views show before RoPE are what RoPE turns (after Qwen3's norms)
        turned = apply_rope(torch.from_numpy(getattr(tensors, name))[None], rotations)[0].numpy()
        np.testing.assert_allclose(turned, getattr(tensors, f"rot_{name}"), atol=1e-5)
    stages = attention_stages(tensors.rot_q[:, 3], tensors.rot_k[:, 0], cfg.sliding_window)
    np.testing.assert_allclose(stages["softmax"], tensors.pattern[3], atol=1e-5)  # the window, as the model has it
    heatmap, stage_figure = tab_attention.render_head(runner, trace, 0, 3, False)[:2]
    assert "keys 6+ back" in stage_figure.layout.annotations[2].text  # the mask stage names the window
    softmax = np.array(stage_figure.data[3].z, dtype=float)  # ... and its cells out of the window draw as masked
    i, j = np.indices(softmax.shape)
    np.testing.assert_array_equal(np.isnan(softmax), (j > i) | (j <= i - cfg.sliding_window))
    z = np.array(heatmap.data[0].z, dtype=float)
    assert np.isnan(z[trace.n_tokens - 1, 0]) and not np.isnan(z[trace.n_tokens - 1, trace.n_tokens - 1])


def test_the_rope_formulas_scale_as_the_model_does():
    scaling = (8.0, 1.0, 4.0, 8192)
    for d_head, base in ((64, 500000.0), (128, 500000.0), (12, 500000.0)):
        np.testing.assert_allclose(formula_frequencies(d_head, base, scaling),
                                   rope_frequencies(d_head, base, scaling).double().numpy(), rtol=1e-6)
    assert not np.allclose(formula_frequencies(64, 500000.0, scaling), formula_frequencies(64, 500000.0))
    torch.testing.assert_close(rope_frequencies(64, 1e5), rope_frequencies(64, 1e5, None))


def test_every_tab_renders_on_a_bfloat16_model(tiny_enc):
    """--dtype bfloat16: the weights in bfloat16, the trace and every view in float32 (cast on the way in and out)."""
    net = random_model(other_config(), seed=5).to(torch.bfloat16)
    runner = ModelRunner(net, tiny_enc, background_lens=False)
    trace = runner.analyze(PROMPT, lens=False)
    assert trace.resid.dtype == np.float32 and runner.layer(trace, 2).pattern.dtype == np.float32
    for spec in TABS:
        with gr.Blocks():
            state, large, active = gr.State(None), gr.Checkbox(False), gr.State(spec.id)
            view = spec.module.build(TabContext(runner=runner, trace=state, large=large, active=active))
        shown = view.render.fn(trace, *[spec.id if c is active else c.value for c in view.render.inputs[1:]])
        assert "⚠️" not in _texts(shown), (spec.id, _texts(shown)[:300])
    reference = random_model(other_config(), seed=5)  # the same weights in float32: nearly the same logits
    ids = torch.tensor([trace.ids.tolist()])
    assert np.corrcoef(trace.next_logits, reference(ids)[0, -1].numpy())[0, 1] > 0.99
