"""Rotary position embedding on the formulas, in float64 numpy, independent of the model's code.

The rotation is written with cos and sin on interleaved pairs, not the model's complex
numbers, so the tests can check that the two agree at the model's base. The RoPE tab
re-evaluates these on the traced (pre-RoPE) q and k when its base slider moves; the model is
not run again. Vocabulary as in `model.transformer`: base b, frequencies theta_i = b^(-2i/d),
angles m * theta_i.
"""

from __future__ import annotations

import numpy as np


def rope_frequencies(d_head: int, base: float, scaling: tuple | None = None) -> np.ndarray:
    """theta_i = base^(-2i/d), radians per position, for pair i = 0 .. d/2 - 1, float64. With Llama 3's scaling
    (factor f, low and high frequency factors, original context L), pair by pair: wavelength 2 pi / theta over
    L / low: theta / f; under L / high: theta; between: (1 - s) theta / f + s theta, s = (L / wavelength - low) /
    (high - low)."""
    theta = base ** (-np.arange(0, d_head, 2, dtype=np.float64) / d_head)
    if scaling is None:
        return theta
    factor, low, high, context = scaling
    out = []
    for t in theta:
        wavelength = 2 * np.pi / t
        if wavelength > context / low:
            out.append(t / factor)
        elif wavelength < context / high:
            out.append(t)
        else:
            s = (context / wavelength - low) / (high - low)
            out.append((1 - s) * t / factor + s * t)
    return np.array(out)


def rotate_pairs(x: np.ndarray, positions: np.ndarray | int, base: float, scaling: tuple | None = None) -> np.ndarray:
    """Rotate each interleaved pair (x[2i], x[2i+1]) of x (..., d) by positions * theta_i."""
    x = np.asarray(x, dtype=np.float64)
    angles = np.asarray(positions, dtype=np.float64)[..., None] * rope_frequencies(x.shape[-1], base, scaling)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cos, sin = np.cos(angles), np.sin(angles)
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def decay_curve(d_head: int, base: float, distances: np.ndarray) -> np.ndarray:
    """Mean over pairs of cos(distance * theta_i): q.k at that distance for q = k = all ones, over d/2."""
    return np.cos(np.asarray(distances, dtype=np.float64)[:, None] * rope_frequencies(d_head, base)[None, :]).mean(-1)


def sinusoidal_encoding(positions: np.ndarray, d: int, base: float = 10000.0) -> np.ndarray:
    """The original Transformer's absolute encoding: PE[p, 2i] = sin(p w_i), PE[p, 2i+1] = cos(p w_i),
    w_i = base^(-2i/d)."""
    angles = np.asarray(positions, dtype=np.float64)[:, None] * rope_frequencies(d, base)[None, :]
    pe = np.empty((len(angles), d))
    pe[:, 0::2], pe[:, 1::2] = np.sin(angles), np.cos(angles)
    return pe
