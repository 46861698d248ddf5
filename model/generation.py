"""Token-by-token generation with the KV cache: one forward over the prompt, then one token per step."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch

from .sampling import SamplerSettings, sample
from .transformer import KVCache, Transformer


@torch.inference_mode()
def generate(
    net: Transformer,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    settings: SamplerSettings | None = None,
    seed: int | None = None,
    stop_ids: Iterable[int] = (),
) -> Iterator[int]:
    """Yield up to max_new_tokens new token ids; greedy when settings is None; stops after a stop id."""
    if not prompt_ids:
        raise ValueError("generate needs at least one prompt token")
    if max_new_tokens <= 0:
        return
    device = net.tok_embeddings.weight.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    stop = set(stop_ids)
    cache = KVCache.empty(net.cfg, 1, len(prompt_ids) + max_new_tokens, net.tok_embeddings.weight.dtype, device)
    tokens = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        logits = net(tokens, cache=cache)[:, -1]  # (1, V)
        token = sample(logits, settings, generator)  # (1,)
        yield int(token)
        if int(token) in stop:
            return
        tokens = token[:, None]
