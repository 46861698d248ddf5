"""Explaining one prediction: the routes it took (information flow routes, Ferrando & Voita 2024), and an attention
score split into its causes.

Routes. Every residual state is a sum of parts. After layer l's attention, at query position i,
resid_mid[i] = resid_pre[i] + sum over keys j <= i and query heads h of pattern[h, i, j] * (v[j, g(h)] @ W_O,h),
head h reading key/value head g(h) (grouped-query attention: each query head is its own part). After the MLP,
resid_post[i] = resid_mid[i] + mlp_out[i]. The importance of a part p of a whole y is the paper's proximity,
max(eps, |y|_1 - |y - p|_1), normalised over the parts so they sum to 1 (`proximity`). `flow` computes every
node's incoming importances a layer at a time, the attention terms a block of queries at a time (never all
stored); `route_graph` keeps, back from one position at the top, the edges above a threshold, renormalised among
those kept at each node (the paper's and the LM Transparency Tool's rule).

Why here. With each RMSNorm's scale frozen at its value in this run, q_i and k_j are linear in the residual
stream's components (the embedding, each earlier layer's attention and MLP outputs), and so is RoPE: the score
q_i . k_j / sqrt(Dh) splits exactly into (query-side component) x (key-side component) terms (`score_split`).

Shapes: L layers, H query heads, G key/value heads, T tokens, D d_model, Dh head size, C components.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .decompose import frozen_norm, frozen_readout, head_w_o, joined, residual_components
from .transformer import Transformer, apply_rope
from .views import layer_tensors

__all__ = ["EPS", "Flow", "ScoreSplit", "collect_flow", "direct_logits", "flow", "flow_layers", "head_output",
           "named_terms", "proximity", "residual_components", "route_graph", "score_split"]

EPS = 1e-5  # the floor of a part's closeness to the whole (the LM Transparency Tool's)
TERMS_AT_ONCE = 2**23  # attention terms (query x head x key x D floats) made at once: 32 MB


def proximity(parts: Tensor, whole: Tensor, eps: float = EPS) -> Tensor:
    """Each part's share of the whole: max(eps, |whole|_1 - |whole - part|_1), normalised to sum to 1 over the
    parts. parts (..., P, D), whole (..., D) -> (..., P)."""
    closeness = (whole.abs().sum(-1, keepdim=True) - (whole[..., None, :] - parts).abs().sum(-1)).clamp(min=eps)
    return closeness / closeness.sum(-1, keepdim=True)


@dataclass
class Flow:
    """Every node's incoming importances (before any threshold; each node's sum to 1)."""

    attn: Tensor  # (L, T, H, T): head h's term from key j into resid_mid at query i (0 for j > i: not a part)
    attn_resid: Tensor  # (L, T): resid_pre's share of resid_mid at i
    mlp: Tensor  # (L, T): mlp_out's share of resid_post at i (the residual's is 1 - mlp)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.attn, self.attn_resid, self.mlp))


def value_outputs(net: Transformer, v: Tensor, layer: int) -> Tensor:
    """What each query head would add from each key at full attention: v[j, g(h)] @ W_O,h. v (T, G, Dh) ->
    (T, H, D)."""
    per_head = v.float().repeat_interleave(net.cfg.n_groups, dim=1)  # (T, H, Dh): head h reads kv head h // groups
    return torch.einsum("thd,mhd->thm", per_head, head_w_o(net, layer))


@torch.no_grad()
def attention_flow(pattern: Tensor, vo: Tensor, resid_pre: Tensor,
                   post: Callable[[Tensor, slice], Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One layer's attention importances: pattern (H, T, T), vo (T, H, D), resid_pre (T, D) ->
    (importance (T, H, T) per query, head, key; the residual's (T,); resid_mid (T, D) as the parts sum to).
    `post(terms, queries)` takes terms (q, ..., D) of those queries to what they add to the residual (Gemma's
    post-attention norm, its scale frozen at each query's)."""
    H, T, _ = pattern.shape
    D = vo.shape[-1]
    pattern = pattern.float()
    attn_out = torch.einsum("hij,jhm->im", pattern, vo)  # (T, D)
    if post is not None:
        attn_out = post(attn_out, slice(0, T))
    resid_mid = resid_pre.float() + attn_out
    y_norm = resid_mid.abs().sum(-1)  # (T,)
    resid_close = (y_norm - attn_out.abs().sum(-1)).clamp(min=EPS)  # resid_pre's: y - resid_pre = attn_out
    causal = torch.ones(T, T, dtype=torch.bool, device=pattern.device).tril()  # (query, key): a query's keys
    close = torch.empty(T, H, T, device=pattern.device)
    block = max(1, TERMS_AT_ONCE // (H * T * D))
    for start in range(0, T, block):  # a block of queries at a time: its terms (q, H, T, D), then gone
        stop = min(T, start + block)
        terms = pattern[:, start:stop].transpose(0, 1)[..., None] * vo.transpose(0, 1)[None]  # (q, H, T, D)
        if post is not None:
            terms = post(terms, slice(start, stop))
        distance = (resid_mid[start:stop, None, None] - terms).abs().sum(-1)  # (q, H, T)
        close[start:stop] = (y_norm[start:stop, None, None] - distance).clamp(min=EPS)
    close *= causal[:, None, :]  # a key after the query is not a part of its sum
    total = close.sum((1, 2)) + resid_close  # (T,)
    importance, resid_share = close / total[:, None, None], resid_close / total
    return importance, resid_share, resid_mid


@torch.no_grad()
def flow_layers(net: Transformer, resid: Tensor) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
    """Each layer's importances in turn, (layer, attn (T, H, T), attn_resid (T,), mlp (T,)), from the residual
    entering each layer and leaving the last (L + 1, T, D) (its pattern and values recomputed by the model's own
    block): a caller may hand the model to others between two layers."""
    resid = resid.to(net.tok_embeddings.weight.device)  # where the model is (a trace keeps it on the host)
    for l in range(net.cfg.n_layers):
        seen = layer_tensors(net, resid[l], l)
        vo = value_outputs(net, seen["v"], l)
        post = None
        if net.blocks[l].ln1_post is not None:  # Gemma: the heads' sum is normed again, its scale frozen per query
            raw = torch.einsum("hij,jhm->im", seen["pattern"].float(), vo)  # (T, D): the attention's output, unnormed

            def post(terms: Tensor, queries: slice, raw=raw, l=l) -> Tensor:
                whole = raw[queries].view(-1, *[1] * (terms.dim() - 2), raw.shape[-1])
                return joined(net, l, terms, whole)
        attn, attn_resid, resid_mid = attention_flow(seen["pattern"], vo, resid[l], post)
        mlp_out = resid[l + 1].float() - resid_mid
        mlp = proximity(torch.stack([mlp_out, resid_mid], dim=1), resid[l + 1].float())[:, 0]
        yield l, attn, attn_resid, mlp


def collect_flow(layers: Iterable[tuple[int, Tensor, Tensor, Tensor]], n_layers: int) -> Flow:
    """`flow_layers`' layers as one Flow."""
    parts = sorted(layers, key=lambda item: item[0])
    if len(parts) != n_layers:
        raise ValueError(f"expected {n_layers} layers, got {len(parts)}")
    return Flow(*(torch.stack([p[k] for p in parts]) for k in (1, 2, 3)))


def flow(net: Transformer, resid: Tensor) -> Flow:
    """Every node's incoming importances, a layer at a time (`flow_layers`)."""
    return collect_flow(flow_layers(net, resid), net.cfg.n_layers)


@dataclass(frozen=True)
class Edge:
    """One kept edge of the graph: a part of the residual state at (`layer`, `target`) after the `kind` step."""

    kind: str  # "attn" (a head's term from key `source`), "attn_resid", "mlp" or "mlp_resid"
    layer: int
    source: int  # the position it comes from (the key for "attn", else the target itself)
    target: int
    head: int  # the query head for "attn", else -1
    importance: float  # its share among the parts kept at its node (they sum to 1)
    raw: float  # its share before the threshold


@dataclass
class RouteGraph:
    """The edges kept, back from one position at the top. Node (level, position): level 0 is the embedding,
    2l + 1 the residual after layer l's attention, 2l + 2 after its MLP."""

    position: int
    threshold: float
    edges: list[Edge]

    @property
    def nodes(self) -> set[tuple[int, int]]:
        found = {(2 * max((e.layer for e in self.edges), default=-1) + 2, self.position)}
        for e in self.edges:
            mid = 2 * e.layer + 1
            found |= {(mid - 1, e.source), (mid, e.target)} if e.kind.startswith("attn") else \
                {(mid, e.source), (mid + 1, e.target)}
        return found


def route_graph(f: Flow, position: int, threshold: float) -> RouteGraph:
    """From the last layer's output at `position` down to the embedding: at each node reached, the incoming parts
    whose share exceeds the threshold, renormalised among those kept (a node keeping none ends there)."""
    L, T = f.mlp.shape
    edges: list[Edge] = []
    reached = {position}  # positions reached at the current level, top down
    for l in reversed(range(L)):
        mid_reached = set()
        for i in sorted(reached):  # after the MLP: the MLP's output and the residual
            mlp = float(f.mlp[l, i])
            kept = [(kind, share) for kind, share in (("mlp", mlp), ("mlp_resid", 1 - mlp)) if share > threshold]
            total = sum(share for _, share in kept)
            edges += [Edge(kind, l, i, i, -1, share / total, share) for kind, share in kept]
            if kept:
                mid_reached.add(i)
        reached = set()
        for i in sorted(mid_reached):  # after attention: each (head, key) term and the residual
            shares = f.attn[l, i]  # (H, T)
            heads, keys = torch.nonzero(shares > threshold, as_tuple=True)
            resid = float(f.attn_resid[l, i])
            total = float(shares[heads, keys].sum()) + (resid if resid > threshold else 0.0)
            for h, j in zip(heads.tolist(), keys.tolist()):
                edges.append(Edge("attn", l, j, i, h, float(shares[h, j]) / total, float(shares[h, j])))
                reached.add(j)
            if resid > threshold:
                edges.append(Edge("attn_resid", l, i, i, -1, resid / total, resid))
                reached.add(i)
    return RouteGraph(position, threshold, edges)


# ---------------------------------------------------------------------------------------
# Why a head attends where it does


@dataclass
class ScoreSplit:
    """The pre-softmax score of (head, query, key) split into query-side x key-side component terms."""

    labels: list[str]  # the components: "embed", then "L{l} attn", "L{l} mlp" for the layers before this one
    terms: Tensor  # (C, C): [query-side component, key-side component]; they sum to the score
    score: float  # the model's own q . k / sqrt(Dh)


@torch.no_grad()
def score_split(net: Transformer, resid: Tensor, resid_mid: Tensor, layer: int, head: int, query: int,
                key: int) -> ScoreSplit:
    """Head `head` of `layer`: its score of `key` from `query` as (query-side) x (key-side) component terms.
    The attention norm's scale at each position is frozen at this run's (as direct logit attribution freezes the
    final norm's), so q and k are linear in the components; RoPE is linear too."""
    cfg, attn = net.cfg, net.blocks[layer].attn
    labels, comps = residual_components(resid, resid_mid, layer)  # (C, T, D)
    normalised = frozen_norm(comps, resid[layer], net.blocks[layer].ln1)  # (C, T, D): as the projections see them
    g = head // cfg.n_groups
    sides = []
    for w, bias, row, q_or_k in ((attn.wq, attn.wq.bias, head, "q"), (attn.wk, attn.wk.bias, g, "k")):
        weight = w.weight.float().view(-1, cfg.d_head, cfg.d_model)[row]  # (Dh, D)
        side = normalised @ weight.T  # (C, T, Dh)
        if bias is not None:  # Qwen2: the bias is one more component, the same at every position
            side = torch.cat([side, bias.float().view(-1, cfg.d_head)[row].expand(1, side.shape[1], -1)])
        if cfg.qk_norm:  # Qwen3: each head's q (k) normalised, its scale frozen at this run's, as ln1's is
            side = frozen_norm(side, side.sum(0), getattr(attn, f"{q_or_k}_norm"))
        sides.append(side)
    if attn.wq.bias is not None:
        labels = [*labels, "bias"]
    rotations, _ = net.positions(0, resid.shape[1]).of(layer)
    if attn.use_rope:
        q = apply_rope(sides[0][:, :, None], rotations)[:, query, 0]  # (C, Dh) rotated at the query
        k = apply_rope(sides[1][:, :, None], rotations)[:, key, 0]  # (C, Dh) rotated at the key
    else:  # SmolLM3's no-RoPE layers
        q, k = sides[0][:, query], sides[1][:, key]
    terms = q @ k.T / cfg.attn_scale  # (C, C)
    seen = layer_tensors(net, resid[layer], layer)
    score = float(seen["rot_q"][query, head].float() @ seen["rot_k"][key, g].float()) / cfg.attn_scale
    return ScoreSplit(labels, terms, score)


def named_terms(split: ScoreSplit, query_token: str, key_token: str, n: int = 5) -> list[tuple[str, float]]:
    """The n largest terms by size, named: "L3 attn at 'is' x embed of 'France'"."""
    C = len(split.labels)
    order = split.terms.flatten().abs().argsort(descending=True)[:n].tolist()
    return [(f"{split.labels[k // C]} at {query_token} × {split.labels[k % C]} at {key_token}",
             float(split.terms.flatten()[k])) for k in order]


@torch.no_grad()
def head_output(net: Transformer, pattern: Tensor, v: Tensor, layer: int, head: int, position: int) -> Tensor:
    """What one query head writes into the residual at a position (D,): its attention-weighted values through its
    slice of W_O (and, in Gemma, through the post-attention norm with its scale frozen at all heads' sum).
    pattern (H, T, T), v (T, G, Dh)."""
    cfg = net.cfg
    values = v.float().repeat_interleave(cfg.n_groups, dim=1)  # (T, H, Dh)
    z = torch.einsum("hj,jhd->hd", pattern[:, position].float(), values)  # (H, Dh): every head's, for the sum
    writes = torch.einsum("hd,mhd->hm", z, head_w_o(net, layer))  # (H, D)
    return joined(net, layer, writes[head], writes.sum(0))


@torch.no_grad()
def direct_logits(net: Transformer, vector: Tensor, final_scale: float) -> Tensor:
    """A residual part's direct effect on the logits (V,): through the final norm's gain and its scale frozen at
    this position (as direct logit attribution does), then the unembedding."""
    return net.output.weight.float() @ frozen_readout(net, vector, final_scale)  # gain * vector / scale, unembedded
