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

One module on purpose (the house style's nanoGPT rule): config, maths, hooks, attention, MLP, block and model
read top-down in one place. `forward` is the model; `step` is the same maths for one new token when no hook is
attached (decoding), reading the weights through `layout.py`'s plan, which is how they are laid out for speed.

    interleaved:  [x0 x1 | x2 x3 | x4 x5 | x6 x7]      pairs are neighbours
    half-split:   [x0 x1 x2 x3 | x4 x5 x6 x7]          pair i is (x_i, x_{i+d/2})

Shape letters: B batch, T new tokens, S all key positions (cache + new), D d_model,
H query heads, G key/value heads, Dh d_head, F d_mlp, V vocab.
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layout import plan_for


@dataclass
class ModelConfig:
    """Hyper-parameters of a Llama-style decoder."""

    vocab_size: int = 49152  # V: rows of the embedding and the LM head
    d_model: int = 576  # D: width of the residual stream
    n_layers: int = 30  # number of transformer blocks
    n_heads: int = 9  # H: query heads
    n_kv_heads: int = 3  # G: key/value heads; each is shared by n_heads // n_kv_heads query heads
    d_mlp: int = 1536  # F: hidden width of the SwiGLU MLP
    rope_base: float = 100000.0  # RoPE base b (HF: rope_theta): pair i turns by position * b ** (-2i / d_head)
    norm_eps: float = 1e-5  # epsilon inside every RMSNorm
    max_seq_len: int = 8192  # context length the checkpoint was trained for
    tie_embeddings: bool = True  # LM head shares its weight with the token embedding
    name: str = "smollm2-135m-instruct"
    # The families' differences from plain Llama, each a field (default: SmolLM2's, plain Llama):
    head_dim: int | None = None  # Dh when it is not d_model // n_heads (Qwen3)
    qkv_bias: bool = False  # biases on the q, k and v projections (Qwen2, Qwen2.5)
    qk_norm: bool = False  # an RMSNorm over each head's q and k before RoPE (Qwen3)
    sliding_window: int | None = None  # a query sees only the last `sliding_window` keys, itself included (Mistral)
    rope_scaling: tuple[float, float, float, int] | None = None  # Llama 3's: (factor, low_freq_factor,
    #   high_freq_factor, original context); low frequencies slowed by `factor`, the middle ones blended
    rope_layers: tuple[bool, ...] | None = None  # per layer, whether it rotates q and k (SmolLM3's no-RoPE layers)
    # Gemma 3's differences (transformers' names in brackets):
    layer_types: tuple[str, ...] | None = None  # per layer "sliding" or "full": only sliding layers use the window
    #   (Gemma 3: five in six; [layer_types]); None: every layer does, as in Mistral
    rope_local_base: float | None = None  # RoPE base of the sliding layers, when not rope_base (Gemma 3: 10,000 local,
    #   1,000,000 global; [rope_parameters.sliding_attention.rope_theta])
    post_norms: bool = False  # an RMSNorm on the attention's and the MLP's outputs before each joins the residual,
    #   four norms a block (Gemma 2/3; TransformerLens's ln1_post and ln2_post)
    embed_scale: float | None = None  # the embedding times this (Gemma: sqrt(d_model)); a tied head reads it unscaled
    mlp_act: str = "silu"  # the gate's activation: "silu" (SwiGLU) or "gelu_tanh" (Gemma's GeGLU)
    query_pre_attn_scalar: float | None = None  # scores divided by sqrt(this), not sqrt(d_head) (Gemma)
    d_head: int = field(init=False)  # Dh = head_dim, else d_model // n_heads

    def __post_init__(self) -> None:
        for name in ("rope_scaling", "rope_layers", "layer_types"):  # JSON (a converted cache) gives lists
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        self.d_head = self.head_dim or self.d_model // self.n_heads
        if self.rope_layers is not None and len(self.rope_layers) != self.n_layers:
            raise ValueError(f"rope_layers has {len(self.rope_layers)} entries for {self.n_layers} layers")
        if self.d_head % 2:
            raise ValueError(f"RoPE needs an even d_head, got {self.d_head}")
        if self.layer_types is not None and (len(self.layer_types) != self.n_layers
                                             or set(self.layer_types) - {"sliding", "full"}):
            raise ValueError(f"layer_types must be 'sliding' or 'full' for each of {self.n_layers} layers")
        if self.mlp_act not in ACTIVATIONS:
            raise ValueError(f"mlp_act {self.mlp_act!r} is not one of {sorted(ACTIVATIONS)}")

    def uses_rope(self, layer: int) -> bool:
        """Whether the layer rotates q and k (all do, but in SmolLM3's no-RoPE layers)."""
        return self.rope_layers is None or self.rope_layers[layer]

    def window_of(self, layer: int) -> int | None:
        """How many keys a query of this layer sees at most (itself included); None: all before it."""
        if self.layer_types is not None and self.layer_types[layer] == "full":
            return None
        return self.sliding_window

    def rope_base_of(self, layer: int) -> float:
        """The RoPE base of this layer (Gemma 3's sliding layers have their own)."""
        if self.rope_local_base is not None and self.window_of(layer) is not None:
            return self.rope_local_base
        return self.rope_base

    @property
    def attn_scale(self) -> float:
        """What the scores are divided by: sqrt(d_head), or sqrt(query_pre_attn_scalar) (Gemma)."""
        return math.sqrt(self.query_pre_attn_scalar or self.d_head)

    @property
    def plain_llama(self) -> bool:
        """Whether every layer is Llama's block with one RoPE base (what `Transformer.step` computes)."""
        return not (self.post_norms or self.embed_scale or self.mlp_act != "silu" or self.layer_types
                    or self.rope_local_base or self.query_pre_attn_scalar)

    @property
    def n_groups(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    def kv_head_of(self, head: int) -> int:
        """The key/value head that query head `head` reads."""
        return head // self.n_groups


# ---------------------------------------------------------------------------------------
# The maths, as plain functions.


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation (Gemma's gate; transformers' gelu_pytorch_tanh)."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"silu": F.silu, "gelu_tanh": gelu_tanh}


def rms_scale(x: Tensor, eps: float) -> Tensor:
    """The RMS divisor sqrt(mean(x^2) + eps), (..., 1), in float32."""
    return (x.float().pow(2).mean(-1, keepdim=True) + eps).sqrt()


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 and cast back."""
    if x.dtype == torch.float32:  # the same operations without the casts, three calls fewer (decoding calls it 61x)
        return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * weight
    return (x.float() / rms_scale(x, eps)).to(x.dtype) * weight


# RoPE vocabulary, used everywhere: the base b; pair i's frequency theta_i = b ** (-2i / d_head)
# (radians per position); its angle at position m, m * theta_i.


def rope_frequencies(d_head: int, base: float, scaling: tuple[float, float, float, int] | None = None) -> Tensor:
    """theta_i = base ** (-2i / d_head) for each pair i, shape (Dh/2,); with Llama 3's scaling (factor, low and
    high frequency factors, original context L): a pair whose wavelength 2 pi / theta exceeds L / low turns
    `factor` times slower, one shorter than L / high is unchanged, and those between are blended smoothly."""
    theta = 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.int64).float() / d_head))
    if scaling is None:
        return theta
    factor, low, high, context = scaling
    wavelength = 2 * math.pi / theta
    slowed = torch.where(wavelength > context / low, theta / factor, theta)
    smooth = (context / wavelength - low) / (high - low)
    blended = (1 - smooth) * slowed / factor + smooth * slowed
    middle = ~(wavelength < context / high) & ~(wavelength > context / low)
    return torch.where(middle, blended, slowed)


def rope_angles(positions: Tensor, d_head: int, base: float,
                scaling: tuple[float, float, float, int] | None = None) -> Tensor:
    """Angle m * theta_i of pair i at position m, shape (T, Dh/2), float32."""
    return positions.float()[:, None] * rope_frequencies(d_head, base, scaling).to(positions.device)[None, :]


def rope_rotations(angles: Tensor) -> Tensor:
    """e^(i * angle) for each (position, pair), complex, shaped (1, T, 1, Dh/2) to broadcast over heads."""
    return torch.polar(torch.ones_like(angles), angles)[None, :, None, :]


def apply_rope(x: Tensor, rotations: Tensor) -> Tensor:
    """Rotate each interleaved pair (x[2i], x[2i+1]) of x (B, T, n, Dh) by its angle.

    A pair read as the complex number x[2i] + i x[2i+1] turns by multiplying with
    e^(i angle): (x0 cos - x1 sin) + i (x0 sin + x1 cos). `rotations` is (1, T, 1, Dh/2), or (Dh/2,) for
    one position (the decoding step's x is (B, n, Dh)).
    """
    real = x if x.dtype in (torch.float32, torch.float64) else x.float()
    pairs = torch.view_as_complex(real.unflatten(-1, (-1, 2)))  # (B, T, n, Dh/2), complex
    if rotations.dtype != pairs.dtype:
        rotations = rotations.to(pairs.dtype)
    rotated = torch.view_as_real(pairs * rotations).flatten(-2)  # (B, T, n, Dh)
    return rotated if rotated.dtype == x.dtype else rotated.to(x.dtype)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, G, S, Dh) -> (B, G * n_rep, S, Dh): each key/value head serves n_rep query heads."""
    if n_rep == 1:
        return x
    B, G, S, Dh = x.shape
    return x[:, :, None].expand(B, G, n_rep, S, Dh).reshape(B, G * n_rep, S, Dh)


# ---------------------------------------------------------------------------------------
# Hooks.

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]
_FNS = operator.attrgetter("fns")


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

    @classmethod
    def for_model(cls, net: Transformer, batch: int, max_len: int) -> KVCache:
        """An empty cache in the model's own dtype and on its device."""
        weight = net.tok_embeddings.weight
        return cls.empty(net.cfg, batch, max_len, weight.dtype, weight.device)

    def select(self, rows: Tensor) -> KVCache:
        """A new cache of the given batch rows (B',), in that order (a row may repeat), with the same length."""
        return KVCache([t.index_select(0, rows) for t in self.k], [t.index_select(0, rows) for t in self.v],
                       self.length)

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


# ---------------------------------------------------------------------------------------
# The model, top-down.


class RMSNorm(nn.Module):
    """rms_norm with TransformerLens's hooks: hook_scale is the divisor, hook_normalized is x / scale before the
    gain (so `cache.apply_ln_to_stack` and direct logit attribution work as in TransformerLens)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.hook_scale(rms_scale(x, self.eps))  # (B, T, 1), float32
        normalized = self.hook_normalized((x.float() / scale).to(x.dtype))  # (B, T, D), before the gain
        return normalized * self.weight  # (B, T, D)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.d_head, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.d_head, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.d_head, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model, bias=False)
        self.use_rope = True  # set per layer by the block (SmolLM3's no-RoPE layers)
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        if cfg.qk_norm:  # Qwen3: each head's q and k normalised (over Dh, with a gain) after hook_q/k, before RoPE
            self.q_norm, self.k_norm = RMSNorm(cfg.d_head, cfg.norm_eps), RMSNorm(cfg.d_head, cfg.norm_eps)
        self.hook_rot_q = HookPoint()
        self.hook_rot_k = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()

    def forward(self, x: Tensor, rotations: Tensor, mask: Tensor | None, kv_cache: KVCache | None,
                layer: int) -> Tensor:
        cfg = self.cfg
        B, T, _ = x.shape
        _, _, v, q, k = self.project(x, rotations)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # heads first
        if kv_cache is not None:  # append this step's keys/values, then attend to all of them
            start, end = kv_cache.length, kv_cache.length + T
            kv_cache.k[layer][:, :, start:end] = k
            kv_cache.v[layer][:, :, start:end] = v
            k, v = kv_cache.k[layer][:, :, :end], kv_cache.v[layer][:, :, :end]  # (B, G, S, Dh)
        if self.hook_attn_scores.fns or self.hook_pattern.fns:
            z = self.pattern(q, k, mask) @ repeat_kv(v, cfg.n_groups)  # (B, H, T, Dh), one hookable step at a time
        else:  # nobody is looking at the pattern: the same maths, fused (SDPA shares K/V heads itself)
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=cfg.n_groups > 1,
                                               scale=1 / cfg.attn_scale if cfg.query_pre_attn_scalar else None)
        z = self.hook_z(z.transpose(1, 2))  # (B, T, H, Dh)
        return self.wo(z.reshape(B, T, cfg.n_heads * cfg.d_head))  # (B, T, D)

    def project(self, x: Tensor, rotations: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """q, k, v of the normalised residual x (B, T, D), then q and k rotated: (q, k, v, rot_q, rot_k). As in
        TransformerLens, hook_q and hook_k are the projections (biases included) and Qwen3's q/k norms come
        after them: `attn.q_norm.hook_normalized` is hook_q over its RMS, and hook_rot_q is what RoPE makes of
        the normed q."""
        cfg = self.cfg
        B, T, _ = x.shape
        q = self.hook_q(self.wq(x).view(B, T, cfg.n_heads, cfg.d_head))  # (B, T, H, Dh)
        k = self.hook_k(self.wk(x).view(B, T, cfg.n_kv_heads, cfg.d_head))  # (B, T, G, Dh)
        v = self.hook_v(self.wv(x).view(B, T, cfg.n_kv_heads, cfg.d_head))  # (B, T, G, Dh)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        rot_q = self.hook_rot_q(apply_rope(q, rotations) if self.use_rope else q)  # (B, T, H, Dh)
        rot_k = self.hook_rot_k(apply_rope(k, rotations) if self.use_rope else k)  # (B, T, G, Dh)
        return q, k, v, rot_q, rot_k

    def pattern(self, q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
        """Scores -> scale -> mask -> softmax, one hookable step at a time: q (B, H, T, Dh), k (B, G, S, Dh)."""
        k = repeat_kv(k, self.cfg.n_groups)  # (B, H, S, Dh)
        attn_scores = q @ k.transpose(-2, -1)  # (B, H, T, S); in place below: no one has seen it yet
        attn_scores.div_(self.cfg.attn_scale)
        if mask is not None:  # None when a single new token may see every key
            attn_scores.masked_fill_(~mask, float("-inf"))
        attn_scores = self.hook_attn_scores(attn_scores)
        return self.hook_pattern(F.softmax(attn_scores.float(), dim=-1).to(q.dtype))  # (B, H, T, S)


class MLP(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); w1 is the gate, w3 the up projection, w2 the down. Gemma's GeGLU is the same
    with GELU (tanh) for SiLU."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.act = ACTIVATIONS[cfg.mlp_act]
        self.w1 = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.w3 = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.w2 = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        gate = self.hook_pre(self.w1(x))  # (B, T, F), before the activation
        up = self.hook_pre_linear(self.w3(x))  # (B, T, F)
        post = self.hook_post(self.act(gate).mul_(up))  # (B, T, F)
        return self.w2(post)  # (B, T, D)


class Block(nn.Module):
    """Pre-norm attention, then pre-norm MLP, each added to the residual. With `post_norms` (Gemma), each output is
    normed again before it is added (ln1_post, ln2_post), and, as in TransformerLens, hook_attn_out and hook_mlp_out
    are what is added: after those norms."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer  # registered in forward order, so hook names list in that order
        self.hook_resid_pre = HookPoint()
        self.ln1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.attn.use_rope = cfg.uses_rope(layer)
        self.ln1_post = RMSNorm(cfg.d_model, cfg.norm_eps) if cfg.post_norms else None
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.ln2_post = RMSNorm(cfg.d_model, cfg.norm_eps) if cfg.post_norms else None
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: Tensor, positions: Positions, kv_cache: KVCache | None) -> Tensor:
        rotations, mask = positions.of(self.layer)
        x = self.hook_resid_pre(x)  # (B, T, D)
        attn_out = self.attn(self.ln1(x), rotations, mask, kv_cache, self.layer)
        attn_out = self.hook_attn_out(attn_out if self.ln1_post is None else self.ln1_post(attn_out))
        x = self.hook_resid_mid(x + attn_out)
        mlp_out = self.mlp(self.ln2(x))
        mlp_out = self.hook_mlp_out(mlp_out if self.ln2_post is None else self.ln2_post(mlp_out))
        return self.hook_resid_post(x + mlp_out)


class Positions:
    """RoPE rotations and the attention mask for new positions start .. start + T - 1 over the start + T keys, each
    layer's made when first asked for and shared by the layers with the same RoPE base and window."""

    def __init__(self, cfg: ModelConfig, start: int, T: int, device: torch.device | str = "cpu") -> None:
        self.cfg, self.start, self.T, self.device = cfg, start, T, device
        self._made: dict[tuple[float, int | None], tuple[Tensor, Tensor | None]] = {}

    def of(self, layer: int) -> tuple[Tensor, Tensor | None]:
        """Rotations (1, T, 1, Dh/2) and the mask (T, S), True where a query may see a key; None for a single new
        token that may see every key."""
        cfg = self.cfg
        base, window = cfg.rope_base_of(layer), cfg.window_of(layer)
        made = self._made.get((base, window))
        if made is None:
            start, T = self.start, self.T
            positions = torch.arange(start, start + T, device=self.device)
            rotations = rope_rotations(rope_angles(positions, cfg.d_head, base, cfg.rope_scaling))
            mask = None
            if T > 1 or (window is not None and start >= window):
                keys = torch.arange(start + T, device=self.device)
                mask = keys[None, :] <= positions[:, None]  # query m sees keys 0..m
                if window is not None:
                    mask &= keys[None, :] > positions[:, None] - window  # ... and only the last `window` of them
            made = self._made[(base, window)] = (rotations, mask)
        return made


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.hook_embed = HookPoint()  # the embedding as the first block reads it (Gemma's: scaled)
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

    def forward(self, tokens: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """Logits (B, T, V) for tokens (B, T); with a cache, the tokens follow its `length` positions. Tokens go
        to the model's device first (as TransformerLens does), so the logits and hooked tensors are there."""
        tokens = tokens.to(self.tok_embeddings.weight.device)
        B, T = tokens.shape
        start = kv_cache.length if kv_cache is not None else 0
        if kv_cache is not None and start + T > kv_cache.max_len:
            raise ValueError(f"KV cache holds {kv_cache.max_len} positions; {start + T} needed")
        if kv_cache is not None and T == 1 and self.cfg.plain_llama and not self.hooked():
            return self.step(tokens, kv_cache)  # decoding, with nobody looking: the same maths, less Python
        positions = self.positions(start, T, tokens.device)
        x = self.hook_embed(self.embed(tokens))  # (B, T, D)
        for block in self.blocks:
            x = block(x, positions, kv_cache)
        if kv_cache is not None:
            kv_cache.length += T
        return self.output(self.ln_final(x))  # (B, T, V)

    def embed(self, tokens: Tensor) -> Tensor:
        """Each token's row of the embedding (B, T, D), times `embed_scale` where the model has one (Gemma)."""
        x = self.tok_embeddings(tokens)
        scale = self.cfg.embed_scale
        return x if scale is None else x * torch.tensor(scale, dtype=x.dtype)  # in x's dtype, as transformers does

    def step(self, tokens: Tensor, kv_cache: KVCache) -> Tensor:
        """Logits (B, 1, V) for one new token per row (B, 1) after the cache's positions: `forward`'s maths, for
        decoding when no hook is attached. What it leaves out is Python: no hook points or module lookups (a
        `StepPlan` holds the weights), and each layer's q/k/v and gate/up are read in one product split across
        the CPU's threads (`Product`). Decoding a token reads every weight once, so
        its speed is the memory bandwidth (bench/bench_decode.py prints the fraction); tests check it gives
        forward's logits. Only for Llama's block (`cfg.plain_llama`): other families decode through `forward`."""
        cfg = self.cfg
        B, start = tokens.shape[0], kv_cache.length
        end = start + 1
        H, G, Dh, eps = cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.norm_eps
        nq, nk, F_ = H * Dh, G * Dh, cfg.d_mlp
        parts = torch.get_num_threads() if self.tok_embeddings.weight.device.type == "cpu" else 1
        plan = plan_for(self, parts, lambda: rope_frequencies(cfg.d_head, cfg.rope_base, cfg.rope_scaling))
        rotations = torch.polar(plan.ones, plan.theta * start)  # (Dh/2,): `positions`' turns, the same bits
        first = 0 if cfg.sliding_window is None else max(0, end - cfg.sliding_window)  # the window's first key
        x = F.embedding(tokens[:, 0], plan.embedding)  # (B, D)
        for layer, (ln1, qkv_of, q_norm, k_norm, use_rope, wo, ln2, gate_up_of, w2) in enumerate(plan.layers):
            qkv = qkv_of(rms_norm(x, ln1, eps))  # (B, nq + 2 nk)
            if q_norm is not None:  # Qwen3: q and k normed apart, then turned apart
                q = rms_norm(qkv[:, :nq].view(B, H, Dh), q_norm, eps)
                k = rms_norm(qkv[:, nq:nq + nk].view(B, G, Dh), k_norm, eps)
                q, k = (apply_rope(q, rotations), apply_rope(k, rotations)) if use_rope else (q, k)
            else:  # q and k side by side: turned in one go
                qk = qkv[:, :nq + nk].view(B, H + G, Dh)
                qk = apply_rope(qk, rotations) if use_rope else qk
                q, k = qk[:, :H], qk[:, H:]
            keys, values = kv_cache.k[layer], kv_cache.v[layer]  # (B, G, max_len, Dh)
            keys.select(2, start).copy_(k)
            values.select(2, start).copy_(qkv[:, nq + nk:].view(B, G, Dh))
            z = F.scaled_dot_product_attention(q.unsqueeze(2), keys.narrow(2, first, end - first),
                                               values.narrow(2, first, end - first), enable_gqa=G < H)  # (B, H, 1, Dh)
            x = x + wo(z.view(B, nq))
            gate_up = gate_up_of(rms_norm(x, ln2, eps))  # (B, 2 F)
            x = x + w2(F.silu(gate_up[:, :F_]).mul_(gate_up[:, F_:]))
        kv_cache.length = end
        return plan.head(rms_norm(x, plan.ln_final, eps))[:, None]

    def hooked(self) -> bool:
        """Whether any hook function is attached."""
        return any(map(_FNS, self.hook_points.values()))  # each point's list, looked up in C (decoding asks per token)

    def positions(self, start: int, T: int, device: torch.device | str = "cpu") -> Positions:
        """Each layer's RoPE rotations and causal mask for positions start .. start + T - 1 (`Positions.of`)."""
        return Positions(self.cfg, start, T, device)

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
    def run_with_hooks(self, tokens: Tensor, fwd_hooks: Iterable[tuple[str, HookFn]] = (),
                       kv_cache: KVCache | None = None) -> Tensor:
        """Logits for tokens with hook functions attached for this call only (after the cache's positions, if given)."""
        with self.hooks(fwd_hooks):
            return self(tokens, kv_cache=kv_cache)

    @torch.no_grad()
    def run_with_cache(self, tokens: Tensor, names_filter: NamesFilter = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and a dict of every hooked tensor whose name passes the filter.

        Each entry is its own detached tensor: where two hook points see the same tensor
        (`blocks.3.hook_resid_post` is `blocks.4.hook_resid_pre`) the second is a copy, so
        editing one entry never changes another. The forward never edits a tensor after its
        hook, so the others need no copy.
        """
        store: dict[str, Tensor] = {}
        seen: set[int] = set()

        def save(x: Tensor, hook: HookPoint) -> None:
            x = x.detach()
            storage = x.untyped_storage().data_ptr()
            store[hook.name] = x.clone() if storage in seen else x
            seen.add(storage)

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
