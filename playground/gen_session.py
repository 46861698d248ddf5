"""A visitor's step-by-step generation (`GenSession`): the prompt, the tokens chosen so far, and a KV cache.

The KV cache starts from the keys and values of the trace's residual streams (`ModelRunner.generation_cache`), so
each new token costs one position of compute, and going back just shortens the cache. It is built on the first step
(a visitor who only looks at the distribution holds none) and counts against the server's memory budget like a
trace; if it is dropped to make room, the next step rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from model import KVCache
from model.sampling import SamplerSettings, distribution

from .runner import ModelRunner
from .trace import Trace

MAX_NEW_TOKENS = 128  # per session, step by step or in one go


@dataclass(eq=False)
class GenSession:
    """One visitor's generation: the prompt, the tokens chosen so far, and the model's next-token logits now.

    The KV cache is built from the trace on the first step (so a visitor who only looks at the
    distribution holds none) and counts against the server's memory budget like the trace; if
    it is dropped to make room, the next step rebuilds it.
    """

    trace: Trace
    prompt_ids: list[int]
    prompt_text: str
    logits: np.ndarray  # (V,) next-token logits after the prompt and the generated tokens
    generated: list[int] = field(default_factory=list)
    chosen_p: list[float] = field(default_factory=list)  # probability each token was chosen with
    kv_cache: KVCache | None = None
    dropped: bool = False
    attention: np.ndarray | None = None  # (L, H, S) what the newest generated token attends to

    @classmethod
    def start(cls, runner: ModelRunner, trace: Trace) -> GenSession:
        """Start from an analysed prompt and its next-token logits."""
        return cls(trace, trace.ids.tolist(), runner.decode(trace.ids.tolist()), trace.next_logits)

    @property
    def nbytes(self) -> int:
        kv_cache = 0 if self.kv_cache is None else sum(t.nbytes for t in (*self.kv_cache.k, *self.kv_cache.v))
        return self.logits.nbytes + kv_cache + (0 if self.attention is None else self.attention.nbytes)

    def drop(self) -> None:
        self.kv_cache, self.dropped = None, True

    def _rebuild(self, runner: ModelRunner, tokens: list[int]) -> np.ndarray:
        """A new cache: the prompt's keys and values from the trace, then `tokens` stepped; the logits after them."""
        self.kv_cache = runner.generation_cache(self.trace, MAX_NEW_TOKENS)
        self.dropped = False
        runner.budget.admit(self)
        logits = self.trace.next_logits
        for token in tokens:
            logits = runner.step(token, self.kv_cache)
        return logits

    def push(self, runner: ModelRunner, token: int, p: float) -> None:
        """Append a token: one forward step over it with the cache."""
        if len(self.generated) >= MAX_NEW_TOKENS:
            raise ValueError(f"the limit is {MAX_NEW_TOKENS} generated tokens; press Reset to start again")
        if self.kv_cache is None:
            self._rebuild(runner, self.generated)
        self.logits, self.attention = runner.step(token, self.kv_cache, attention=True)
        self.generated.append(token)
        self.chosen_p.append(p)

    def pop(self, runner: ModelRunner) -> None:
        """Go back one token: the cache loses two positions and the last kept token is stepped again for its logits
        (cheaper than keeping every step's logits: 128 x 49,152 floats)."""
        if not self.generated:
            return
        self.generated.pop()
        self.chosen_p.pop()
        if not self.generated:
            self.reset()
        else:
            if self.kv_cache is None:
                self._rebuild(runner, self.generated[:-1])
            else:
                self.kv_cache.length -= 2
            self.logits, self.attention = runner.step(self.generated[-1], self.kv_cache, attention=True)

    def reset(self) -> None:
        self.generated.clear()
        self.chosen_p.clear()
        self.logits, self.attention = self.trace.next_logits, None
        if self.kv_cache is not None:
            self.kv_cache.length = self.trace.n_tokens

    def distribution(self, settings: SamplerSettings) -> torch.Tensor:
        """The next-token probabilities after the chain, with this session's history."""
        return distribution(torch.from_numpy(self.logits), settings, self.prompt_ids, self.generated)
