"""Decoding by contrast, each written from its paper and checked against it: DoLa and contrastive search.

- `dola` (Chuang et al. 2023) contrasts the final layer with the premature layer of largest Jensen-Shannon
  divergence, within the tokens the final layer finds plausible; the candidate layers are transformers'
  (`dola_candidate_layers`).
- `contrastive` (Su et al. 2022) scores the top-k candidates by (1 - alpha) p(v) - alpha max_j cos(h_v, h_j).

Shapes: T tokens, V vocab, D d_model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .decoding import Pause, no_pause
from .lens import lens_logits
from .sampling import repetition_penalty
from .transformer import KVCache, Transformer


def _exit_names(layers: Sequence[int]) -> dict[int, str]:
    """The hook holding the residual after each layer (0 = after the embedding)."""
    return {layer: "hook_embed" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post" for layer in layers}


def jensen_shannon(p_logits: Tensor, q_logits: Tensor) -> float:
    """JSD between softmax(p) and softmax(q), in nats."""
    return float(_jensen_shannon_rows(p_logits, q_logits[None])[0])


def _jensen_shannon_rows(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """JSD in nats between softmax(p) (V,) and each row of softmax(q) (n, V): (n,)."""
    p, q = F.softmax(p_logits.float(), -1)[None], F.softmax(q_logits.float(), -1)
    m = 0.5 * (p + q)
    return 0.5 * (torch.special.xlogy(p, p) - torch.special.xlogy(p, m)).sum(-1) + \
        0.5 * (torch.special.xlogy(q, q) - torch.special.xlogy(q, m)).sum(-1)


def dola_candidate_layers(n_layers: int, tied: bool) -> dict[str, list[int]]:
    """transformers' `dola_layers="low"` and `"high"` candidate sets (0 = the embedding, l = after block l - 1). With
    tied embeddings the embedding's early exit is nearly an identity, so "low" starts at layer 2 (1 for a 2-layer
    model); past 40 layers each set is capped at 10 layers. A set the rule leaves empty (low, for a 3-layer tied
    model) is left out."""
    start = 0 if not tied else 2 if n_layers > 2 else 1 if n_layers == 2 else 0
    half = n_layers // 2
    if start == half:
        low = [start]
    else:
        low = list(range(start, half, 2)) if n_layers <= 40 else list(range(start, 20, 2))
    high = list(range(half, n_layers, 2)) if n_layers <= 40 else list(range(n_layers - 20, n_layers, 2))
    return {name: layers for name, layers in (("low", low), ("high", high)) if layers}


@dataclass
class ContrastStep:
    token: int
    premature: int  # DoLa: the layer contrasted with (-1 for contrastive search)
    divergence: float  # DoLa: its Jensen-Shannon divergence from the final layer; contrastive: the chosen max cos
    plain: int  # what greedy decoding would have taken


@torch.no_grad()
def dola(net: Transformer, prompt: Sequence[int], max_new_tokens: int, layers: Sequence[int], alpha: float = 0.1,
         stop_ids: Sequence[int] = (), repetition: float = 1.0, pause: Pause = no_pause) -> list[ContrastStep]:
    """DoLa, greedy: at each step the premature layer M with the largest JSD from the final layer, then
    argmax over {x : p_N(x) >= alpha max p_N} of log p_N(x) - log p_M(x), after transformers' repetition penalty
    on those contrast scores (prompt and output counted; 1.0 = off). One forward per token with the KV cache."""
    names = _exit_names(layers)
    store: dict[str, Tensor] = {}

    def keep(x: Tensor, hook) -> None:
        store[hook.name] = x[0, -1]

    hooks = [(name, keep) for name in set(names.values())]
    kv_cache = KVCache.for_model(net, 1, len(prompt) + max_new_tokens)
    tokens, steps, history = torch.tensor([list(prompt)]), [], list(prompt)
    for _ in range(max_new_tokens):
        final = net.run_with_hooks(tokens, hooks, kv_cache=kv_cache)[0, -1]
        early = lens_logits(net, torch.stack([store[names[layer]] for layer in layers]))  # (n, V): one matmul
        divergence = _jensen_shannon_rows(final, early)
        best = int(divergence.argmax())
        log_final, log_early = F.log_softmax(final.float(), -1), F.log_softmax(early[best].float(), -1)
        plausible = log_final >= math.log(alpha) + log_final.max()
        contrast = torch.where(plausible, log_final - log_early, torch.tensor(float("-inf")))
        contrast = repetition_penalty(contrast, torch.tensor(history), repetition)
        token = int(contrast.argmax())
        steps.append(ContrastStep(token, layers[best], float(divergence[best]), int(final.argmax())))
        if token in set(stop_ids):
            break
        tokens = torch.tensor([[token]])
        history.append(token)
        pause()  # between two tokens (`model.decoding`)
    return steps


@torch.no_grad()
def contrastive(net: Transformer, prompt: Sequence[int], max_new_tokens: int, k: int, alpha: float,
                stop_ids: Sequence[int] = (), pause: Pause = no_pause) -> list[ContrastStep]:
    """Contrastive search: among the top-k next tokens, the one maximising (1 - alpha) p(v) - alpha max_j cos(h_v, h_j),
    h being the last layer's normalised hidden state (what the unembedding reads) and j the earlier positions.
    The k candidates run as one batch of k rows over a copy of the KV cache; the chosen row's cache goes on."""
    hidden: dict[str, Tensor] = {}

    def keep(x: Tensor, hook) -> None:
        hidden["h"] = x * net.ln_final.weight  # (B, T, D): the unembedding's input

    hooks = [("ln_final.hook_normalized", keep)]
    kv_cache = KVCache.for_model(net, 1, len(prompt) + max_new_tokens)
    logits = net.run_with_hooks(torch.tensor([list(prompt)]), hooks, kv_cache=kv_cache)[0, -1]
    context = hidden["h"][0]  # (T, D)
    steps: list[ContrastStep] = []
    for _ in range(max_new_tokens):
        top = F.softmax(logits.float(), -1).topk(k)
        rows = kv_cache.select(torch.zeros(k, dtype=torch.long))
        candidate_logits = net.run_with_hooks(top.indices[:, None], hooks, kv_cache=rows)[:, -1]  # (k, V)
        h_v = hidden["h"][:, -1]  # (k, D)
        similarity = F.normalize(h_v, dim=-1) @ F.normalize(context, dim=-1).T  # (k, T)
        degeneration = similarity.max(-1).values
        best = int(((1 - alpha) * top.values - alpha * degeneration).argmax())
        token = int(top.indices[best])
        steps.append(ContrastStep(token, -1, float(degeneration[best]), int(top.indices[0])))
        if token in set(stop_ids):
            break
        kv_cache = rows.select(torch.tensor([best]))
        logits, context = candidate_logits[best], torch.cat([context, h_v[best : best + 1]])
        pause()
    return steps
