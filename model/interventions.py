"""Interventions on the model, TransformerLens-style: ablation, activation patching, direct logit attribution.

Each intervention is a hook that writes into one activation (TransformerLens's "patch setter":
three lines that copy a value in at an index), attached for one run only. Two things make
them affordable on two cores:

- A run that changes layer l onwards starts at layer l, from the corrupted (or clean) run's
  residual stream entering it: the layers before are the same in every run.
- Runs that start at the same layer go through together as one batch; each batch row has its
  own patch (TransformerLens's `generic_activation_patch` runs one forward per index instead).

Shapes: B batch, T tokens, L layers, H heads, Dh d_head, D d_model, V vocab.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .decompose import frozen_readout, head_w_o, joined
from .transformer import HookFn, Transformer

Metric = Callable[[Tensor], Tensor]  # last-position logits (B, V) -> one number per run (B,)


@torch.no_grad()
def run_from(net: Transformer, layer: int, resid: Tensor, hooks: Sequence[tuple[str, HookFn]] = (),
             last_only: bool = True) -> Tensor:
    """Run blocks layer .. L-1 on resid (B, T, D), the residual stream entering `layer`, with hooks attached for
    this run; logits (B, V) at the last position, or (B, T, V) for every position."""
    weight = net.tok_embeddings.weight
    x = resid.to(dtype=weight.dtype, device=weight.device)  # a trace keeps float32 on the host
    positions = net.positions(0, x.shape[1], x.device)
    with net.hooks(hooks):
        for block in net.blocks[layer:]:
            x = block(x, positions, None)
        if last_only:
            x = x[:, -1:]
        logits = net.output(net.ln_final(x))
    return logits[:, -1] if last_only else logits


def logit_difference(a: int, b: int) -> Metric:
    """logit[a] - logit[b] at the last position: how much more the model says a than b."""
    return lambda logits: logits[:, a] - logits[:, b]


# ---------------------------------------------------------------------------------------
# Ablation


@dataclass(frozen=True)
class Ablation:
    """What to knock out. heads: (layer, head) pairs; attn, mlp: layers whose whole block is removed.
    mode "zero" writes zeros; "mean" writes the activation's mean over the prompt's positions."""

    heads: frozenset[tuple[int, int]] = frozenset()
    attn: frozenset[int] = frozenset()
    mlp: frozenset[int] = frozenset()
    mode: str = "zero"

    def __post_init__(self) -> None:
        if self.mode not in ("zero", "mean"):
            raise ValueError(f"mode must be 'zero' or 'mean', got {self.mode!r}")

    @property
    def empty(self) -> bool:
        return not (self.heads or self.attn or self.mlp)

    @property
    def first_layer(self) -> int:
        return min([l for l, _ in self.heads] + list(self.attn) + list(self.mlp))


def _replace(x: Tensor, index: tuple, mode: str) -> None:
    """x[index] := 0, or its mean over positions (dim 1), in place."""
    if mode == "zero":
        x[index] = 0
    else:
        x[index] = x.mean(dim=1, keepdim=True).expand_as(x)[index]


def ablation_hooks(ablation: Ablation) -> list[tuple[str, HookFn]]:
    """Hooks that carry out the ablation: a head's z, a block's attention or MLP output."""
    hooks: list[tuple[str, HookFn]] = []
    by_layer: dict[int, list[int]] = {}
    for layer, head in ablation.heads:
        by_layer.setdefault(layer, []).append(head)
    for layer, heads in sorted(by_layer.items()):
        def heads_out(z: Tensor, hook, heads=sorted(heads)) -> Tensor:  # z: (B, T, H, Dh)
            z = z.clone()
            _replace(z, (slice(None), slice(None), heads), ablation.mode)
            return z
        hooks.append((f"blocks.{layer}.attn.hook_z", heads_out))
    for names, layers in (("hook_attn_out", ablation.attn), ("hook_mlp_out", ablation.mlp)):
        for layer in sorted(layers):
            def block_out(x: Tensor, hook) -> Tensor:  # (B, T, D)
                x = x.clone()
                _replace(x, (slice(None),), ablation.mode)
                return x
            hooks.append((f"blocks.{layer}.{names}", block_out))
    return hooks


@dataclass(frozen=True)
class LayerSweep:
    """Each layer's attention block and MLP ablated in turn: the prompt's mean next-token loss and the logit
    difference a - b at the last position, per layer (L,), and without any ablation."""

    loss_attn: Tensor
    loss_mlp: Tensor
    diff_attn: Tensor
    diff_mlp: Tensor
    loss: float
    diff: float


def _loss_and_difference(logits: Tensor, ids: Tensor, a: int, b: int) -> tuple[Tensor, Tensor]:
    """Mean next-token loss over the prompt (B,) (0 for a one-token prompt) and logit[a] - logit[b] at its end (B,),
    from logits (B, T, V)."""
    if len(ids) > 1:
        loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[None, 1:].expand(len(logits), -1),
                               reduction="none").mean(-1)
    else:
        loss = torch.zeros(len(logits))
    return loss, logits[:, -1, a] - logits[:, -1, b]


@torch.no_grad()
def layer_sweep(net: Transformer, resid: Tensor, ids: Tensor, mode: str, a: int, b: int
                ) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Ablate each layer's attention output and, separately, its MLP output (`mode` as in `Ablation`), one layer
    at a time: yields (layer, loss (2,), difference (2,)) with row 0 the attention block knocked out and row 1 the
    MLP, after (-1, loss (1,), difference (1,)) for the run without ablation. resid: (L + 1, T, D) the residual
    entering each layer (each run starts at its layer); ids: (T,) the prompt. Collect with `collect_layer_sweep`."""
    base = run_from(net, 0, resid[0][None], last_only=False).float()
    yield -1, *_loss_and_difference(base, ids, a, b)
    for layer in range(net.cfg.n_layers):
        x = resid[layer][None].expand(2, -1, -1).clone()
        knock = Ablation(attn=frozenset([layer]), mlp=frozenset([layer]), mode=mode)
        hooks = [(name, _only_row(row, fn)) for row, (name, fn) in enumerate(ablation_hooks(knock))]
        logits = run_from(net, layer, x, hooks, last_only=False).float()
        yield layer, *_loss_and_difference(logits, ids, a, b)


def _only_row(row: int, fn: HookFn) -> HookFn:
    """The hook applied to one batch row only."""
    def one_row(x: Tensor, hook) -> Tensor:
        x = x.clone()
        x[row : row + 1] = fn(x[row : row + 1], hook)
        return x
    return one_row


def collect_layer_sweep(steps: Iterable[tuple[int, Tensor, Tensor]], n_layers: int) -> LayerSweep:
    """`layer_sweep`'s steps gathered per layer."""
    loss, diff = torch.empty(2, n_layers), torch.empty(2, n_layers)
    base_loss = base_diff = 0.0
    for layer, l, d in steps:
        if layer < 0:
            base_loss, base_diff = float(l[0]), float(d[0])
        else:
            loss[:, layer], diff[:, layer] = l, d
    return LayerSweep(loss[0], loss[1], diff[0], diff[1], base_loss, base_diff)


# ---------------------------------------------------------------------------------------
# Activation patching: clean activations written into the corrupted run, one patch per batch row


@dataclass(frozen=True)
class Sweep:
    """One kind of activation-patching sweep: which hook, and what one patch covers."""

    name: str
    hook: str  # e.g. "hook_resid_pre", "hook_attn_out", "hook_mlp_out", "attn.hook_z"
    per: str  # "position": each (layer, position); "head": each (layer, head), every position


SWEEPS = {
    "resid": Sweep("residual stream", "hook_resid_pre", "position"),
    "attn": Sweep("attention output", "hook_attn_out", "position"),
    "mlp": Sweep("MLP output", "hook_mlp_out", "position"),
    "heads": Sweep("each head's output", "attn.hook_z", "head"),
}


def patch_setter(sweep: Sweep, clean: Tensor, indices: Sequence[int]) -> HookFn:
    """A hook writing the clean activation (T, ...) into batch row b at indices[b]: a position, or a head."""
    rows = torch.arange(len(indices))
    where = torch.tensor(list(indices))

    def setter(x: Tensor, hook) -> Tensor:
        x = x.clone()
        if sweep.per == "position":
            x[rows, where] = clean[where]  # (B, D) at each row's own position
        else:
            x[rows, :, where] = clean[:, where].transpose(0, 1)  # (B, T, Dh) for each row's own head
        return x
    return setter


def sweep_size(sweep: Sweep, n_layers: int, n_tokens: int, n_heads: int) -> tuple[int, int]:
    """(rows, columns) of the sweep's result: layers by positions, or layers by heads."""
    return n_layers, n_tokens if sweep.per == "position" else n_heads


def sweep_cost(sweep: Sweep, n_layers: int, n_tokens: int, n_heads: int) -> int:
    """Token-layers the sweep runs (each patch from its layer to the top): what its time is proportional to."""
    columns = n_tokens if sweep.per == "position" else n_heads
    return columns * n_tokens * n_layers * (n_layers + 1) // 2


@dataclass(frozen=True)
class PatchingRuns:
    """What a patching sweep starts from: the clean and corrupted runs' metric, the clean activation at the sweep's
    hook in each layer, (T, D) or (T, H, Dh), and the corrupted residual entering each layer (T, D)."""

    clean: float
    corrupted: float
    clean_acts: list[Tensor]
    corrupted_resid: list[Tensor]


@torch.no_grad()
def patching_runs(net: Transformer, clean_ids: Sequence[int], corrupted_ids: Sequence[int], sweep: Sweep,
                  metric: Metric) -> PatchingRuns:
    """The clean and the corrupted run, keeping what `patching_sweep` needs."""
    L = net.cfg.n_layers
    wanted = [f"blocks.{l}.{sweep.hook}" for l in range(L)]
    clean_logits, clean = net.run_with_cache(torch.tensor([list(clean_ids)]), names_filter=wanted)
    corrupt_logits, corrupt = net.run_with_cache(torch.tensor([list(corrupted_ids)]), names_filter=r"hook_resid_pre$")
    return PatchingRuns(float(metric(clean_logits[:, -1])[0]), float(metric(corrupt_logits[:, -1])[0]),
                        [clean[name][0] for name in wanted],
                        [corrupt[f"blocks.{l}.hook_resid_pre"][0] for l in range(L)])


@torch.no_grad()
def patching_sweep(net: Transformer, sweep: Sweep, corrupted_resid: Sequence[Tensor], clean: Sequence[Tensor],
                   metric: Metric, batch: int = 64) -> Iterator[tuple[int, Tensor]]:
    """For each layer, the metric (columns,) of every patch at that layer, yielded layer by layer.

    corrupted_resid[l]: (T, D) the corrupted run's residual entering layer l; clean[l]: the clean run's
    activation at the sweep's hook in layer l, (T, D) or (T, H, Dh).
    """
    T = corrupted_resid[0].shape[0]
    columns = T if sweep.per == "position" else net.cfg.n_heads
    for layer in range(net.cfg.n_layers):
        values = []
        for start in range(0, columns, batch):
            indices = list(range(start, min(columns, start + batch)))
            x = corrupted_resid[layer][None].expand(len(indices), -1, -1).clone()
            setter = patch_setter(sweep, clean[layer], indices)
            logits = run_from(net, layer, x, [(f"blocks.{layer}.{sweep.hook}", setter)])
            values.append(metric(logits))
        yield layer, torch.cat(values)


# ---------------------------------------------------------------------------------------
# Direct logit attribution


@dataclass(frozen=True)
class Attribution:
    """The final residual at the last position split into parts, each projected onto a logit direction."""

    labels: list[str]  # "embed", then "L{l} attn", "L{l} mlp" for each layer
    parts: Tensor  # (1 + 2L,) each part's share of the logit difference
    heads: Tensor  # (L, H) each head's share (they sum to its layer's attention part)
    total: float  # the model's own logit difference
    scale: float  # the final RMSNorm's divisor at the last position, frozen


@torch.no_grad()
def direct_logit_attribution(net: Transformer, cache: dict[str, Tensor], direction: Tensor) -> Attribution:
    """Each component's contribution to direction . logits at the last position, through the final norm's frozen
    scale (ln_final.hook_scale) and gain: part @ (gain * direction) / scale. The parts sum to the model's own
    direction . logits, because the final norm is linear once its scale is fixed and the model has no biases. A
    layer's heads sum to its attention part: in Gemma through the post-attention norm with its scale frozen.
    cache: from run_with_cache with hook_embed, hook_attn_out, hook_mlp_out, attn.hook_z, ln_final.hook_scale."""
    cfg = net.cfg
    scale = cache["ln_final.hook_scale"][0, -1]  # (1,)
    readout = frozen_readout(net, direction, scale)  # (D,)
    parts = [cache["hook_embed"][0, -1].float() @ readout]  # float32 for a bfloat16 or float16 model's activations
    labels, heads = ["embed"], []
    for l in range(cfg.n_layers):
        parts += [cache[f"blocks.{l}.hook_attn_out"][0, -1].float() @ readout,
                  cache[f"blocks.{l}.hook_mlp_out"][0, -1].float() @ readout]
        labels += [f"L{l} attn", f"L{l} mlp"]
        z = cache[f"blocks.{l}.attn.hook_z"][0, -1]  # (H, Dh)
        writes = torch.einsum("hd,mhd->hm", z.float(), head_w_o(net, l))  # (H, D): each head's slice of W_O
        heads.append(joined(net, l, writes, writes.sum(0)) @ readout)  # Gemma: through ln1_post, scale frozen
    final = net.ln_final(cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][0, -1])  # (D,) as the model reads it out
    return Attribution(labels, torch.stack(parts).cpu(), torch.stack(heads).cpu(),
                       float(final.float() @ direction.float()), float(scale))


ATTRIBUTION_HOOKS = r"hook_embed$|hook_attn_out$|hook_mlp_out$|attn\.hook_z$|ln_final\.hook_scale$|hook_resid_post$"

__all__ = [
    "ATTRIBUTION_HOOKS", "Ablation", "Attribution", "LayerSweep", "SWEEPS", "Sweep", "ablation_hooks",
    "collect_layer_sweep", "direct_logit_attribution", "layer_sweep", "logit_difference", "patch_setter",
    "PatchingRuns", "patching_runs", "patching_sweep", "run_from", "sweep_cost", "sweep_size",
]
