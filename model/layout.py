"""How the weights are laid out for decoding one token at a time, and what `Transformer.step` reads.

Decoding a token reads every weight once, so its speed is the memory bandwidth. `lay_out_for_decoding` stores the
weights whose output is wider than their input transposed (q/k/v side by side, gate/up side by side, the head), as
views the modules keep, so values, hooks and `state_dict` are unchanged; `Product` reads a few linears as one
product split across the CPU's threads; `StepPlan` gathers a model's products once, and `plan_for` keeps one per
model (a cache keyed by the model, made again when a weight is replaced, converted or moved: nothing is hooked
into PyTorch). `transformer.py` holds the maths; this module only how the step reads the weights.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Product:
    """A few linears read as one product on the CPU's threads: their outputs side by side (B, sum of widths),
    biases added, for a few rows x (B, K). A weight stored transposed (`lay_out_for_decoding`: its (K, n)
    transpose contiguous) is split into `parts` blocks along K, one per thread, read by one batched product and
    the partial sums added: reading whole rows of the transpose streams the memory faster than short dot products
    do, and MKL runs a one-row product on one thread. Weights whose transposes lie side by side in one buffer are
    one product. A weight stored as (n, K) is split into row blocks instead."""

    def __init__(self, linears: tuple[nn.Linear, ...], parts: int) -> None:
        weights = [linear.weight for linear in linears]
        joined = beside(weights) if parts > 1 else None
        self.blocks = []  # (parts, K / parts, n) blocks of a transpose, (parts, n / parts, K) row blocks, or (n, K)
        for w in [joined] if joined is not None else weights:
            n, K = w.shape
            if parts > 1 and w.T.is_contiguous() and K % parts == 0:
                self.blocks.append(("columns", w.T.view(parts, K // parts, n)))
            elif parts > 1 and w.is_contiguous() and n % parts == 0:
                self.blocks.append(("rows", w.view(parts, n // parts, K)))
            else:
                self.blocks.append(("whole", w))
        self.biases = [linear.bias for linear in linears] if linears[0].bias is not None else []

    def __call__(self, x: Tensor) -> Tensor:
        B, K = x.shape
        outs = []
        for kind, w in self.blocks:
            if kind == "whole":
                outs.append(F.linear(x, w))
            elif kind == "columns":  # (parts, B, K / parts) @ (parts, K / parts, n), summed over the parts
                parts = w.shape[0]
                x = x.contiguous()
                y = torch.bmm(x.as_strided((parts, B, K // parts), (K // parts, K, 1)), w)  # (parts, B, n)
                outs.append(torch.add(*y.unbind(0)) if parts == 2 else y.sum(0))  # add: a few µs less than sum
            else:
                parts, rows, _ = w.shape
                y = torch.bmm(w, x.T.expand(parts, K, B))  # (parts, rows, B); strides (0, 1, K) suit MKL's kernel
                outs.append(y.view(1, parts * rows) if B == 1 else y.view(parts * rows, B).T.contiguous())
        y = outs[0] if len(outs) == 1 else torch.cat(outs, -1)
        if self.biases:
            y = y + (self.biases[0] if len(self.biases) == 1 else torch.cat(self.biases))
        return y


class StepPlan:
    """What `Transformer.step` reads, gathered once: each layer's weights as `Product`s and its norm gains, so a
    decoding step makes no module lookups, and each RoPE pair's frequency. `plan_for` makes it again when it is
    stale: a parameter replaced on any module, or its data elsewhere (converted, moved, `.data` set), or another
    thread count. An in-place edit needs nothing: the plan reads views of the weights."""

    def __init__(self, net: nn.Module, parts: int, theta: Tensor) -> None:
        cfg = net.cfg
        self.layers = []
        for block in net.blocks:
            attn, mlp = block.attn, block.mlp
            norms = (attn.q_norm.weight, attn.k_norm.weight) if cfg.qk_norm else (None, None)
            self.layers.append((block.ln1.weight, Product((attn.wq, attn.wk, attn.wv), parts), *norms,
                                attn.use_rope, Product((attn.wo,), parts), block.ln2.weight,
                                Product((mlp.w1, mlp.w3), parts), Product((mlp.w2,), parts)))
        self.embedding, self.ln_final = net.tok_embeddings.weight, net.ln_final.weight
        self.theta = theta.to(self.embedding.device)  # each pair's frequency: a step's turn is polar(1, pos * theta)
        self.ones = torch.ones_like(self.theta)
        self.head = Product((net.output,), parts)
        self.parts = parts
        # Every parameter slot of every module (None too: a bias added later counts), the parameter in it and
        # where its data is: what `fresh` compares.
        self.slots = [(module._parameters, name, param, None if param is None else param.data_ptr())
                      for module in net.modules() for name, param in module._parameters.items()]

    def fresh(self, parts: int) -> bool:
        """Whether the model still holds the same parameters, with their data where they were, and the thread
        count is the same (measured: 68 µs over SmolLM2's 484 slots, 0.3% of a 23 ms token)."""
        return parts == self.parts and all(
            slots.get(name) is param and (param is None or param.data_ptr() == at)
            for slots, name, param, at in self.slots)


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its plan (a cache; not copied with it)


def plan_for(net: nn.Module, parts: int, theta: Callable[[], Tensor]) -> StepPlan:
    """The model's plan for `parts` threads, made again if stale (`StepPlan.fresh`); theta() gives the RoPE
    frequencies when one is made."""
    plan = _PLANS.get(net)
    if plan is None or not plan.fresh(parts):
        plan = _PLANS[net] = StepPlan(net, parts, theta())
    return plan


def beside(weights: list[Tensor]) -> Tensor | None:
    """The weights as one (sum of n, K) matrix when their transposes lie side by side in one (K, sum of n)
    buffer (`lay_out_for_decoding`), else None."""
    first = weights[0]
    if len(weights) == 1:
        return first
    total, K = sum(w.shape[0] for w in weights), first.shape[1]
    storage, at = first.untyped_storage().data_ptr(), first.data_ptr()
    for w in weights:
        if (w.shape[1] != K or w.stride() != (1, total) or w.data_ptr() != at
                or w.untyped_storage().data_ptr() != storage):
            return None
        at += w.shape[0] * w.element_size()
    return first.as_strided((total, K), (1, total))


def lay_out_for_decoding(net: nn.Module) -> nn.Module:
    """Store the weights whose output is wider than their input transposed, (K, n) in memory: a layer's q, k and v
    side by side in one buffer, its gate and up in another, and the head; the modules' weights become (n, K) views
    of them. wo and w2 keep their rows, which a one-row product reads faster at their shapes (measured: 44 vs
    50 µs and 117 vs 133 µs; gate/up 210 vs 245 µs the other way). A tied embedding is the head, so it is
    transposed too: its rows are then read with a stride (a prompt's 512 rows in about 2 ms), and callers that
    want every row normalised divide by precomputed norms instead of copying the matrix. Nothing else changes:
    values, names, hooks and `state_dict` are as before, and no more memory is taken (each transpose is made beside
    its weights, which are then freed). `Transformer.step` reads this layout fastest (`Product`); a prompt's
    forward runs as fast on it (MKL reads either). A conversion (`net.to(...)`) or a copy
    undoes the layout, and the step then reads the weights as they are, a little slower. safetensors' `save_file`
    wants contiguous tensors: save `{k: v.contiguous() ...}`, as transformers does."""
    with torch.no_grad():
        tied = net.output.weight is net.tok_embeddings.weight
        groups = []
        for block in net.blocks:
            attn, mlp = block.attn, block.mlp
            groups += [(attn.wq, attn.wk, attn.wv), (mlp.w1, mlp.w3)]  # wo and w2 read their rows faster
        for group in groups + [(net.output,)]:
            buffer = torch.cat([linear.weight.T for linear in group], dim=1)  # (K, sum of n), contiguous
            start = 0
            for linear in group:
                n = linear.weight.shape[0]
                linear.weight = nn.Parameter(buffer[:, start:start + n].T, requires_grad=False)
                start += n
        if tied:
            net.tok_embeddings.weight = net.output.weight
    return net
