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
    generator = torch.Generator().manual_seed(seed) if seed is not None else None  # sampling runs on the CPU
    stop = set(stop_ids)
    prompt = list(prompt_ids)
    generated: list[int] = []
    kv_cache = KVCache.empty(net.cfg, 1, len(prompt) + max_new_tokens, net.tok_embeddings.weight.dtype, device)
    tokens = torch.tensor([prompt], dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        logits = net(tokens, kv_cache=kv_cache)[0, -1].float().cpu()  # (V,)
        token = int(sample(logits, settings, generator, prompt, generated))
        generated.append(token)
        yield token
        if token in stop:
            return
        tokens = torch.tensor([[token]], dtype=torch.long, device=device)
