"""The one seam between the app and the shared model: `ModelRunner`.

Every use of the model goes through here, under one lock (hooks sit on the shared modules,
so two runs must never overlap, and two cores are better used by one run at a time):
analysing a prompt into a `Trace`, next-token logits for ids, a KV-cache step, hooked runs
for interventions, the logit lens. Token text comes from here too. Nothing under
`playground/` or `app.py` holds the model or the tokenizer itself (a test checks it).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from model import KVCache, ModelEncoding, Transformer, UnencodableTextError
from model.lens import LensResult, lens_logits, logit_lens
from model.transformer import HookFn

from .trace import LayerTensors, Trace, head_statistics

MAX_PROMPT_TOKENS = 512
MAX_PROMPT_CHARS = 20_000
MODEL_WAIT_S = 30  # how long a request waits for the model while others use it


class PromptError(ValueError):
    """A prompt or request the app will not run, with a message meant for the person who made it."""


class ModelBusyError(PromptError):
    """The shared model stayed busy longer than a request may wait."""


class ModelRunner:
    """The one shared model and tokenizer, with the app's limits and a lock around every run."""

    def __init__(self, net: Transformer, enc: ModelEncoding, max_tokens: int = MAX_PROMPT_TOKENS,
                 wait_s: float = MODEL_WAIT_S):
        self._net = net
        self._enc = enc
        self.max_tokens = max_tokens
        self.wait_s = wait_s
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Transformer]:
        """The model, to one request at a time; a clear error after wait_s."""
        if not self._lock.acquire(timeout=self.wait_s):
            raise ModelBusyError(f"The model is busy with other requests (waited {self.wait_s:g} s). "
                                 f"Try again in a moment.")
        try:
            yield self._net
        finally:
            self._lock.release()

    @property
    def cfg(self):
        return self._net.cfg

    # -- text ---------------------------------------------------------------------------

    @property
    def eos_token_id(self) -> int | None:
        return self._enc.eos_token_id

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token id stands for."""
        return self._enc.decode_single_token_bytes(int(token))

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids))

    def first_token(self, text: str) -> int | None:
        """The first token of a piece of text (unencodable characters replaced), None for no tokens."""
        ids = self._enc.encode(text, errors="replace")
        return ids[0] if ids else None

    def tokenize(self, prompt: str, chat: bool) -> tuple[list[int], str, list[str]]:
        """Token ids for a prompt (in the chat template if asked), the text encoded, and notes on what was changed."""
        if prompt is None or not str(prompt).strip():
            raise PromptError("Type a prompt first: there is nothing to analyze yet.")
        prompt = str(prompt)
        if len(prompt) > MAX_PROMPT_CHARS:
            raise PromptError(
                f"That prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,} "
                f"(and {self.max_tokens} tokens). Try a shorter passage."
            )
        notes = []
        bad = self._enc.unencodable(prompt)
        if bad:
            shown = ", ".join(f"U+{ord(c):04X}" for _, c in bad[:3])
            notes.append(f"{len(bad)} character(s) this tokenizer has no bytes for ({shown}) were replaced by U+FFFD.")
            prompt = self._enc.check(prompt, errors="replace")
        try:
            ids = self._enc.apply_chat_template(prompt) if chat else self._enc.encode(prompt)
        except (UnencodableTextError, ValueError) as e:
            raise PromptError(str(e)) from e
        if len(ids) > self.max_tokens:
            raise PromptError(f"That prompt is {len(ids):,} tokens; the limit is {self.max_tokens}. "
                              f"Try a shorter passage.")
        return ids, prompt, notes

    # -- model runs, each under the lock --------------------------------------------------

    def analyze(self, prompt: str, chat: bool = False) -> Trace:
        """Run the model once on a prompt and keep what the tabs show."""
        ids, prompt, notes = self.tokenize(prompt, chat)
        tokens = torch.tensor([ids])
        wanted = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k",
                  "attn.hook_pattern",
                  "hook_embed", "hook_resid_post", "hook_resid_mid")
        with self._locked() as net:
            logits, cache = net.run_with_cache(tokens, names_filter=lambda name: name.endswith(wanted))
        log_probs = logits[0].float().log_softmax(-1)  # (T, V)
        surprisal = np.full(len(ids), np.nan, dtype=np.float32)
        if len(ids) > 1:
            picked = log_probs[:-1].gather(-1, tokens[0, 1:, None])[:, 0]
            surprisal[1:] = (-picked / np.log(2)).numpy()

        def stack(hook: str) -> np.ndarray:
            return torch.stack([cache[f"blocks.{l}.{hook}"][0] for l in range(self.cfg.n_layers)]).float().numpy()

        pattern = stack("attn.hook_pattern")
        return Trace(
            prompt=prompt,
            chat=chat,
            ids=np.array(ids, dtype=np.int64),
            token_bytes=[self.token_bytes(i) for i in ids],
            special=np.array([self._enc.is_special_token(i) for i in ids]),
            surprisal=surprisal,
            next_logits=logits[0, -1].float().numpy(),
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

    def layer(self, trace: Trace, layer: int) -> LayerTensors:
        """One layer's attention tensors (q, k, v before and after RoPE, the pattern) for a trace."""
        return trace.layer(layer)

    def next_logits(self, ids: list[int]) -> np.ndarray:
        """The model's next-token logits (V,) after ids."""
        with self._locked() as net, torch.inference_mode():
            return net(torch.tensor([ids]))[0, -1].float().numpy()

    def run_with_hooks(self, ids: list[int] | torch.Tensor, hooks: list[tuple[str, HookFn]]) -> torch.Tensor:
        """Logits (B, T, V) with hook functions attached for this run only (ablations, patching)."""
        tokens = ids if isinstance(ids, torch.Tensor) else torch.tensor([ids])
        with self._locked() as net:
            return net.run_with_hooks(tokens, hooks).float()

    def generation_cache(self, trace: Trace, extra: int) -> KVCache:
        """A KV cache holding the trace's keys (after RoPE) and values, with room for `extra` more tokens."""
        cfg, T = self.cfg, trace.n_tokens
        cache = KVCache.empty(cfg, 1, T + extra, self._net.tok_embeddings.weight.dtype,
                              self._net.tok_embeddings.weight.device)
        for layer in range(cfg.n_layers):
            cache.k[layer][0, :, :T] = torch.from_numpy(trace.rot_k[layer]).transpose(0, 1)  # (G, T, Dh)
            cache.v[layer][0, :, :T] = torch.from_numpy(trace.v[layer]).transpose(0, 1)
        cache.length = T
        return cache

    def step(self, token: int, cache: KVCache) -> np.ndarray:
        """One generation step: the next-token logits (V,) after `token`, which is appended to the cache."""
        with self._locked() as net, torch.inference_mode():
            return net(torch.tensor([[int(token)]]), cache=cache)[0, -1].float().numpy()

    def lens(self, trace: Trace, with_mid: bool) -> tuple[list[str], LensResult]:
        """Row labels and logit-lens summaries of the trace, computed once per (trace, rows) and kept in it."""
        labels, resid = trace.lens_rows(with_mid)
        key = "mid" if with_mid else "post"
        if key not in trace.lens:
            next_ids = torch.tensor(np.append(trace.ids[1:], -1))
            with self._locked() as net:
                trace.lens[key] = logit_lens(net, torch.from_numpy(resid), next_ids)
        return labels, trace.lens[key]

    def lens_logits(self, resid: np.ndarray) -> torch.Tensor:
        """Logits (..., V) that residuals (..., D) give through the final norm and the unembedding."""
        with self._locked() as net:
            return lens_logits(net, torch.from_numpy(np.ascontiguousarray(resid)))
