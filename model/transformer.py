"""A Llama-style decoder, read top-down, with a hook on every intermediate tensor.

Embedding -> N x [RMSNorm -> grouped-query attention with RoPE -> residual -> RMSNorm ->
SwiGLU MLP -> residual] -> final RMSNorm -> LM head. Every tensor a textbook draws passes
through a `HookPoint` named as in TransformerLens (`blocks.3.attn.hook_pattern`), so
`run_with_cache` can hand them all back. The KV cache is an argument to `forward`, never
state on the model, and nothing a call does stays on the shared model.

RoPE layout: this model rotates *interleaved* pairs, (x0, x1), (x2, x3), ... of each head,
as Meta's original Llama code and GGUF files do. Hugging Face checkpoints store q/k rows
in the *half-split* layout, (x0, x_{d/2}), (x1, x_{d/2+1}), ...; the loaders permute those
rows into ours (see `loaders.half_split_to_interleaved`). Both give the same q.k scores.

    interleaved:  [x0 x1 | x2 x3 | x4 x5 | x6 x7]      pairs are neighbours
    half-split:   [x0 x1 x2 x3 | x4 x5 x6 x7]          pair i is (x_i, x_{i+d/2})

Shape letters: B batch, T new tokens, S all key positions (cache + new), D d_model,
H query heads, G key/value heads, Dh d_head, F d_mlp, V vocab.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ModelConfig:
    """Hyper-parameters of a Llama-style decoder."""

    vocab_size: int = 49152  # V: rows of the embedding and the LM head
    d_model: int = 576  # D: width of the residual stream
    n_layers: int = 30  # number of transformer blocks
    n_heads: int = 9  # H: query heads
    n_kv_heads: int = 3  # G: key/value heads; each is shared by n_heads // n_kv_heads query heads
    d_mlp: int = 1536  # F: hidden width of the SwiGLU MLP
    rope_theta: float = 100000.0  # RoPE base: pair i turns by position * rope_theta ** (-2i / d_head)
    norm_eps: float = 1e-5  # epsilon inside every RMSNorm
    max_seq_len: int = 8192  # context length the checkpoint was trained for
    tie_embeddings: bool = True  # LM head shares its weight with the token embedding
    name: str = "smollm2-135m-instruct"
    d_head: int = field(init=False)  # Dh = d_model // n_heads

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        self.d_head = self.d_model // self.n_heads
        if self.d_head % 2:
            raise ValueError(f"RoPE needs an even d_head, got {self.d_head}")

    @property
    def n_groups(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    def kv_head_of(self, head: int) -> int:
        """The key/value head that query head `head` reads."""
        return head // self.n_groups


PRESETS = {
    "smollm2-135m-instruct": ModelConfig(),
}


# ---------------------------------------------------------------------------------------
# The maths, as plain functions.


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 and cast back."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def rope_frequencies(d_head: int, theta: float) -> Tensor:
    """theta_i = theta ** (-2i / d_head) for each pair i, shape (Dh/2,)."""
    return 1.0 / (theta ** (torch.arange(0, d_head, 2, dtype=torch.int64).float() / d_head))


def rope_angles(positions: Tensor, d_head: int, theta: float) -> Tensor:
    """Angle m * theta_i of pair i at position m, shape (T, Dh/2), float32."""
    return positions.float()[:, None] * rope_frequencies(d_head, theta).to(positions.device)[None, :]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each interleaved pair (x[2i], x[2i+1]) of x (B, T, n, Dh) by its angle; cos/sin (T, Dh/2)."""
    pairs = x.to(torch.promote_types(x.dtype, torch.float32)).unflatten(-1, (-1, 2))  # (B, T, n, Dh/2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, G, S, Dh) -> (B, G * n_rep, S, Dh): each key/value head serves n_rep query heads."""
    if n_rep == 1:
        return x
    B, G, S, Dh = x.shape
    return x[:, :, None].expand(B, G, n_rep, S, Dh).reshape(B, G * n_rep, S, Dh)


# ---------------------------------------------------------------------------------------
# Hooks.

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]


class HookPoint(nn.Module):
    """Identity on a tensor, where callers may attach functions that read or replace it.

    Its name is its path in `named_modules()`, e.g. `blocks.0.attn.hook_q`. With no function
    attached it costs one attribute check, so an unhooked forward runs at full speed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.fns: list[HookFn] = []

    def __call__(self, x: Tensor) -> Tensor:  # skip nn.Module's dispatch: this is the hot path
        for fn in self.fns:
            out = fn(x, self)
            if out is not None:
                x = out
        return x

    def extra_repr(self) -> str:
        return self.name


@dataclass
class KVCache:
    """Keys and values of the positions seen so far, one preallocated buffer per layer."""

    k: list[Tensor]  # per layer (B, G, max_len, Dh), after RoPE
    v: list[Tensor]  # per layer (B, G, max_len, Dh)
    length: int = 0  # positions filled so far

    @classmethod
    def empty(
        cls, cfg: ModelConfig, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str
    ) -> KVCache:
        shape = (batch, cfg.n_kv_heads, max_len, cfg.d_head)
        return cls(
            k=[torch.empty(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)],
            v=[torch.empty(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)],
        )

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


# ---------------------------------------------------------------------------------------
# The model, top-down.


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_normalized(rms_norm(x, self.weight, self.eps))  # (B, T, D)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.d_head, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.d_head, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.d_head, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model, bias=False)
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_rot_q = HookPoint()
        self.hook_rot_k = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, cache: KVCache | None, layer: int
    ) -> Tensor:
        cfg = self.cfg
        B, T, _ = x.shape
        q = self.hook_q(self.wq(x).view(B, T, cfg.n_heads, cfg.d_head))  # (B, T, H, Dh)
        k = self.hook_k(self.wk(x).view(B, T, cfg.n_kv_heads, cfg.d_head))  # (B, T, G, Dh)
        v = self.hook_v(self.wv(x).view(B, T, cfg.n_kv_heads, cfg.d_head))  # (B, T, G, Dh)
        q = self.hook_rot_q(apply_rope(q, cos, sin))  # (B, T, H, Dh)
        k = self.hook_rot_k(apply_rope(k, cos, sin))  # (B, T, G, Dh)

        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # heads first
        if cache is not None:  # append this step's keys/values, then attend to all of them
            start, end = cache.length, cache.length + T
            cache.k[layer][:, :, start:end] = k
            cache.v[layer][:, :, start:end] = v
            k, v = cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]  # (B, G, S, Dh)
        k, v = repeat_kv(k, cfg.n_groups), repeat_kv(v, cfg.n_groups)  # (B, H, S, Dh)

        attn_scores = (q @ k.transpose(-2, -1)) / math.sqrt(cfg.d_head)  # (B, H, T, S)
        attn_scores = self.hook_attn_scores(attn_scores.masked_fill(~mask, float("-inf")))
        pattern = self.hook_pattern(F.softmax(attn_scores.float(), dim=-1).to(q.dtype))  # (B, H, T, S)
        z = self.hook_z((pattern @ v).transpose(1, 2))  # (B, T, H, Dh)
        return self.wo(z.reshape(B, T, cfg.n_heads * cfg.d_head))  # (B, T, D)


class MLP(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); w1 is the gate, w3 the up projection, w2 the down."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.w3 = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.w2 = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        gate = self.hook_pre(self.w1(x))  # (B, T, F), before SiLU
        up = self.hook_pre_linear(self.w3(x))  # (B, T, F)
        post = self.hook_post(F.silu(gate) * up)  # (B, T, F)
        return self.w2(post)  # (B, T, D)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer  # registered in forward order, so hook names list in that order
        self.hook_resid_pre = HookPoint()
        self.ln1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, cache: KVCache | None) -> Tensor:
        x = self.hook_resid_pre(x)  # (B, T, D)
        attn_out = self.hook_attn_out(self.attn(self.ln1(x), cos, sin, mask, cache, self.layer))
        x = self.hook_resid_mid(x + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(x)))
        return self.hook_resid_post(x + mlp_out)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg, layer) for layer in range(cfg.n_layers))
        self.ln_final = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.hook_points: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_points[name] = module

    def forward(self, tokens: Tensor, cache: KVCache | None = None) -> Tensor:
        """Logits (B, T, V) for tokens (B, T); with a cache, the tokens follow its `length` positions."""
        B, T = tokens.shape
        start = cache.length if cache is not None else 0
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions; {start + T} needed")
        positions = torch.arange(start, start + T, device=tokens.device)
        angles = rope_angles(positions, self.cfg.d_head, self.cfg.rope_theta)  # (T, Dh/2)
        cos, sin = angles.cos(), angles.sin()
        keys = torch.arange(start + T, device=tokens.device)
        mask = keys[None, :] <= positions[:, None]  # (T, S): query m sees keys 0..m

        x = self.hook_embed(self.tok_embeddings(tokens))  # (B, T, D)
        for block in self.blocks:
            x = block(x, cos, sin, mask, cache)
        if cache is not None:
            cache.length += T
        return self.output(self.ln_final(x))  # (B, T, V)

    # -- hooks ------------------------------------------------------------------------

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str, HookFn]]) -> Iterator[Transformer]:
        """Attach (name, fn) pairs for the duration of the block, and always remove them."""
        attached: list[tuple[HookPoint, HookFn]] = []
        try:
            for name, fn in fwd_hooks:
                if name not in self.hook_points:
                    raise KeyError(f"no hook point named {name!r}")
                self.hook_points[name].fns.append(fn)
                attached.append((self.hook_points[name], fn))
            yield self
        finally:
            for point, fn in attached:
                point.fns.remove(fn)

    def hook_names(self, names_filter: NamesFilter = None) -> list[str]:
        """Hook point names in forward order that pass `names_filter`."""
        return [name for name in self.hook_points if _matches(name, names_filter)]

    @torch.no_grad()
    def run_with_hooks(self, tokens: Tensor, fwd_hooks: Iterable[tuple[str, HookFn]] = ()) -> Tensor:
        """Logits for tokens with hook functions attached for this call only."""
        with self.hooks(fwd_hooks):
            return self(tokens)

    @torch.no_grad()
    def run_with_cache(self, tokens: Tensor, names_filter: NamesFilter = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and a dict of every hooked tensor (detached copies) whose name passes the filter."""
        store: dict[str, Tensor] = {}

        def save(x: Tensor, point: HookPoint) -> None:
            store[point.name] = x.detach().clone()

        logits = self.run_with_hooks(tokens, [(name, save) for name in self.hook_names(names_filter)])
        return logits, store


NamesFilter = None | str | Iterable[str] | Callable[[str], bool]


def _matches(name: str, names_filter: NamesFilter) -> bool:
    """None: everything; str: a regular expression searched in the name; list: exact names; callable."""
    if names_filter is None:
        return True
    if isinstance(names_filter, str):
        return re.search(names_filter, name) is not None
    if callable(names_filter):
        return bool(names_filter(name))
    return name in set(names_filter)
