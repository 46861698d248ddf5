"""What-ifs on the real weights: attention masks other than the causal one, and attention computed tile by tile.

Masks are applied as a TransformerLens user would: a hook on `blocks.L.attn.hook_attn_scores` (the scores after the
model's own causal mask, before the softmax) writes -inf where the new pattern hides a key. Every pattern here is
a subset of the causal one and keeps the diagonal, so the hook can only take keys away and no row is ever empty.

    mask = attention_mask(MaskSpec("sinks", window=16, sinks=4), T)    # (T, T) bool, True: the query sees the key
    masked = net.run_with_hooks(tokens, mask_hooks(mask, range(net.cfg.n_layers)))

`flash_attention` is FlashAttention's forward (Dao et al. 2022, Algorithm 1, with FlashAttention-2's loop order) for
one head, keeping every step for the Lab to draw; `io_accesses` counts what it and the standard algorithm read and
write in GPU memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .transformer import Transformer

PATTERNS = {
    "causal": "every earlier key (the model as trained)",
    "window": "sliding window: the last W keys, itself included",
    "sinks": "attention sinks + window (StreamingLLM): the first s tokens and the last W",
    "log": "logarithmic: itself and the keys 1, 2, 4, 8, … back",
    "strided": "strided (Child et al. 2019): the last W keys and every W-th one before",
    "random": "random, as dense as the logarithmic: itself and as many earlier keys, drawn at random",
}
LN2 = math.log(2)


class MaskError(ValueError):
    """A mask setting out of range; the message names it."""


@dataclass(frozen=True)
class MaskSpec:
    kind: str = "window"  # one of PATTERNS
    window: int = 16  # W for window, sinks and strided (the stride)
    sinks: int = 4  # s for sinks
    seed: int = 0  # for random

    def checked(self, T: int) -> MaskSpec:
        """This spec, or MaskError naming the setting that cannot apply to T tokens."""
        if self.kind not in PATTERNS:
            raise MaskError(f"pattern must be one of {', '.join(PATTERNS)}, got {self.kind!r}")
        if self.kind in ("window", "sinks", "strided"):
            what = "stride" if self.kind == "strided" else "window"
            if not 1 <= self.window <= T:
                raise MaskError(f"{what} {self.window} is outside 1 … {T} (the prompt's {T} tokens): a {what} of 0 "
                                f"hides every key, and one past the prompt is the causal mask")
        if self.kind == "sinks" and not 0 <= self.sinks <= self.window:
            raise MaskError(f"sinks {self.sinks} is outside 0 … {self.window} (the window): the sinks are a few first "
                            f"tokens kept beside a longer window")
        return self

    @property
    def label(self) -> str:
        return {"causal": "causal", "window": f"window {self.window}", "sinks": f"{self.sinks} sinks + window "
                f"{self.window}", "log": "logarithmic", "strided": f"strided {self.window}",
                "random": f"random (seed {self.seed})"}[self.kind]


def log_offsets(T: int) -> list[int]:
    """0 and the powers of two below T: how far back the logarithmic pattern looks."""
    return [0] + [1 << k for k in range(max(T - 1, 1).bit_length()) if 1 << k < T]


def attention_mask(spec: MaskSpec, T: int) -> Tensor:
    """The pattern for T tokens, (T, T) bool: True where query i (row) sees key j (column)."""
    spec.checked(T)
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    back = i - j  # how far back the key is
    causal = back >= 0
    if spec.kind == "causal":
        return causal
    if spec.kind == "window":
        return causal & (back < spec.window)
    if spec.kind == "sinks":
        return causal & ((back < spec.window) | (j < spec.sinks))
    if spec.kind == "strided":
        return causal & ((back < spec.window) | (back % spec.window == 0))
    log = torch.zeros(T, T, dtype=torch.bool)
    for offset in log_offsets(T):
        log |= back == offset
    if spec.kind == "log":
        return log
    generator = torch.Generator().manual_seed(int(spec.seed))  # random: each row as many keys as log's
    mask = torch.eye(T, dtype=torch.bool)
    for row in range(1, T):
        picked = torch.randperm(row, generator=generator)[:int(log[row].sum()) - 1]
        mask[row, picked] = True
    return mask


def additive_mask(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """A bool pattern (T, T) as the additive 4-D mask transformers takes: (1, 1, T, T), 0 where seen, the dtype's
    most negative number where hidden."""
    return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)[None, None]


def mask_hooks(mask: Tensor, layers: Iterable[int]) -> list[tuple[str, object]]:
    """Hooks on each chosen layer's `attn.hook_attn_scores` hiding the keys the pattern (T, T) hides."""
    hidden = ~mask

    def hide(scores: Tensor, hook) -> Tensor:  # (B, H, T, S)
        return scores.masked_fill(hidden, float("-inf"))
    return [(f"blocks.{layer}.attn.hook_attn_scores", hide) for layer in layers]


@dataclass
class MaskResult:
    """One pattern against the unchanged model on T tokens."""

    spec: MaskSpec
    layers: tuple[int, ...]
    surprisal: np.ndarray  # (T - 1,) nats: -ln p(token t+1 | up to t), unchanged model
    surprisal_masked: np.ndarray  # (T - 1,) the same with the pattern
    kl: np.ndarray  # (T,) KL(unchanged || masked) of each position's next-token distribution, nats
    top1: np.ndarray  # (T,) the unchanged model's most likely next token at each position
    top1_masked: np.ndarray  # (T,)
    density: float  # the pattern's share of the causal mask's keys

    @property
    def loss(self) -> float:
        return float(self.surprisal.mean())

    @property
    def loss_masked(self) -> float:
        return float(self.surprisal_masked.mean())

    @property
    def changed(self) -> np.ndarray:
        """Positions where the most likely next token changed."""
        return np.flatnonzero(self.top1 != self.top1_masked)


def _summary(logits: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(surprisal (T - 1,) nats, log-probabilities (T, V), top-1 (T,)) of logits (T, V)."""
    logp = torch.log_softmax(logits.float(), -1)
    return -logp[:-1].gather(1, ids[1:, None])[:, 0], logp, logp.argmax(-1)


def mask_experiment(net: Transformer, ids: list[int], spec: MaskSpec, layers: Iterable[int] | None = None
                    ) -> MaskResult:
    """The prompt run unchanged and with the pattern in the chosen layers (default: all)."""
    T = len(ids)
    mask = attention_mask(spec, T)
    layers = tuple(range(net.cfg.n_layers)) if layers is None else tuple(sorted(set(layers)))
    tokens = torch.tensor([ids])
    with torch.inference_mode():
        s0, logp0, top0 = _summary(net(tokens)[0], tokens[0])
        s1, logp1, top1 = _summary(net.run_with_hooks(tokens, mask_hooks(mask, layers))[0], tokens[0])
        kl = (logp0.exp() * (logp0 - logp1)).sum(-1).clamp_min(0)
    causal = T * (T + 1) / 2
    return MaskResult(spec, layers, s0.numpy(), s1.numpy(), kl.numpy(), top0.numpy(), top1.numpy(),
                      float(mask.sum()) / causal)


def masked_loss(net: Transformer, ids: list[int], spec: MaskSpec, layers: Iterable[int]) -> float:
    """Mean next-token loss (nats) over the prompt with the pattern in the chosen layers."""
    tokens = torch.tensor([ids])
    with torch.inference_mode():
        logits = net.run_with_hooks(tokens, mask_hooks(attention_mask(spec, len(ids)), layers))[0]
        return float(F.cross_entropy(logits[:-1].float(), tokens[0, 1:]))


def sweep_windows(T: int) -> list[int]:
    """Window sizes for a sweep over T tokens: the powers of two from 2 up, and T (the causal mask); a power of two
    within a quarter of T is left out (it would measure the causal mask again, nearly)."""
    return [w for w in (1 << k for k in range(1, max(T, 2).bit_length())) if w * 1.25 <= T] + [T]


@dataclass(frozen=True)
class SweepPoint:
    window: int
    sinks: int
    loss: float  # nats per token


def window_sweep(net: Transformer, ids: list[int], windows: Iterable[int], sinks: Iterable[int] = (0, 4),
                 layers: Iterable[int] | None = None) -> Iterator[SweepPoint]:
    """Loss against window size, for each sink count (a sink count past a window is skipped), one run per point:
    a generator, so a caller can hand the model to others between two points."""
    layers = tuple(range(net.cfg.n_layers)) if layers is None else tuple(layers)
    for s in sinks:
        for w in windows:
            if s <= w:
                spec = MaskSpec("sinks" if s else "window", window=w, sinks=s)
                yield SweepPoint(w, s, masked_loss(net, ids, spec, layers))


# -- flash attention, tile by tile ----------------------------------------------------------------------------------

@dataclass
class FlashStep:
    """The state after one tile: query block `qb` (rows q0:q1) against key block `kb` (keys k0:k1)."""

    qb: int
    kb: int
    rows: tuple[int, int]
    keys: tuple[int, int]
    tile_max: np.ndarray  # (rows,) the tile's own row maxima (-inf where the tile hides the whole row)
    running_max: np.ndarray  # (rows,) m after this tile
    running_sum: np.ndarray  # (rows,) l after this tile, scaled to m
    partial: np.ndarray  # (rows, Dh) the output so far: acc / l


@dataclass
class FlashRun:
    output: np.ndarray  # (T, Dh)
    steps: list[FlashStep] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)  # tiles the mask hides whole: never computed
    scores: np.ndarray | None = None  # (T, T) scaled scores, masked -inf (for the figure only; the tiles never
    #   hold it whole)


def flash_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, block_q: int, block_k: int,
                    window: int | None = None) -> FlashRun:
    """One head's causal attention, softmax(q k^T * scale) v, computed a (block_q x block_k) tile at a time with the
    online softmax: per query block a running max m, a running sum l and an unnormalised output acc, rescaled by
    exp(m_old - m_new) whenever the max grows. q, k, v: (T, Dh). `window`: the layer's sliding window, if any."""
    T, _ = q.shape
    q, k, v = q.double(), k.double(), v.double()
    rows_all = torch.arange(T)
    run = FlashRun(output=np.zeros(tuple(q.shape)))
    out = torch.zeros_like(q)
    for qb, q0 in enumerate(range(0, T, block_q)):
        q1 = min(q0 + block_q, T)
        m = torch.full((q1 - q0,), float("-inf"), dtype=torch.float64)
        l = torch.zeros(q1 - q0, dtype=torch.float64)
        acc = torch.zeros(q1 - q0, q.shape[1], dtype=torch.float64)
        for kb, k0 in enumerate(range(0, T, block_k)):
            k1 = min(k0 + block_k, T)
            see = rows_all[k0:k1][None, :] <= rows_all[q0:q1][:, None]
            if window is not None:
                see &= rows_all[k0:k1][None, :] > rows_all[q0:q1][:, None] - window
            if not see.any():
                run.skipped.append((qb, kb))
                continue
            s = (q[q0:q1] @ k[k0:k1].T * scale).masked_fill(~see, float("-inf"))
            tile_max = s.max(-1).values
            m_new = torch.maximum(m, tile_max)
            base = torch.where(torch.isinf(m_new), 0.0, m_new)  # a row with no key seen yet: nothing to subtract
            p = torch.exp(s - base[:, None])
            rescale = torch.exp(m - base)  # 0 for rows that had seen nothing (m = -inf)
            l = rescale * l + p.sum(-1)
            acc = rescale[:, None] * acc + p @ v[k0:k1]
            m = m_new
            run.steps.append(FlashStep(qb, kb, (q0, q1), (k0, k1), tile_max.numpy(), m.numpy().copy(),
                                       l.numpy().copy(), (acc / l[:, None]).numpy()))
        out[q0:q1] = acc / l[:, None]
    run.output = out.float().numpy()
    return run


def tile_count(T: int, block_q: int, block_k: int, window: int | None = None) -> int:
    """How many tiles `flash_attention` computes: those holding at least one key a query in them may see."""
    count = 0
    for q0 in range(0, T, block_q):
        q1 = min(q0 + block_q, T)
        for k0 in range(0, T, block_k):
            k1 = min(k0 + block_k, T)
            # the tile's nearest pair is (q1 - 1, k0) for the causal limit, (q0, k1 - 1) for the window
            count += k0 <= q1 - 1 and (window is None or k1 - 1 > q0 - window)
    return count


def attention_scores(q: Tensor, k: Tensor, scale: float, window: int | None = None) -> Tensor:
    """The ordinary form's T x T matrix, whole: q k^T * scale in float64, -inf where the causal mask (and a
    window) hides a key; its softmax times v is what the tiles must equal."""
    T = q.shape[0]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    see = (j <= i) if window is None else (j <= i) & (j > i - window)
    return (q.double() @ k.double().T * scale).masked_fill(~see, float("-inf"))


# FlashAttention's IO argument (Dao et al. 2022, Theorem 2): standard attention reads and writes Θ(N d + N²) elements
# of GPU memory (HBM), FlashAttention Θ(N² d² / M) for an on-chip memory (SRAM) of M elements. The counts below are
# the two algorithms' loads and stores, written out (Algorithm 0 and Algorithm 1 of the paper), per head.
A100_SRAM_BYTES = 192 * 1024  # the paper's example: 192 KB of SRAM on each of the A100's 108 streaming multiprocessors
HALF = 2  # bytes per element: the paper's GPUs run attention in fp16/bf16


def flash_blocks(d: int, sram_elements: int) -> tuple[int, int]:
    """Algorithm 1's block sizes for SRAM of M elements: B_c = ceil(M / 4d), B_r = min(ceil(M / 4d), d)."""
    b_c = math.ceil(sram_elements / (4 * d))
    return min(b_c, d), b_c


def io_accesses(N: int, d: int, sram_elements: int) -> dict[str, int]:
    """HBM elements read and written by one head's attention over N tokens (head size d), each algorithm:
    standard (Algorithm 0): read Q, K, write S, read S, write P, read P, V, write O = 4 N d + 4 N²;
    FlashAttention (Algorithm 1): write O, l, m once (N d + 2N), read K, V once (2 N d), and for each of the
    T_c = ceil(N / B_c) key blocks read all of Q and O and write O back (3 N d) and read and write l and m (4N)."""
    _, b_c = flash_blocks(d, sram_elements)
    t_c = math.ceil(N / b_c)
    return {"standard": 4 * N * d + 4 * N * N, "flash": N * d + 2 * N + 2 * N * d + t_c * (3 * N * d + 4 * N)}


def attention_memory(T: int, n_heads: int, d: int, block_q: int, block_k: int, bytes_per: int = 4
                     ) -> dict[str, int]:
    """Bytes one layer's attention holds at once besides q, k, v and the output: the standard form every head's
    T x T scores (and then probabilities, in place); the tiled form a (block_q x block_k) tile, the query block's
    running max and sum and its partial output, per head."""
    bq, bk = min(block_q, T), min(block_k, T)
    return {"standard": n_heads * T * T * bytes_per,
            "tiled": n_heads * (bq * bk + 2 * bq + bq * d) * bytes_per}
