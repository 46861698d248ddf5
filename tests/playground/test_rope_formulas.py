"""RoPE on the formulas (float64 numpy) equals the model's own rotation, and behaves as the maths says."""

from __future__ import annotations

import numpy as np
import pytest

from playground.rope_formulas import decay_curve, rope_frequencies, rotate_pairs, sinusoidal_encoding


def test_formula_rotation_equals_the_model(tiny_runner, tiny_trace):
    cfg = tiny_runner.cfg
    positions = np.arange(tiny_trace.n_tokens)
    for layer in range(cfg.n_layers):
        t = tiny_runner.layer(tiny_trace, layer)
        for head in range(cfg.n_heads):
            kv = cfg.kv_head_of(head)
            np.testing.assert_allclose(rotate_pairs(t.q[:, head], positions, cfg.rope_base), t.rot_q[:, head],
                                       atol=2e-5, rtol=1e-4)
            np.testing.assert_allclose(rotate_pairs(t.k[:, kv], positions, cfg.rope_base), t.rot_k[:, kv], atol=2e-5,
                                       rtol=1e-4)


def test_formula_rotation_equals_the_real_model_at_its_base(runner, trace):
    cfg = runner.cfg
    positions = np.arange(trace.n_tokens)
    t = runner.layer(trace, cfg.n_layers - 1)
    np.testing.assert_allclose(rotate_pairs(t.q[:, 0], positions, cfg.rope_base), t.rot_q[:, 0], atol=2e-4, rtol=1e-4)


def test_frequencies():
    frequencies = rope_frequencies(64, 1e5)
    assert frequencies[0] == 1.0 and frequencies[-1] == pytest.approx(1e5 ** (-62 / 64))
    assert len(frequencies) == 32


def test_rotation_keeps_lengths_and_makes_scores_relative():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=64), rng.normal(size=64)
    assert np.linalg.norm(rotate_pairs(q, 17, 1e4)) == pytest.approx(np.linalg.norm(q))
    near = rotate_pairs(q, 10, 1e4) @ rotate_pairs(k, 3, 1e4)
    far = rotate_pairs(q, 1007, 1e4) @ rotate_pairs(k, 1000, 1e4)
    assert near == pytest.approx(far)


def test_decay_curve():
    d = np.array([0, 1, 10, 100, 1000])
    curve = decay_curve(64, 1e5, d)
    assert curve[0] == pytest.approx(1.0) and curve[1] < 1.0
    assert not np.allclose(curve, decay_curve(64, 1e4, d))


def test_sinusoidal_encoding():
    pe = sinusoidal_encoding(np.arange(3), 8)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(pe[1, 0], np.sin(1.0))
