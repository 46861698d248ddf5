"""One model run per prompt, kept as a `Trace` that every tab reads.

A trace keeps what cannot be cheaply recomputed and nothing more: the residual stream after
the embedding and after every layer (float32, exact), the logits after the prompt, each
token's surprisal, every head's statistics and a 30 x 30 thumbnail of its pattern. One
layer's q, k, v and attention pattern are recomputed from its residual when shown (a few
milliseconds; `ModelRunner.layer`), and the last few layers shown are kept. At 512 tokens
that is about 37 MB a visitor instead of 440 MB.

A trace may be dropped to make room for other visitors (`TraceBudget`): its large arrays
are released, and the tabs say so plainly. Also here: the pure functions that summarise
attention (head statistics, the four stages of one head).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from model.lens import LensResult
from model.routes import Flow

from .errors import TraceDropped

KEPT_LAYERS = 1  # recomputed layers kept per trace (the one shown: a 512-token layer is 12 MB)
_SERIALS = itertools.count()


@dataclass(frozen=True)
class LayerTensors:
    """One layer's attention tensors for a trace (T tokens, H query heads, G key/value heads)."""

    q: np.ndarray  # (T, H, Dh) before RoPE
    k: np.ndarray  # (T, G, Dh) before RoPE
    v: np.ndarray  # (T, G, Dh)
    rot_q: np.ndarray  # (T, H, Dh) after RoPE
    rot_k: np.ndarray  # (T, G, Dh) after RoPE
    pattern: np.ndarray  # (H, T, T) attention weights

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.q, self.k, self.v, self.rot_q, self.rot_k, self.pattern))


@dataclass(eq=False)
class Trace:
    """Everything the tabs show about one prompt (T tokens, L layers, H heads, D d_model)."""

    prompt: str  # the text encoded (unencodable characters already replaced)
    chat: bool  # the prompt was wrapped in the model's chat template
    ids: np.ndarray  # (T,) token ids
    token_bytes: list[bytes]  # the bytes each token stands for
    special: np.ndarray  # (T,) bool: control tokens such as <|im_start|>
    surprisal: np.ndarray  # (T,) -log2 p(token | prefix) in bits; NaN at position 0
    next_logits: np.ndarray  # (V,) logits after the last position
    resid: np.ndarray | None  # (L + 1, T, D): after the embedding, then after each layer; None once dropped
    head_stats: np.ndarray  # (L, H, 4): see HEAD_STAT_NAMES
    thumbnails: np.ndarray  # (L, H, c, c) uint8: each head's pattern shrunk to colour levels (the overview)
    notes: list[str] = field(default_factory=list)  # what was changed about the prompt, for the user
    lens: dict[str, LensResult] = field(default_factory=dict)  # logit-lens results by rows ("post", "mid")
    resid_mid: np.ndarray | None = None  # (L, T, D) after each attention block, computed when first asked for
    routes: Flow | None = None  # every node's incoming importances (the Routes tab), computed when first asked for
    layers: OrderedDict = field(default_factory=OrderedDict)  # layer -> LayerTensors, the last few shown
    dropped: bool = False  # its large arrays were released to make room for other visitors
    lens_jobs: dict = field(default_factory=dict)  # rows -> a logit-lens computation in progress
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # guards lens_jobs and layers
    serial: int = field(default_factory=lambda: next(_SERIALS))  # tells traces apart (which one a tab shows)

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def n_layers(self) -> int:
        return self.head_stats.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes held in arrays (what the memory budget counts)."""
        arrays = [self.ids, self.special, self.surprisal, self.next_logits, self.head_stats, self.thumbnails]
        arrays += [a for a in (self.resid, self.resid_mid) if a is not None]
        lens = sum(t.nbytes for r in self.lens.values() for t in vars(r).values())
        routes = self.routes.nbytes if self.routes is not None else 0
        return sum(a.nbytes for a in arrays) + sum(t.nbytes for t in list(self.layers.values())) + lens + routes

    def drop(self) -> None:
        """Release the large arrays; what is left still shows tokens and statistics, and says why the rest is gone."""
        self.dropped = True
        self.resid = self.resid_mid = self.routes = None
        self.layers.clear()
        self.lens_jobs.clear()

    def keep_layer(self, layer: int, tensors: LayerTensors) -> None:
        with self.lock:
            self.layers[layer] = tensors
            self.layers.move_to_end(layer)
            while len(self.layers) > KEPT_LAYERS:
                self.layers.popitem(last=False)


HEAD_STAT_NAMES = ("first token", "previous token", "self", "entropy (bits)")  # as shown
HEAD_STAT_KEYS = ("first_token", "previous_token", "self", "entropy_bits")  # as the API names them


def head_statistics(pattern: torch.Tensor | np.ndarray) -> np.ndarray:
    """(..., H, 4) per-head means over query positions of attention to the first token, the previous token and
    itself, and the entropy of each row in bits, for patterns (..., H, T, T). Query 0 is left out of all four (it
    can only attend to itself, which says nothing about the head); NaN for a one-token prompt."""
    p = torch.as_tensor(pattern).float()
    T = p.shape[-1]
    stats = torch.full((*p.shape[:-2], 4), float("nan"))
    if T > 1:
        rows = torch.arange(1, T)
        stats[..., 0] = p[..., 1:, 0].mean(-1)
        stats[..., 1] = p[..., rows, rows - 1].mean(-1)
        stats[..., 2] = p[..., rows, rows].mean(-1)
        stats[..., 3] = -torch.special.xlogy(p[..., 1:, :], p[..., 1:, :]).sum(-1).mean(-1) / np.log(2)  # 0 log 0 = 0
    return stats.numpy()


def uniform_entropy(n_tokens: int) -> float:
    """The entropy statistic of a causal head that spreads every query evenly over the keys it may see (query t over
    t + 1 keys), averaged over queries 1 .. T-1 as `head_statistics` does: the reference for "diffuse"."""
    return float(np.mean(np.log2(np.arange(2, n_tokens + 1)))) if n_tokens > 1 else float("nan")


def attention_stages(q: np.ndarray, k: np.ndarray, window: int | None = None,
                     scale: float | None = None) -> dict[str, np.ndarray]:
    """The four steps of one head from its rotated q (T, Dh) and k (T, Dh): q.k, scaled (divided by `scale`, else
    sqrt(Dh)), masked (the future, and with a sliding window the keys `window` or more back), softmax."""
    q, k = q.astype(np.float64), k.astype(np.float64)
    raw = q @ k.T  # (T, T)
    scaled = raw / (scale or np.sqrt(q.shape[-1]))
    causal = np.tril(np.ones_like(raw, dtype=bool))
    if window is not None:
        causal &= ~np.tril(np.ones_like(causal), k=-window)
    masked = np.where(causal, scaled, -np.inf)
    exp = np.exp(masked - masked.max(-1, keepdims=True))
    return {"scores": raw, "scaled": scaled, "masked": masked, "softmax": exp / exp.sum(-1, keepdims=True)}


class TraceBudget:
    """A server-wide limit on the bytes all visitors' traces (and other droppable state) hold.

    Admitting a new one drops the least recently used others until the total fits; using one
    (`touch`) makes it the most recent. Entries are weak: state Gradio discards (a closed page,
    an expired session) leaves the budget by itself.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self._entries: OrderedDict[int, weakref.ref] = OrderedDict()
        self._mutex = threading.Lock()

    def _live(self) -> list:
        items = [(key, ref()) for key, ref in self._entries.items()]
        for key, obj in items:
            if obj is None or obj.dropped:
                del self._entries[key]
        return [obj for _, obj in items if obj is not None and not obj.dropped]

    def total(self) -> int:
        with self._mutex:
            return sum(obj.nbytes for obj in self._live())

    def admit(self, obj) -> list:
        """Count obj (anything with nbytes, dropped and drop()); drop the least recently used others to fit.
        Returns the ones dropped."""
        with self._mutex:
            self._entries[id(obj)] = weakref.ref(obj)
            self._entries.move_to_end(id(obj))
            live = self._live()
            total = sum(o.nbytes for o in live)
            evicted = []
            for old in live[:-1]:  # oldest first, never the one just admitted
                if total <= self.limit:
                    break
                total -= old.nbytes
                old.drop()
                evicted.append(old)
            return evicted

    def touch(self, obj) -> None:
        with self._mutex:
            if id(obj) in self._entries:
                self._entries.move_to_end(id(obj))

    def use(self, trace: Trace) -> np.ndarray:
        """The trace's residual streams, the trace becoming the most recently used; TraceDropped if released."""
        resid = trace.resid
        if trace.dropped or resid is None:
            raise TraceDropped()
        self.touch(trace)
        return resid
