"""Views of one layer or block, recomputed from a stored residual stream by running the model's own code.

A trace keeps the residual stream entering every layer; everything else a tab shows for one layer (its q, k, v and
pattern, the residual after its attention block, its MLP's activations, the keys and values a KV cache would hold)
is recomputed from there when asked. Nothing here copies a block's forward: `capture` attaches hooks to the block it
reads, runs that block on the residual entering it, and ends the run as soon as the last wanted hook has fired (as
TransformerLens's `stop_at_layer` does for layers), so a view costs only the part of the block it needs and always
equals the forward's own hooks.

Shapes: T tokens, D d_model, H heads, G key/value heads, Dh d_head, F MLP width, V vocab, L layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .lens import lens_logits
from .transformer import HookPoint, KVCache, Transformer

LAYER_HOOKS = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_pattern")
BLOCK_HOOKS = ("ln1.hook_scale", "hook_attn_out", "hook_resid_mid", "ln2.hook_scale", "mlp.hook_pre",
               "mlp.hook_pre_linear", "mlp.hook_post", "hook_mlp_out")


class _Enough(Exception):
    """Raised by the last wanted hook: the rest of the block is not needed."""


@torch.no_grad()
def capture(net: Transformer, layer: int, resid: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    """Run block `layer` on resid (B, T, D), the residual stream entering it, and return what its hook points
    `names` (relative to the block, e.g. "attn.hook_q") see; the run stops after the last of them in forward order."""
    prefix = f"blocks.{layer}."
    order = [name[len(prefix):] for name in net.hook_names() if name.startswith(prefix)]
    missing = [name for name in names if name not in order]
    if missing:
        raise KeyError(f"no hook point named {prefix}{missing[0]}")
    last = max(names, key=order.index)
    store: dict[str, Tensor] = {}

    def keep(x: Tensor, hook: HookPoint) -> None:
        name = hook.name[len(prefix):]
        store[name] = x.detach()
        if name == last:
            raise _Enough

    weight = net.tok_embeddings.weight
    resid = resid.to(dtype=weight.dtype, device=weight.device)  # a trace keeps float32 on the host
    try:
        with net.hooks([(prefix + name, keep) for name in names]):
            net.blocks[layer](resid, net.positions(0, resid.shape[1], resid.device), None)
    except _Enough:
        pass
    return store


def layer_tensors(net: Transformer, resid: Tensor, layer: int) -> dict[str, Tensor]:
    """One layer's q, k, v (before RoPE), rot_q, rot_k and attention pattern from the residual entering it (T, D):
    q (T, H, Dh), k and v (T, G, Dh), pattern (H, T, T). q and k are what RoPE turns: with Qwen3's q/k norms,
    the normed ones (hook_q and hook_k, as in TransformerLens, are the projections before the norms)."""
    norms = ("attn.q_norm.hook_normalized", "attn.k_norm.hook_normalized") if net.cfg.qk_norm else ()
    seen = capture(net, layer, resid[None], LAYER_HOOKS + norms)
    out = {name.split("hook_")[-1]: seen[name][0] for name in LAYER_HOOKS}
    if norms:
        attn = net.blocks[layer].attn
        out["q"] = seen[norms[0]][0] * attn.q_norm.weight
        out["k"] = seen[norms[1]][0] * attn.k_norm.weight
    return out


def resid_mid(net: Transformer, resid: Tensor) -> Tensor:
    """The residual after each attention block (L, T, D), from the residual entering each layer (L + 1, T, D)."""
    return torch.stack([capture(net, l, resid[l][None], ["hook_resid_mid"])["hook_resid_mid"][0]
                        for l in range(net.cfg.n_layers)])


def prefilled_cache(net: Transformer, resid: Tensor, extra: int) -> KVCache:
    """A KV cache holding the keys (after RoPE) and values of the T positions whose residual streams are given
    (L + 1, T, D), with room for `extra` more tokens: what a forward over the prompt would have left in it."""
    T = resid.shape[1]
    kv_cache = KVCache.for_model(net, 1, T + extra)
    for l in range(net.cfg.n_layers):
        seen = capture(net, l, resid[l][None], ["attn.hook_v", "attn.hook_rot_k"])
        kv_cache.k[l][:, :, :T] = seen["attn.hook_rot_k"].transpose(1, 2)  # (1, G, T, Dh)
        kv_cache.v[l][:, :, :T] = seen["attn.hook_v"].transpose(1, 2)
    kv_cache.length = T
    return kv_cache


@dataclass(frozen=True)
class BlockView:
    """One layer at one position, recomputed from the trace (D d_model, F MLP width)."""

    layer: int
    position: int
    resid_pre: np.ndarray  # (D,) the residual entering the layer
    scale1: float  # ln1's divisor, sqrt(mean(x^2) + eps)
    gain1: np.ndarray  # (D,)
    attn_out: np.ndarray  # (D,)
    resid_mid: np.ndarray  # (D,)
    scale2: float
    gain2: np.ndarray  # (D,)
    gate: np.ndarray  # (F,) w1 x, before the activation (SiLU; Gemma's GELU)
    up: np.ndarray  # (F,) w3 x
    post: np.ndarray  # (F,) act(gate) * up
    w2_norms: np.ndarray  # (F,) the length of each neuron's write-out as it joins the residual: its column of w2
    #   (Gemma: through ln2_post with the scale frozen, w2[:, i] * gain / scale), so post * column sums to mlp_out
    mlp_out: np.ndarray  # (D,)
    eps: float
    post_scale: float | None = None  # Gemma: ln2_post's divisor at this token


def block_view(net: Transformer, resid: Tensor, layer: int, position: int) -> BlockView:
    """Inside one block at one position: the residual, both RMSNorms (scale and gain), and the SwiGLU MLP's gate,
    up and post activations with each neuron's write-out size, from the residual entering the layer (T, D)."""
    block = net.blocks[layer]
    hooks = BLOCK_HOOKS + (("ln2_post.hook_scale",) if block.ln2_post is not None else ())
    seen = {name: t[0, position] for name, t in capture(net, layer, resid[None], hooks).items()}
    columns, post_scale = block.mlp.w2.weight.float(), None  # (D, F)
    if block.ln2_post is not None:  # Gemma: each neuron's column as it joins the residual, the norm's scale frozen
        post_scale = float(seen["ln2_post.hook_scale"])
        columns = columns * block.ln2_post.weight.float()[:, None] / post_scale
    return BlockView(
        layer, position, own(resid[position]), float(seen["ln1.hook_scale"]), own(block.ln1.weight),
        own(seen["hook_attn_out"]), own(seen["hook_resid_mid"]), float(seen["ln2.hook_scale"]),
        own(block.ln2.weight), own(seen["mlp.hook_pre"]), own(seen["mlp.hook_pre_linear"]), own(seen["mlp.hook_post"]),
        own(columns.norm(dim=0)), own(seen["hook_mlp_out"]), net.cfg.norm_eps, post_scale)


# ---------------------------------------------------------------------------------------
# The weights, read


@dataclass(frozen=True)
class EmbeddingView:
    """Tokens' embedding rows and what they say (n tokens, k neighbours)."""

    tokens: np.ndarray  # (n,)
    rows: np.ndarray  # (n, D)
    norms: np.ndarray  # (V,) every token's embedding norm
    nearest: np.ndarray  # (n, k) nearest other tokens by cosine
    cosine: np.ndarray  # (n, k)
    output: np.ndarray  # (n, k) most likely tokens when the row is read out through the final norm
    output_p: np.ndarray  # (n, k)
    self_rank: np.ndarray  # (n,) rank of the token itself in that read-out (0 = it predicts itself)
    pca: np.ndarray  # (n, 2) the rows projected on their first two principal components
    explained: np.ndarray  # (2,) share of variance each explains


@torch.no_grad()
def embedding_view(net: Transformer, tokens: list[int], norms: np.ndarray, k: int = 10) -> EmbeddingView:
    """Each token's embedding row, its nearest tokens by cosine, and the same row read as an output direction
    (through the final norm, as the logit lens's "embed" row); every token's embedding norm (`embedding_norms`,
    computed once by the caller); a 2-D PCA."""
    weight = net.tok_embeddings.weight.float()  # (V, D); tied: also the unembedding
    rows = weight[tokens]  # (n, D)
    every = torch.from_numpy(norms).clamp_min(1e-12)  # F.normalize's x / max(|x|, eps), without a normalised copy
    cosine = (rows @ weight.T) / (rows.norm(dim=-1, keepdim=True).clamp_min(1e-12) * every)
    cos_top = cosine.topk(k + 1, dim=-1)  # the token itself comes first
    out = lens_logits(net, rows)  # (n, V): the embedding through the final norm and the unembedding
    out_top = out.softmax(-1).topk(k, dim=-1)
    self_rank = (out > out.gather(-1, torch.tensor(tokens)[:, None])).sum(-1)
    centred = rows - rows.mean(0, keepdim=True)
    if len(tokens) >= 3:
        _, singular, vt = torch.linalg.svd(centred, full_matrices=False)
        pca, explained = centred @ vt[:2].T, singular[:2] ** 2 / (singular**2).sum()
    else:
        pca, explained = torch.zeros(len(tokens), 2), torch.zeros(2)
    return EmbeddingView(np.array(tokens), own(rows), norms, cos_top.indices[:, 1:].numpy(),
                         own(cos_top.values[:, 1:]), out_top.indices.numpy(), own(out_top.values),
                         self_rank.numpy(), own(pca), own(explained))


def embedding_norms(net: Transformer) -> np.ndarray:
    """Every token's embedding norm (V,)."""
    return own(net.tok_embeddings.weight.float().norm(dim=-1))


def norm_names(net: Transformer) -> list[str]:
    """Each layer's RMSNorms over d_model in forward order (ln1, ln2; Gemma: ln1, ln1_post, ln2, ln2_post)."""
    return ["ln1", "ln1_post", "ln2", "ln2_post"] if net.cfg.post_norms else ["ln1", "ln2"]


def norm_gains(net: Transformer) -> np.ndarray:
    """Every RMSNorm's gain over d_model: each layer's (`norm_names`), then the final norm's: (n L + 1, D)."""
    gains = [getattr(b, name).weight for b in net.blocks for name in norm_names(net)] + [net.ln_final.weight]
    return own(torch.stack(gains))


def parameter_count(net: Transformer) -> int:
    """The model's parameters, counted from its weights (a tied matrix once)."""
    return sum(p.numel() for p in net.parameters())


def embedding_parameter_count(net: Transformer) -> int:
    """The parameters in the token embedding and, when not tied to it, the unembedding: what Kaplan et al.'s N
    leaves out."""
    n = net.tok_embeddings.weight.numel()
    return n if net.output.weight is net.tok_embeddings.weight else n + net.output.weight.numel()


def own(t: Tensor) -> np.ndarray:
    """A float32 copy of a slice, as numpy: a view would keep the whole tensor it came from alive (a trace's
    next-token logits would hold every position's, 100 MB at 512 tokens)."""
    return t.detach().float().cpu().numpy().copy()
