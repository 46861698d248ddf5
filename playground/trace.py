"""One model run per prompt, kept as a `Trace` that every tab reads.

`ModelRunner` owns the shared model: it checks the prompt, runs `run_with_cache` once under
a lock (hooks live on the shared modules, so two requests must never overlap), and copies
what the tabs need into a `Trace` of plain numpy arrays. The trace lives in each visitor's
`gr.State`; moving a slider reads it and never re-runs the model.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from model import ModelEncoding, Transformer, UnencodableTextError
from model.lens import LensResult, logit_lens

MAX_PROMPT_TOKENS = 512
MAX_PROMPT_CHARS = 20_000
MODEL_WAIT_S = 30  # how long a request waits for the model while others use it


class PromptError(ValueError):
    """A prompt the app will not run, with a message meant for the person who typed it."""


class ModelBusyError(PromptError):
    """The shared model stayed busy longer than a request may wait."""


@dataclass
class Trace:
    """Everything the tabs show about one prompt, as numpy arrays (T tokens, L layers, H heads)."""

    prompt: str  # the text encoded (unencodable characters already replaced)
    chat: bool  # the prompt was wrapped in the model's chat template
    ids: np.ndarray  # (T,) token ids
    token_bytes: list[bytes]  # the bytes each token stands for
    special: np.ndarray  # (T,) bool: control tokens such as <|im_start|>
    surprisal: np.ndarray  # (T,) -log2 p(token | prefix) in bits; NaN at position 0
    top_next: np.ndarray  # (T, 5) the model's top-5 next-token ids at each position
    top_next_p: np.ndarray  # (T, 5) their probabilities
    next_logits: np.ndarray  # (V,) logits after the last position
    q: np.ndarray  # (L, T, H, Dh) before RoPE
    k: np.ndarray  # (L, T, G, Dh) before RoPE
    v: np.ndarray  # (L, T, G, Dh)
    rot_q: np.ndarray  # (L, T, H, Dh) after RoPE
    rot_k: np.ndarray  # (L, T, G, Dh) after RoPE
    pattern: np.ndarray  # (L, H, T, T) attention weights, float32
    head_stats: np.ndarray  # (L, H, 4): to first token, to previous token, to self, entropy (bits)
    resid: np.ndarray  # (L + 1, T, D): after the embedding, then after each layer (resid_post)
    resid_mid: np.ndarray  # (L, T, D): inside each layer, after attention and before the MLP
    notes: list[str] = field(default_factory=list)  # what was changed about the prompt, for the user
    lens: dict = field(default_factory=dict)  # logit-lens results, computed on first view: key -> LensResult

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def n_layers(self) -> int:
        return self.pattern.shape[0]

    @property
    def n_heads(self) -> int:
        return self.pattern.shape[1]

    def lens_rows(self, with_mid: bool) -> tuple[list[str], np.ndarray]:
        """Row labels and residual streams (R, T, D) for the logit lens, bottom to top:
        the embedding, then each layer (after its attention block too, with_mid)."""
        L = self.n_layers
        if not with_mid:
            return ["embed"] + [f"L{l}" for l in range(L)], self.resid
        labels = ["embed"] + [name for l in range(L) for name in (f"L{l} attn", f"L{l}")]
        interleaved = np.stack([self.resid_mid, self.resid[1:]], axis=1).reshape(2 * L, *self.resid.shape[1:])
        return labels, np.concatenate([self.resid[:1], interleaved])


HEAD_STAT_NAMES = ("first token", "previous token", "self", "entropy (bits)")


def head_statistics(pattern: np.ndarray) -> np.ndarray:
    """(L, H, 4) per-head means over query positions of attention to the first token, the
    previous token and itself, and the entropy of each row in bits. Query 0 is left out of
    the first two (it can only attend to itself); NaN when there is no such query."""
    L, H, T, _ = pattern.shape
    stats = np.full((L, H, 4), np.nan, dtype=np.float32)
    rows = np.arange(T)
    if T > 1:
        stats[..., 0] = pattern[:, :, 1:, 0].mean(-1)
        stats[..., 1] = pattern[:, :, rows[1:], rows[1:] - 1].mean(-1)
    stats[..., 2] = pattern[:, :, rows, rows].mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(pattern > 0, pattern * np.log2(pattern), 0.0)
    stats[..., 3] = -plogp.sum(-1).mean(-1)
    return stats


def attention_stages(trace: Trace, layer: int, head: int, kv_head: int) -> dict[str, np.ndarray]:
    """The four steps of one head, from its rotated q and k: q.k, scaled, masked, softmax."""
    q = trace.rot_q[layer, :, head].astype(np.float64)  # (T, Dh)
    k = trace.rot_k[layer, :, kv_head].astype(np.float64)  # (T, Dh)
    raw = q @ k.T  # (T, T)
    scaled = raw / np.sqrt(q.shape[-1])
    causal = np.tril(np.ones_like(raw, dtype=bool))
    masked = np.where(causal, scaled, -np.inf)
    exp = np.exp(masked - masked.max(-1, keepdims=True))
    return {"scores": raw, "scaled": scaled, "masked": masked, "softmax": exp / exp.sum(-1, keepdims=True)}


class ModelRunner:
    """The one shared model and tokenizer, with the app's limits and a lock around every run."""

    def __init__(self, net: Transformer, enc: ModelEncoding, max_tokens: int = MAX_PROMPT_TOKENS, wait_s: float = MODEL_WAIT_S):
        self.net = net
        self.enc = enc
        self.max_tokens = max_tokens
        self.wait_s = wait_s
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def locked(self) -> Iterator[Transformer]:
        """The model, to one request at a time (hooks sit on its shared modules); a clear error after wait_s."""
        if not self._lock.acquire(timeout=self.wait_s):
            raise ModelBusyError(f"The model is busy with other requests (waited {self.wait_s:g} s). Try again in a moment.")
        try:
            yield self.net
        finally:
            self._lock.release()

    @property
    def cfg(self):
        return self.net.cfg

    def tokenize(self, prompt: str, chat: bool) -> tuple[list[int], str, list[str]]:
        """Token ids for a prompt (in the chat template if asked), the text encoded, and notes on what was changed."""
        if prompt is None or not prompt.strip():
            raise PromptError("Type a prompt first: there is nothing to analyze yet.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise PromptError(
                f"That prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,} "
                f"(and {self.max_tokens} tokens). Try a shorter passage."
            )
        notes = []
        bad = self.enc.unencodable(prompt)
        if bad:
            shown = ", ".join(f"U+{ord(c):04X}" for _, c in bad[:3])
            notes.append(f"{len(bad)} character(s) this tokenizer has no bytes for ({shown}) were replaced by U+FFFD.")
            prompt = self.enc.check(prompt, errors="replace")
        try:
            ids = self.enc.apply_chat_template(prompt) if chat else self.enc.encode(prompt)
        except (UnencodableTextError, ValueError) as e:
            raise PromptError(str(e)) from e
        if len(ids) > self.max_tokens:
            raise PromptError(f"That prompt is {len(ids):,} tokens; the limit is {self.max_tokens}. Try a shorter passage.")
        return ids, prompt, notes

    def analyze(self, prompt: str, chat: bool = False) -> Trace:
        """Run the model once on a prompt and keep what the tabs show."""
        ids, prompt, notes = self.tokenize(prompt, chat)
        tokens = torch.tensor([ids])
        wanted = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_pattern",
                  "hook_embed", "hook_resid_post", "hook_resid_mid")
        with self.locked() as net:
            logits, cache = net.run_with_cache(tokens, names_filter=lambda name: name.endswith(wanted))
        logits = logits[0].float()
        log_probs = logits.log_softmax(-1)  # (T, V)
        surprisal = np.full(len(ids), np.nan, dtype=np.float32)
        if len(ids) > 1:
            picked = log_probs[:-1].gather(-1, tokens[0, 1:, None])[:, 0]
            surprisal[1:] = (-picked / np.log(2)).numpy()
        top = log_probs.topk(5, dim=-1)

        def stack(hook: str) -> np.ndarray:
            return torch.stack([cache[f"blocks.{l}.{hook}"][0] for l in range(self.cfg.n_layers)]).float().numpy()

        pattern = stack("attn.hook_pattern")
        return Trace(
            prompt=prompt,
            chat=chat,
            ids=np.array(ids, dtype=np.int64),
            token_bytes=[self.enc.decode_single_token_bytes(i) for i in ids],
            special=np.array([self.enc.is_special_token(i) for i in ids]),
            surprisal=surprisal,
            top_next=top.indices.numpy(),
            top_next_p=top.values.exp().numpy(),
            next_logits=logits[-1].numpy(),
            q=stack("attn.hook_q"),
            k=stack("attn.hook_k"),
            v=stack("attn.hook_v"),
            rot_q=stack("attn.hook_rot_q"),
            rot_k=stack("attn.hook_rot_k"),
            pattern=pattern,
            head_stats=head_statistics(pattern),
            resid=np.concatenate([cache["hook_embed"][0].float().numpy()[None], stack("hook_resid_post")]),
            resid_mid=stack("hook_resid_mid"),
            notes=notes,
        )

    def lens(self, trace: Trace, with_mid: bool) -> tuple[list[str], LensResult]:
        """Row labels and logit-lens summaries of the trace, computed once per (trace, rows) and kept in it."""
        labels, resid = trace.lens_rows(with_mid)
        key = "mid" if with_mid else "post"
        if key not in trace.lens:
            next_ids = torch.tensor(np.append(trace.ids[1:], -1))
            with self.locked() as net:  # reads only the shared unembedding; the lock bounds CPU use
                trace.lens[key] = logit_lens(net, torch.from_numpy(resid), next_ids)
        return labels, trace.lens[key]
