"""Building traces: one forward over a batch of prompts, keeping what every tab reads (`Trace`).

The prompts are padded on the right, which changes nothing for the real positions (causal attention never looks
right), so each trace equals running its prompt alone. Hooks copy each layer's residual stream out as it passes and
summarise each head's pattern (statistics and a thumbnail) without storing it. Called with the model held.
"""

from __future__ import annotations

import numpy as np
import torch

from model import ModelEncoding, Transformer
from model.transformer import HookFn
from model.views import own

from .batcher import PromptRequest
from .figures.attention import thumbnail_levels
from .trace import HEAD_STAT_NAMES, Trace, head_statistics

THUMBNAIL = 30  # pixels per head in the overview of all heads


def trace_batch(net: Transformer, enc: ModelEncoding, batch: list[PromptRequest]) -> list[Trace]:
    """One forward over the right-padded prompts; each trace keeps only its own positions."""
    cfg = net.cfg
    lengths = [len(r.ids) for r in batch]
    tokens = torch.zeros(len(batch), max(lengths), dtype=torch.long)
    for i, r in enumerate(batch):
        tokens[i, : lengths[i]] = torch.tensor(r.ids)
    resid = [np.empty((cfg.n_layers + 1, n, cfg.d_model), dtype=np.float32) for n in lengths]
    stats = [np.empty((cfg.n_layers, cfg.n_heads, len(HEAD_STAT_NAMES)), dtype=np.float32) for _ in batch]
    thumbs = [np.empty((cfg.n_layers, cfg.n_heads, THUMBNAIL, THUMBNAIL), dtype=np.uint8) for _ in batch]

    def keep_resid(row: int) -> HookFn:
        def keep(x: torch.Tensor, hook) -> None:
            for i, n in enumerate(lengths):
                resid[i][row] = x[i, :n].float().cpu().numpy()  # copied once, into the trace's array
        return keep

    def summarise(layer: int) -> HookFn:
        def keep(pattern: torch.Tensor, hook) -> None:  # (B, H, T, T), seen once and never stored
            for i, n in enumerate(lengths):
                mine = pattern[i, :, :n, :n]  # causal: a real query never sees the padding
                stats[i][layer] = head_statistics(mine)
                thumbs[i][layer] = thumbnail_levels(mine.float().cpu().numpy(), THUMBNAIL)  # no extra copy on the CPU
        return keep

    hooks = [("hook_embed", keep_resid(0))]
    for l in range(cfg.n_layers):
        hooks += [(f"blocks.{l}.hook_resid_post", keep_resid(l + 1)), (f"blocks.{l}.attn.hook_pattern", summarise(l))]
    logits = net.run_with_hooks(tokens, hooks)  # (B, T, V)
    traces = []
    for i, (r, n) in enumerate(zip(batch, lengths)):
        log_probs = logits[i, :n].float().log_softmax(-1)
        surprisal = np.full(n, np.nan, dtype=np.float32)
        if n > 1:
            picked = log_probs[:-1].gather(-1, tokens[i, 1:n, None].to(log_probs.device))[:, 0]
            surprisal[1:] = (-picked / np.log(2)).cpu().numpy()
        traces.append(Trace(
            prompt=r.prompt, chat=r.chat, ids=np.array(r.ids, dtype=np.int64),
            token_bytes=[enc.token_bytes(t) for t in r.ids],
            special=np.array([enc.is_special_token(t) for t in r.ids]),
            surprisal=surprisal, next_logits=own(logits[i, n - 1]), resid=resid[i],
            head_stats=stats[i], thumbnails=thumbs[i], notes=r.notes,
        ))
    return traces
