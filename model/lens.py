"""The logit lens: what each layer's residual stream would predict if decoding stopped there.

For each residual (after the embedding, after each layer's attention, after each layer) we
apply the model's final RMSNorm, recomputing the RMS of *that* residual (its scale differs
a lot from layer to layer; reusing the final layer's would distort every earlier row), then
the unembedding. From each row's distribution we keep what a grid can show: the top-k
tokens and probabilities, the rank of two tracked tokens, the entropy and the KL divergence
from the final layer's distribution.

Precision and cost: the unembedding (49,152 x 576 per row) dominates. It runs in float32:
on CPU a bfloat16 matmul also *returns* bfloat16, which on SmolLM2 moved probabilities by up
to 0.046 (float16: 0.009), too much for numbers shown to three decimals. Several layers go
through one matmul, and the statistics, a few rows at a time so they stay in cache, take
few passes: a chunked top-k, one exp for both logsumexp and entropy, KL through a D-sized
dot product, ranks as a sum of 0/1 values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .transformer import Transformer, rms_norm

LOG2E = 1 / math.log(2)
ROWS_PER_MATMUL = 512  # (row, position) pairs unembedded at once: a 512 x 49,152 float32 block is 100 MB
CACHE_ROWS = 8  # rows per pass of statistics: 8 x 49,152 float32 is 1.5 MB, within L2


@dataclass
class LensResult:
    """Per (row, position) summaries of each residual's decoded distribution. R rows, T positions."""

    top_ids: Tensor  # (R, T, k) most likely tokens
    top_probs: Tensor  # (R, T, k) their probabilities
    entropy: Tensor  # (R, T) bits
    kl_to_final: Tensor  # (R, T) KL(final || row) in bits
    rank_final: Tensor  # (R, T) rank of the final layer's top token in this row (0 = top)
    rank_next: Tensor  # (R, T) rank of the actual next token (-1 at the last position)


def normalize_like_final(net: Transformer, resid: Tensor) -> Tensor:
    """The final RMSNorm applied to any residual, with its own RMS recomputed (..., D)."""
    weight = net.ln_final.weight
    return rms_norm(resid.to(weight.device).float(), weight.float(), net.cfg.norm_eps)


@torch.no_grad()
def lens_logits(net: Transformer, resid: Tensor) -> Tensor:
    """Logits (..., V) that the residuals (..., D) would give through the final norm and unembedding."""
    return normalize_like_final(net, resid) @ net.output.weight.float().T


def count_greater(logits: Tensor, threshold: Tensor) -> Tensor:
    """Per row, how many logits exceed the row's threshold: the rank of a token whose logit it is.

    relu(sign(z - t)) is 1 where z > t and 0 elsewhere; summing floats is exact below 2^24
    and, here, four times faster than summing a boolean mask.
    """
    return torch.relu(torch.sign(logits - threshold)).sum(-1).long()


def top_k(logits: Tensor, k: int, chunk: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """The k largest logits per row, their ids, and each row's max: exactly torch.topk's answer, faster.

    Cut each row into chunks of `chunk` columns. The k largest values lie in the k chunks with
    the largest maxima (a value outside them is beaten by those k maxima), so one pass for the
    chunk maxima and a top-k over k * chunk candidates replace a top-k over the whole row.
    """
    b, V = logits.shape
    if V % chunk or V // chunk < k:
        top = logits.topk(k, dim=-1)
        return top.values, top.indices, top.values[:, 0]
    chunk_max = logits.view(b, V // chunk, chunk).amax(-1)  # (b, V/chunk)
    best_chunks = chunk_max.topk(k, dim=-1).indices  # (b, k)
    columns = (best_chunks[:, :, None] * chunk + torch.arange(chunk)).reshape(b, k * chunk)
    candidates = logits.gather(-1, columns)
    top = candidates.topk(k, dim=-1)
    return top.values, columns.gather(-1, top.indices), top.values[:, 0]


class LogitLens:
    """The lens over resid (R, T, D), whose last row is the final residual, computed a block of
    rows at a time: `step()` does ROWS_PER_MATMUL (row, position) pairs, so a caller may pause
    between blocks (to let others use the model) and report progress.

    next_ids (T,): the actual next token at each position, -1 where there is none.
    """

    @torch.no_grad()
    def __init__(self, net: Transformer, resid: Tensor, next_ids: Tensor, k: int = 10) -> None:
        R, T, D = resid.shape
        self.shape, self.k, self.next_ids = (R, T), k, next_ids
        self.weight = net.output.weight.float()  # (V, D)
        self.norm_weight, self.eps = net.ln_final.weight.float(), net.cfg.norm_eps
        self.resid = resid.reshape(R * T, D)  # normalised a block at a time: no copy of all the rows is kept
        final_logits = self.normalized(slice(R * T - T, R * T)) @ self.weight.T  # (T, V): the model's own output
        final_logp = final_logits.log_softmax(-1)
        final_p = final_logp.exp()
        # KL(final || row) = sum p_f log p_f - sum_v p_f[v] z_row[v] + logsumexp(z_row), and the
        # middle term is (W^T p_f) . normed_row: a D-sized dot product, not a pass over V.
        self.neg_entropy_final = (final_p * final_logp).sum(-1)  # (T,)
        self.expected_dir = final_p @ self.weight  # (T, D)
        self.tracked = torch.stack([final_logits.argmax(-1), next_ids.clamp(min=0)], dim=-1)  # (T, 2)
        n = R * T
        self.top_ids = torch.empty(n, k, dtype=torch.long)
        self.top_probs = torch.empty(n, k)
        self.entropy, self.kl = torch.empty(n), torch.empty(n)
        self.ranks = torch.empty(n, 2, dtype=torch.long)
        self.positions = torch.arange(n) % T
        self.next_row = 0  # the first (row, position) pair not yet done

    def normalized(self, rows: slice) -> Tensor:
        """The final RMSNorm applied to these rows, each with its own RMS (as `normalize_like_final`)."""
        return rms_norm(self.resid[rows].float(), self.norm_weight, self.eps)

    @property
    def done(self) -> bool:
        return self.next_row >= len(self.positions)

    @property
    def fraction(self) -> float:
        return self.next_row / len(self.positions)

    @torch.no_grad()
    def step(self, rows: int = ROWS_PER_MATMUL) -> None:
        """Unembed the next block of `rows` (row, position) pairs and summarise each one's distribution."""
        start = self.next_row
        normed = self.normalized(slice(start, start + rows))  # (b, D)
        logits = normed @ self.weight.T  # (b, V)
        # The statistics take several passes over each row; a few rows at a time they stay in cache.
        for sub in range(0, len(logits), CACHE_ROWS):
            block = slice(start + sub, start + sub + CACHE_ROWS)
            z = logits[sub : sub + CACHE_ROWS]
            pos = self.positions[block]
            values, ids, row_max = top_k(z, self.k)
            e = (z - row_max[:, None]).exp_()  # one exp serves logsumexp and entropy
            total = e.sum(-1)
            lse = row_max + total.log()  # (b,)
            self.entropy[block] = lse - (e * z).sum(-1) / total  # H = logsumexp(z) - E_p[z]
            self.top_ids[block] = ids
            self.top_probs[block] = (values - lse[:, None]).exp()
            ref = z.gather(-1, self.tracked[pos])  # (b, 2): logits of the tracked tokens in this row
            self.ranks[block, 0] = count_greater(z, ref[:, :1])
            self.ranks[block, 1] = count_greater(z, ref[:, 1:])
            own = normed[sub : sub + CACHE_ROWS]
            self.kl[block] = self.neg_entropy_final[pos] - (self.expected_dir[pos] * own).sum(-1) + lse
        self.next_row = start + len(logits)

    def result(self) -> LensResult:
        if not self.done:
            raise RuntimeError("the lens is not finished: call step() until done")
        R, T = self.shape
        rank_next = self.ranks[:, 1].reshape(R, T).clone()
        rank_next[:, self.next_ids < 0] = -1
        return LensResult(
            top_ids=self.top_ids.reshape(R, T, self.k),
            top_probs=self.top_probs.reshape(R, T, self.k),
            entropy=(self.entropy * LOG2E).reshape(R, T),
            kl_to_final=(self.kl * LOG2E).clamp(min=0).reshape(R, T),
            rank_final=self.ranks[:, 0].reshape(R, T),
            rank_next=rank_next,
        )


def logit_lens(net: Transformer, resid: Tensor, next_ids: Tensor, k: int = 10) -> LensResult:
    """Summaries of the lens over resid (R, T, D), whose last row is the final residual, in one go.

    next_ids (T,): the actual next token at each position, -1 where there is none.
    """
    lens = LogitLens(net, resid, next_ids, k)
    while not lens.done:
        lens.step()
    return lens.result()
