"""The residual stream as a sum of components, read through norms whose scale is frozen at one run's value.

An RMSNorm divides by its input's RMS; once that divisor is fixed at this run's, the norm is linear, and every
reading of the residual stream splits exactly into its components' readings. Direct logit attribution reads the
stream through the final norm and the unembedding (`frozen_readout`), the routes read each head's part through its
slice of W_O (`head_w_o`), and the score split reads q and k through the attention norm (`frozen_norm`) over the
components the residual entering a layer is made of (`residual_components`). Each function is used by all three.
Where a block norms its attention's or MLP's output again before adding it (Gemma's ln1_post and ln2_post), heads'
and neurons' parts join the residual through that norm with its scale frozen at the whole output's (`joined`),
so they still sum to hook_attn_out and hook_mlp_out.

Shapes: L layers, H query heads, T tokens, D d_model, Dh head size, C components.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .transformer import RMSNorm, Transformer, rms_scale


def head_w_o(net: Transformer, layer: int) -> Tensor:
    """Layer `layer`'s output projection split by query head: (D, H, Dh), head h's slice is [:, h] (float32)."""
    cfg = net.cfg
    return net.blocks[layer].attn.wo.weight.float().view(cfg.d_model, cfg.n_heads, cfg.d_head)


def frozen_readout(net: Transformer, direction: Tensor, final_scale: Tensor | float) -> Tensor:
    """The final norm with its scale frozen, folded into a direction (D,): gain * direction / scale, so that
    part . readout is a residual part's direct effect on direction . logits (direction: an unembedding difference),
    and the unembedding of readout is a part's direct logits (direction: the part itself; the norm is diagonal)."""
    return net.ln_final.weight.float() * direction.float() / final_scale


@torch.no_grad()
def residual_components(resid: Tensor, resid_mid: Tensor, layer: int) -> tuple[list[str], Tensor]:
    """The residual entering `layer` (T, D) as the sum of its components (C, T, D): the embedding, then each
    earlier layer's attention output (resid_mid - resid_pre) and MLP output (resid_post - resid_mid).
    resid (L + 1, T, D) and resid_mid (L, T, D) from one run."""
    labels, parts = ["embed"], [resid[0].float()]
    for l in range(layer):
        labels += [f"L{l} attn", f"L{l} mlp"]
        parts += [resid_mid[l].float() - resid[l].float(), resid[l + 1].float() - resid_mid[l].float()]
    return labels, torch.stack(parts)


def joined(net: Transformer, layer: int, parts: Tensor, whole: Tensor, post: str = "ln1_post") -> Tensor:
    """Parts (..., D) of layer `layer`'s attention output (`post="ln2_post"`: its MLP output) as they join the
    residual, when the raw output they sum to is `whole` (D,) or (T, D) broadcasting against parts: through the
    block's post-norm with its scale frozen at the whole's (Gemma), or as they are (float32) where it has none."""
    norm = getattr(net.blocks[layer], post)
    return parts.float() if norm is None else frozen_norm(parts, whole, norm)


def frozen_norm(parts: Tensor, whole: Tensor, norm: RMSNorm) -> Tensor:
    """Each part (..., T, D) as the norm reads it when its input is `whole` (T, D): divided by the whole's RMS,
    frozen, and multiplied by the gain. The parts' readings sum to norm(whole)."""
    return parts.float() / rms_scale(whole.float(), norm.eps) * norm.weight.float()
