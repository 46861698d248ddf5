"""One model run per prompt, kept as a `Trace` that every tab reads.

The runner fills a trace once per Analyze; it lives in the visitor's `gr.State`, and moving
a slider reads it and never re-runs the model. Also here: the pure functions that summarise
a trace's attention (head statistics, the four stages of one head).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.lens import LensResult


@dataclass(frozen=True)
class LayerTensors:
    """One layer's attention tensors for a trace (T tokens, H query heads, G key/value heads)."""

    q: np.ndarray  # (T, H, Dh) before RoPE
    k: np.ndarray  # (T, G, Dh) before RoPE
    v: np.ndarray  # (T, G, Dh)
    rot_q: np.ndarray  # (T, H, Dh) after RoPE
    rot_k: np.ndarray  # (T, G, Dh) after RoPE
    pattern: np.ndarray  # (H, T, T) attention weights


@dataclass
class Trace:
    """Everything the tabs show about one prompt, as numpy arrays (T tokens, L layers, H heads)."""

    prompt: str  # the text encoded (unencodable characters already replaced)
    chat: bool  # the prompt was wrapped in the model's chat template
    ids: np.ndarray  # (T,) token ids
    token_bytes: list[bytes]  # the bytes each token stands for
    special: np.ndarray  # (T,) bool: control tokens such as <|im_start|>
    surprisal: np.ndarray  # (T,) -log2 p(token | prefix) in bits; NaN at position 0
    next_logits: np.ndarray  # (V,) logits after the last position
    q: np.ndarray  # (L, T, H, Dh) before RoPE
    k: np.ndarray  # (L, T, G, Dh) before RoPE
    v: np.ndarray  # (L, T, G, Dh)
    rot_q: np.ndarray  # (L, T, H, Dh) after RoPE
    rot_k: np.ndarray  # (L, T, G, Dh) after RoPE
    pattern: np.ndarray  # (L, H, T, T) attention weights, float32
    head_stats: np.ndarray  # (L, H, 4): see HEAD_STAT_NAMES
    resid: np.ndarray  # (L + 1, T, D): after the embedding, then after each layer (resid_post)
    resid_mid: np.ndarray  # (L, T, D): inside each layer, after attention and before the MLP
    notes: list[str] = field(default_factory=list)  # what was changed about the prompt, for the user
    lens: dict[str, LensResult] = field(default_factory=dict)  # logit-lens results, computed on first view

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def n_layers(self) -> int:
        return self.pattern.shape[0]

    def layer(self, layer: int) -> LayerTensors:
        return LayerTensors(self.q[layer], self.k[layer], self.v[layer], self.rot_q[layer], self.rot_k[layer],
                            self.pattern[layer])

    def lens_rows(self, with_mid: bool) -> tuple[list[str], np.ndarray]:
        """Row labels and residual streams (R, T, D) for the logit lens, bottom to top:
        the embedding, then each layer (after its attention block too, with_mid)."""
        L = self.n_layers
        if not with_mid:
            return ["embed"] + [f"L{l}" for l in range(L)], self.resid
        labels = ["embed"] + [name for l in range(L) for name in (f"L{l} attn", f"L{l}")]
        interleaved = np.stack([self.resid_mid, self.resid[1:]], axis=1).reshape(2 * L, *self.resid.shape[1:])
        return labels, np.concatenate([self.resid[:1], interleaved])

    def export(self, folder: str | Path | None = None) -> Path:
        """Every array of the trace in an .npz file (`numpy.load` reads it), for notebooks."""
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if isinstance(getattr(self, f.name),
                                                                                                np.ndarray)}
        arrays.update(prompt=np.array(self.prompt), chat=np.array(self.chat),
                      token_bytes=np.array([b.hex() for b in self.token_bytes]),
                      head_stat_names=np.array(HEAD_STAT_NAMES))
        path = Path(folder or tempfile.mkdtemp(prefix="trace-")) / "trace.npz"
        np.savez(path, **arrays)
        return path


HEAD_STAT_NAMES = ("first token", "previous token", "self", "entropy (bits)")  # as shown
HEAD_STAT_KEYS = ("first_token", "previous_token", "self", "entropy_bits")  # as the API names them


def head_statistics(pattern: np.ndarray) -> np.ndarray:
    """(L, H, 4) per-head means over query positions of attention to the first token, the
    previous token and itself, and the entropy of each row in bits. Query 0 is left out of
    the first two (it can only attend to itself); NaN when there is no such query."""
    L, H, T, _ = pattern.shape
    stats = np.full((L, H, 4), np.nan, dtype=np.float32)
    rows = np.arange(T)
    if T > 1:
        stats[..., 0] = pattern[:, :, 1:, 0].mean(-1)
        stats[..., 1] = pattern[:, :, rows[1:], rows[1:] - 1].mean(-1)
    stats[..., 2] = pattern[:, :, rows, rows].mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(pattern > 0, pattern * np.log2(pattern), 0.0)
    stats[..., 3] = -plogp.sum(-1).mean(-1)
    return stats


def attention_stages(q: np.ndarray, k: np.ndarray) -> dict[str, np.ndarray]:
    """The four steps of one head from its rotated q (T, Dh) and k (T, Dh): q.k, scaled, masked, softmax."""
    q, k = q.astype(np.float64), k.astype(np.float64)
    raw = q @ k.T  # (T, T)
    scaled = raw / np.sqrt(q.shape[-1])
    causal = np.tril(np.ones_like(raw, dtype=bool))
    masked = np.where(causal, scaled, -np.inf)
    exp = np.exp(masked - masked.max(-1, keepdims=True))
    return {"scores": raw, "scaled": scaled, "masked": masked, "softmax": exp / exp.sum(-1, keepdims=True)}
