"""The one seam between the app and the shared model: `ModelRunner`.

Every use of the model goes through here, under one lock (hooks sit on the shared modules,
so two runs must never overlap, and two cores are better used by one run at a time):
analysing prompts into `Trace`s, one layer's tensors recomputed from a trace, next-token
logits, a KV-cache step, hooked runs for interventions, the logit lens. Token text comes from
here too. Nothing under `playground/` or `app.py` holds the model or the tokenizer (a test
checks it).

Analyses that arrive together run as one batched forward: the prompts are padded on the
right, which changes nothing for the real positions (causal attention never looks right),
so each trace equals running its prompt alone. Whoever holds the model next takes every
waiting analysis that fits `MAX_BATCH_TOKENS`.

After an analysis, the logit lens is computed in the background, a block of rows at a time,
whenever no analysis is waiting; opening the tab then shows it at once, and opening it
earlier finishes the rest in the foreground.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import tempfile
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import regex
import torch

from model import KVCache, ModelEncoding, Transformer, UnencodableTextError
from model.interventions import (
    ATTRIBUTION_HOOKS, Ablation, Attribution, Sweep, ablation_hooks, direct_logit_attribution, logit_difference,
    patching_sweep, run_from,
)
from model.arithmetic import measure_peak_flops
from model.bpe import ReplayStep, merge_steps
from model.sampling import dry_breaker_ids
from model.lens import ROWS_PER_MATMUL, LensResult, LogitLens, lens_logits
from model.transformer import HookFn, rms_scale

from .figures.attention import thumbnail_levels
from .trace import HEAD_STAT_NAMES, LayerTensors, Trace, TraceBudget, head_statistics

T_ = TypeVar("T_")

MAX_PROMPT_TOKENS = 512
MAX_PROMPT_CHARS = 20_000
MODEL_WAIT_S = 30  # how long a request waits for the model while others use it
MAX_BATCH_TOKENS = 1024  # padded tokens in one batched analysis (its logits alone are 200 MB at this size)
THUMBNAIL = 30  # pixels per head in the overview of all heads
TRACE_MEMORY_MB = int(os.environ.get("PLAYGROUND_TRACE_MEMORY_MB", 6144))  # all visitors' traces together
BACKGROUND_LENS_JOBS = 4  # traces waiting for a background lens at most; older ones wait until shown
BACKGROUND_LENS_ROWS = 128  # (row, position) pairs per hold of the model in the background: about 0.1 s
TOKEN_LAYER_S = 6e-5  # seconds per token per layer in a batched run on two AVX2 cores, until measured here

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


class PromptError(ValueError):
    """A prompt or request the app will not run, with a message meant for the person who made it."""


class ModelBusyError(PromptError):
    """The shared model stayed busy longer than a request may wait."""


class TraceDropped(PromptError):
    """The visitor's trace was released to make room for others."""

    def __init__(self) -> None:
        super().__init__("This analysis was dropped to make room for other visitors' analyses. "
                         "Press Analyze to run it again.")


@dataclass(eq=False)
class _Analysis:
    """One prompt waiting to be analysed."""

    ids: list[int]
    prompt: str
    chat: bool
    notes: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    trace: Trace | None = None
    error: BaseException | None = None


class ModelRunner:
    """The one shared model and tokenizer, with the app's limits and a lock around every run."""

    def __init__(self, net: Transformer, enc: ModelEncoding, max_tokens: int = MAX_PROMPT_TOKENS,
                 wait_s: float = MODEL_WAIT_S, memory_mb: int = TRACE_MEMORY_MB, background_lens: bool = True):
        self._net = net
        self._enc = enc
        self.max_tokens = max_tokens
        self.wait_s = wait_s
        self.budget = TraceBudget(memory_mb * 2**20)
        self._lock = threading.Lock()
        self._waiting: list[_Analysis] = []  # analyses not yet taken into a batch
        self._waiting_lock = threading.Lock()
        self._token_layer_s = TOKEN_LAYER_S  # measured on batched runs as they happen, for estimates
        self._norms: torch.Tensor | None = None  # every token's embedding norm, computed once
        # Traces whose lens the background computes, newest first; the oldest fall off (computed when shown).
        self._lens_later: deque[Trace] = deque(maxlen=BACKGROUND_LENS_JOBS)
        self._lens_wakeup = threading.Event()
        self._closing = threading.Event()
        self._lens_thread = None
        if background_lens:
            self._lens_thread = threading.Thread(target=self._lens_worker, name="background-lens", daemon=True)
            self._lens_thread.start()
            atexit.register(self.close)  # a daemon thread inside torch at exit aborts the process

    def close(self) -> None:
        """Stop the background work (after its current block)."""
        self._closing.set()
        self._lens_wakeup.set()
        if self._lens_thread is not None:
            self._lens_thread.join(timeout=10)

    def lens_later(self, trace: Trace) -> None:
        """Compute the trace's logit lens in the background, when the model is idle."""
        if self._lens_thread is not None:
            self._lens_later.append(trace)
            self._lens_wakeup.set()

    @contextlib.contextmanager
    def _locked(self, wait_s: float | None = None) -> Iterator[Transformer]:
        """The model, to one request at a time; a clear error after wait_s."""
        wait_s = self.wait_s if wait_s is None else wait_s
        if not self._lock.acquire(timeout=wait_s):
            raise ModelBusyError(f"The model is busy with other requests (waited {wait_s:g} s). "
                                 f"Try again in a moment.")
        try:
            with torch.inference_mode():
                yield self._net
        finally:
            self._lock.release()

    @property
    def cfg(self):
        return self._net.cfg

    @property
    def waiting(self) -> int:
        """Analyses waiting for the model."""
        return len(self._waiting)

    # -- text ---------------------------------------------------------------------------

    @property
    def eos_token_id(self) -> int | None:
        return self._enc.eos_token_id

    @functools.cached_property
    def dry_breakers(self) -> tuple[int, ...]:
        """The tokens that stop a DRY repeat (llama.cpp's default breakers: newline, ':', '"', '*')."""
        def text(token: int) -> str:
            try:
                return self._enc.decode_single_token_bytes(token).decode("utf-8", errors="replace")
            except KeyError:  # an id the tokenizer does not use
                return ""

        return dry_breaker_ids([text(t) for t in range(self.cfg.vocab_size)])

    @property
    def n_merges(self) -> int:
        """Merges the tokenizer learned: its ordinary tokens that are not single bytes."""
        return sum(len(piece) > 1 for piece in self._enc._mergeable_ranks)

    @property
    def special_ids(self) -> list[int]:
        """Ids of the control tokens, such as <|im_start|>."""
        return sorted(self._enc._special_tokens.values())

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token id stands for."""
        return self._enc.decode_single_token_bytes(int(token))

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids))

    def tokens(self, text: str) -> list[int]:
        """The tokens of a piece of text (unencodable characters replaced; special-token text stays text)."""
        return self._enc.encode(text, errors="replace")

    def first_token(self, text: str) -> int | None:
        """The first token of a piece of text, None for no tokens."""
        ids = self.tokens(text)
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

    # -- analysing prompts, batched ----------------------------------------------------------

    def analyze(self, prompt: str, chat: bool = False, progress: Progress | None = None, lens: bool = True) -> Trace:
        """Run the model on a prompt (batched with any others waiting) and keep what the tabs show; with `lens`,
        its logit lens follows in the background."""
        ids, prompt, notes = self.tokenize(prompt, chat)
        request = _Analysis(ids, prompt, chat, notes)
        with self._waiting_lock:
            self._waiting.append(request)
        deadline = time.monotonic() + self.wait_s
        reported = None  # the place in line last shown to the visitor
        while not request.done.is_set():
            if self._lock.acquire(timeout=0.02):
                try:
                    with torch.inference_mode():
                        self._serve_waiting()
                finally:
                    self._lock.release()
            elif time.monotonic() > deadline:
                with self._waiting_lock:
                    if request in self._waiting:
                        self._waiting.remove(request)
                        raise ModelBusyError(f"The model is busy with other requests (waited {self.wait_s:g} s). "
                                             f"Try again in a moment.")
            elif progress is not None:
                with self._waiting_lock:
                    ahead = self._waiting.index(request) if request in self._waiting else 0
                if ahead != reported:  # only when it changes: each report is a message to the browser
                    progress(0.0,
                             f"Waiting for the model: {ahead} analyses ahead" if ahead else "Waiting for the model")
                    reported = ahead
        if request.error is not None:
            raise request.error
        trace = request.trace
        self.budget.admit(trace)
        if lens:
            self.lens_later(trace)
        return trace

    def _serve_waiting(self) -> None:
        """With the model held: take the oldest waiting analysis and the others that fit with it, and run them."""
        with self._waiting_lock:
            if not self._waiting:
                return
            batch = [self._waiting[0]]
            longest = len(batch[0].ids)
            for request in self._waiting[1:]:
                padded = max(longest, len(request.ids))
                if (len(batch) + 1) * padded <= MAX_BATCH_TOKENS:
                    batch.append(request)
                    longest = padded
            for request in batch:
                self._waiting.remove(request)
        try:
            started = time.perf_counter()
            for request, trace in zip(batch, self._trace_batch(batch)):
                request.trace = trace
            self._measured(time.perf_counter() - started, len(batch) * max(len(r.ids) for r in batch))
        except Exception as e:  # every visitor in the batch hears of it
            for request in batch:
                request.error = e
        finally:
            for request in batch:
                request.done.set()

    def _measured(self, seconds: float, tokens: int) -> None:
        """Learn the time per token-layer from a batched run (small ones are mostly overhead: not counted)."""
        if tokens >= 128:
            self._token_layer_s = 0.8 * self._token_layer_s + 0.2 * seconds / (tokens * self.cfg.n_layers)

    def estimate_seconds(self, token_layers: int) -> float:
        """About how long a run of that many token-layers takes here."""
        return token_layers * self._token_layer_s

    def _trace_batch(self, batch: list[_Analysis]) -> list[Trace]:
        """One forward over the right-padded prompts; each trace keeps only its own positions."""
        cfg, net = self.cfg, self._net
        lengths = [len(r.ids) for r in batch]
        T = max(lengths)
        tokens = torch.zeros(len(batch), T, dtype=torch.long)
        for i, r in enumerate(batch):
            tokens[i, : lengths[i]] = torch.tensor(r.ids)
        resid = [np.empty((cfg.n_layers + 1, n, cfg.d_model), dtype=np.float32) for n in lengths]
        stats = [np.empty((cfg.n_layers, cfg.n_heads, len(HEAD_STAT_NAMES)), dtype=np.float32) for _ in batch]
        thumbs = [np.empty((cfg.n_layers, cfg.n_heads, THUMBNAIL, THUMBNAIL), dtype=np.uint8) for _ in batch]

        def keep_resid(row: int) -> HookFn:
            def hook(x: torch.Tensor, point) -> None:
                for i, n in enumerate(lengths):
                    resid[i][row] = x[i, :n].float().numpy()
            return hook

        def summarise(layer: int) -> HookFn:
            def hook(pattern: torch.Tensor, point) -> None:  # (B, H, T, T), seen once and never stored
                for i, n in enumerate(lengths):
                    own = pattern[i, :, :n, :n]  # causal: a real query never sees the padding
                    stats[i][layer] = head_statistics(own)
                    thumbs[i][layer] = thumbnail_levels(own.float().numpy(), THUMBNAIL)
            return hook

        hooks = [("hook_embed", keep_resid(0))]
        for l in range(cfg.n_layers):
            hooks += [(f"blocks.{l}.hook_resid_post", keep_resid(l + 1)),
                      (f"blocks.{l}.attn.hook_pattern", summarise(l))]
        logits = net.run_with_hooks(tokens, hooks)  # (B, T, V)
        traces = []
        for i, (r, n) in enumerate(zip(batch, lengths)):
            log_probs = logits[i, :n].float().log_softmax(-1)
            surprisal = np.full(n, np.nan, dtype=np.float32)
            if n > 1:
                picked = log_probs[:-1].gather(-1, tokens[i, 1:n, None])[:, 0]
                surprisal[1:] = (-picked / np.log(2)).numpy()
            traces.append(Trace(
                prompt=r.prompt, chat=r.chat, ids=np.array(r.ids, dtype=np.int64),
                token_bytes=[self.token_bytes(t) for t in r.ids],
                special=np.array([self._enc.is_special_token(t) for t in r.ids]),
                surprisal=surprisal, next_logits=_own(logits[i, n - 1]), resid=resid[i],
                head_stats=stats[i], thumbnails=thumbs[i], notes=r.notes,
            ))
        return traces

    # -- what a trace recomputes when shown ------------------------------------------------

    def _use(self, trace: Trace) -> np.ndarray:
        """The trace's residual streams; it becomes the most recently used. TraceDropped if released."""
        resid = trace.resid
        if trace.dropped or resid is None:
            raise TraceDropped()
        self.budget.touch(trace)
        return resid

    def layer(self, trace: Trace, layer: int) -> LayerTensors:
        """One layer's q, k, v (before and after RoPE) and attention pattern, recomputed from its residual with
        the model's own code (equal to the forward's hooks), and kept for the next few calls."""
        resid = self._use(trace)
        kept = trace.layers.get(layer)
        if kept is not None:
            return kept
        tensors = self._compute_layer(resid, layer)
        trace.keep_layer(layer, tensors)
        return tensors

    def _compute_layer(self, resid: np.ndarray, layer: int) -> LayerTensors:
        with self._locked() as net:
            block = net.blocks[layer]
            x = torch.from_numpy(resid[layer])[None]  # (1, T, D): the residual entering this layer
            rotations, mask = net.positions(0, resid.shape[1])
            q, k, v, rot_q, rot_k = block.attn.project(block.ln1(x), rotations)
            pattern = block.attn.pattern(rot_q.transpose(1, 2), rot_k.transpose(1, 2), mask)
        return LayerTensors(*(t[0].float().numpy() for t in (q, k, v, rot_q, rot_k, pattern)))

    def lens_rows(self, trace: Trace, with_mid: bool) -> tuple[list[str], np.ndarray]:
        """Row labels and residual streams (R, T, D) for the logit lens, bottom to top: the embedding, then each
        layer (after its attention block too, with_mid)."""
        resid = self._use(trace)
        L = self.cfg.n_layers
        if not with_mid:
            return ["embed"] + [f"L{l}" for l in range(L)], resid
        mid = self._resid_mid(trace, resid)
        labels = ["embed"] + [name for l in range(L) for name in (f"L{l} attn", f"L{l}")]
        interleaved = np.stack([mid, resid[1:]], axis=1).reshape(2 * L, *resid.shape[1:])
        return labels, np.concatenate([resid[:1], interleaved])

    def _resid_mid(self, trace: Trace, resid: np.ndarray) -> np.ndarray:
        """The residual after each attention block (L, T, D), from the residual before it, computed once."""
        if trace.resid_mid is None:
            mid = np.empty((self.cfg.n_layers, *resid.shape[1:]), dtype=np.float32)
            with self._locked() as net:
                rotations, mask = net.positions(0, trace.n_tokens)
                for l, block in enumerate(net.blocks):
                    x = torch.from_numpy(resid[l])[None]
                    mid[l] = (x + block.attn(block.ln1(x), rotations, mask, None, l))[0].numpy()
            trace.resid_mid = mid
            self.budget.admit(trace)  # it grew
        return trace.resid_mid

    def lens(self, trace: Trace, with_mid: bool, progress: Progress | None = None) -> tuple[list[str], LensResult]:
        """Row labels and logit-lens summaries of the trace, computed once per (trace, rows) and kept in it.
        Finishes a background computation already under way rather than starting again."""
        key = "mid" if with_mid else "post"
        labels, rows = self.lens_rows(trace, with_mid)
        while key not in trace.lens:
            self._advance_lens(trace, key, rows, progress=progress)
        return labels, trace.lens[key]

    def _advance_lens(self, trace: Trace, key: str, rows: np.ndarray, progress: Progress | None = None,
                      blocks: int | None = None, wait_s: float | None = None,
                      block_rows: int = ROWS_PER_MATMUL) -> None:
        """Compute up to `blocks` blocks of `block_rows` lens rows (all with None), a block per hold of the model."""
        with trace.lock:
            job = trace.lens_jobs.get(key)
            if job is None and key not in trace.lens:
                job = trace.lens_jobs[key] = _LensJob()
        if job is None:
            return
        with job.lock:  # one thread advances a job at a time; the other waits, then finds it further on
            done = 0
            while key not in trace.lens and (blocks is None or done < blocks):
                if trace.dropped:
                    raise TraceDropped()
                with self._locked(wait_s) as net:
                    if job.lens is None:
                        next_ids = torch.tensor(np.append(trace.ids[1:], -1))
                        job.lens = LogitLens(net, torch.from_numpy(rows), next_ids)
                    else:
                        job.lens.step(block_rows)
                    if job.lens.done:
                        trace.lens[key] = job.lens.result()
                        trace.lens_jobs.pop(key, None)
                done += 1
                if progress is not None and job.lens is not None:
                    progress(job.lens.fraction, "Computing the logit lens")

    def _lens_worker(self) -> None:
        """Background: the logit lens of recent traces, a block at a time, only while no analysis is waiting."""
        while not self._closing.is_set():
            self._lens_wakeup.wait()
            self._lens_wakeup.clear()
            while self._lens_later and not self._closing.is_set():
                trace = self._lens_later.pop()  # the newest: its visitor is the likeliest to open the tab next
                try:
                    while "post" not in trace.lens and not trace.dropped and not self._closing.is_set():
                        if self._waiting:
                            time.sleep(0.05)
                            continue
                        self._advance_lens(trace, "post", self.lens_rows(trace, False)[1], blocks=1, wait_s=1.0,
                                           block_rows=BACKGROUND_LENS_ROWS)
                except PromptError:  # dropped, or the model stayed busy: it will be computed when shown
                    pass

    def lens_logits(self, resid: np.ndarray) -> torch.Tensor:
        """Logits (..., V) that residuals (..., D) give through the final norm and the unembedding."""
        with self._locked() as net:
            return lens_logits(net, torch.from_numpy(np.ascontiguousarray(resid)))

    # -- running the model on ids --------------------------------------------------------------

    def next_logits(self, ids: list[int]) -> np.ndarray:
        """The model's next-token logits (V,) after ids."""
        with self._locked() as net:
            return _own(net(torch.tensor([ids]))[0, -1])

    def run_with_hooks(self, ids: list[int] | torch.Tensor, hooks: list[tuple[str, HookFn]]) -> torch.Tensor:
        """Logits (B, T, V) with hook functions attached for this run only (ablations, patching)."""
        tokens = ids if isinstance(ids, torch.Tensor) else torch.tensor([ids])
        with self._locked() as net:
            return net.run_with_hooks(tokens, hooks).float()

    def generation_cache(self, trace: Trace, extra: int) -> KVCache:
        """A KV cache holding the trace's keys (after RoPE) and values, with room for `extra` more tokens."""
        resid = self._use(trace)
        cfg, T = self.cfg, trace.n_tokens
        weight = self._net.tok_embeddings.weight
        cache = KVCache.empty(cfg, 1, T + extra, weight.dtype, weight.device)
        with self._locked() as net:
            rotations, _ = net.positions(0, T)
            for l, block in enumerate(net.blocks):
                _, _, v, _, rot_k = block.attn.project(block.ln1(torch.from_numpy(resid[l])[None]), rotations)
                cache.k[l][:, :, :T] = rot_k.transpose(1, 2)  # (1, G, T, Dh)
                cache.v[l][:, :, :T] = v.transpose(1, 2)
        cache.length = T
        return cache

    def step(self, token: int, cache: KVCache, attention: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """One generation step: the next-token logits (V,) after `token`, which is appended to the cache; with
        `attention`, also what the new token attends to in every layer and head, (L, H, S) over all positions."""
        rows: list[np.ndarray] = []

        def keep_row(pattern: torch.Tensor, point) -> None:  # (1, H, 1, S)
            rows.append(_own(pattern[0, :, -1]))

        hooks = [(f"blocks.{l}.attn.hook_pattern", keep_row) for l in range(self.cfg.n_layers)] if attention else []
        with self._locked() as net:
            logits = _own(net.run_with_hooks(torch.tensor([[int(token)]]), hooks, cache=cache)[0, -1])
        return (logits, np.stack(rows)) if attention else logits

    # -- decoding strategies -------------------------------------------------------------------

    def run_strategy(self, strategy: Callable[..., T_], *args, **kwargs) -> T_:
        """Run one of `model.decoding`'s strategies, strategy(net, *args, **kwargs), holding the model: one run at a
        time, each bounded by its token count (the tab releases the model between runs of a sweep)."""
        with self._locked() as net:
            return strategy(net, *args, **kwargs)

    # -- interventions ----------------------------------------------------------------------

    def ablate(self, trace: Trace, ablation: Ablation) -> np.ndarray:
        """Next-token logits (V,) with the ablation applied, run from the first ablated layer on its residual."""
        resid = self._use(trace)
        if ablation.empty:
            return trace.next_logits
        first = ablation.first_layer
        with self._locked() as net:
            return _own(run_from(net, first, torch.from_numpy(resid[first])[None], ablation_hooks(ablation))[0])

    def layer_sweep(self, trace: Trace, mode: str, a: int, b: int) -> dict[str, np.ndarray]:
        """Each layer's attention block and MLP ablated in turn (zero or mean over positions): the prompt's mean
        next-token loss and the logit difference a - b at the end, per layer, and without any ablation."""
        resid = self._use(trace)
        ids = torch.from_numpy(trace.ids)
        L, T = self.cfg.n_layers, trace.n_tokens
        out = {key: np.empty(L, dtype=np.float32) for key in ("loss_attn", "loss_mlp", "diff_attn", "diff_mlp")}

        def knock_out(row: int) -> HookFn:
            def hook(x: torch.Tensor, point) -> torch.Tensor:
                x = x.clone()
                x[row] = 0 if mode == "zero" else x[row].mean(0, keepdim=True)
                return x
            return hook

        def loss_and_diff(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2),
                                                     ids[None, 1:].expand(len(logits), -1),
                                                     reduction="none").mean(-1) if T > 1 else torch.zeros(len(logits))
            return loss.numpy(), (logits[:, -1, a] - logits[:, -1, b]).numpy()

        with self._locked() as net:
            base = run_from(net, 0, torch.from_numpy(resid[0])[None], last_only=False).float()
        base_loss, base_diff = loss_and_diff(base)
        for l in range(L):
            with self._locked() as net:
                x = torch.from_numpy(resid[l])[None].expand(2, -1, -1).clone()  # row 0: attention out, row 1: MLP out
                hooks = [(f"blocks.{l}.hook_attn_out", knock_out(0)), (f"blocks.{l}.hook_mlp_out", knock_out(1))]
                logits = run_from(net, l, x, hooks, last_only=False).float()
            loss, diff = loss_and_diff(logits)
            out["loss_attn"][l], out["loss_mlp"][l] = loss
            out["diff_attn"][l], out["diff_mlp"][l] = diff
        return {**out, "loss": float(base_loss[0]), "diff": float(base_diff[0])}

    def attribute(self, ids: list[int], a: int, b: int) -> Attribution:
        """Direct logit attribution of the logit difference a - b after ids."""
        with self._locked() as net:
            _, cache = net.run_with_cache(torch.tensor([ids]), names_filter=ATTRIBUTION_HOOKS)
            direction = net.output.weight[a].float() - net.output.weight[b].float()
            return direct_logit_attribution(net, cache, direction)

    def patching(self, clean_ids: list[int], corrupted_ids: list[int], sweep: Sweep, a: int, b: int
                 ) -> tuple[float, float, Iterator[tuple[int, np.ndarray]]]:
        """Activation patching from the clean run into the corrupted one: (clean logit difference, corrupted one,
        the normalised logit difference of every patch, layer by layer: 0 = as corrupted, 1 = as clean)."""
        if len(clean_ids) != len(corrupted_ids):
            raise PromptError(f"Patching needs prompts of the same token length: the clean prompt has "
                              f"{len(clean_ids)} tokens, the corrupted one {len(corrupted_ids)}.")
        L = self.cfg.n_layers
        wanted = [f"blocks.{l}.{sweep.hook}" for l in range(L)] + [f"blocks.{l}.hook_resid_pre" for l in range(L)]
        with self._locked() as net:
            clean_logits, clean = net.run_with_cache(torch.tensor([clean_ids]), names_filter=wanted)
            corrupt_logits, corrupt = net.run_with_cache(torch.tensor([corrupted_ids]), names_filter=r"hook_resid_pre$")
        clean_diff = float(clean_logits[0, -1, a] - clean_logits[0, -1, b])
        corrupt_diff = float(corrupt_logits[0, -1, a] - corrupt_logits[0, -1, b])
        span = clean_diff - corrupt_diff
        if abs(span) < 1e-6:
            raise PromptError("The clean and corrupted prompts give the same logit difference for these two tokens, "
                              "so there is nothing to restore: choose prompts or tokens that differ.")
        clean_acts = [clean[f"blocks.{l}.{sweep.hook}"][0] for l in range(L)]
        corrupt_resid = [corrupt[f"blocks.{l}.hook_resid_pre"][0] for l in range(L)]
        metric = logit_difference(a, b)

        def rows() -> Iterator[tuple[int, np.ndarray]]:
            sweep_rows = patching_sweep(self._net, sweep, corrupt_resid, clean_acts, metric)
            T = len(clean_ids)
            for layer in range(L):
                started = time.perf_counter()
                with self._locked():  # a layer's patches per hold of the model: others get their turn between
                    layer, values = next(sweep_rows)
                self._measured(time.perf_counter() - started, len(values) * T * (L - layer) // L)
                yield layer, ((values.float() - corrupt_diff) / span).numpy()

        return clean_diff, corrupt_diff, rows()

    # -- the model's weights, read -----------------------------------------------------------

    def embeddings(self, tokens: list[int], k: int = 10) -> EmbeddingView:
        """Each token's embedding row, its nearest tokens by cosine, and the same row read as an output direction
        (through the final norm, as the logit lens's "embed" row); every token's embedding norm; a 2-D PCA."""
        with self._locked() as net:
            weight = net.tok_embeddings.weight.float()  # (V, D); tied: also the unembedding
            if self._norms is None:
                self._norms = weight.norm(dim=-1)
            rows = weight[tokens]  # (n, D)
            cosine = torch.nn.functional.normalize(rows, dim=-1) @ torch.nn.functional.normalize(weight, dim=-1).T
            cos_top = cosine.topk(k + 1, dim=-1)  # the token itself comes first
            out = lens_logits(net, rows)  # (n, V): the embedding through the final norm and the unembedding
            probs = out.softmax(-1)
            out_top = probs.topk(k, dim=-1)
            self_rank = (out > out.gather(-1, torch.tensor(tokens)[:, None])).sum(-1)
        centred = rows - rows.mean(0, keepdim=True)
        if len(tokens) >= 3:
            _, singular, vt = torch.linalg.svd(centred, full_matrices=False)
            pca, explained = centred @ vt[:2].T, singular[:2] ** 2 / (singular**2).sum()
        else:
            pca, explained = torch.zeros(len(tokens), 2), torch.zeros(2)
        return EmbeddingView(np.array(tokens), rows.numpy(), self._norms.numpy(), cos_top.indices[:, 1:].numpy(),
                             cos_top.values[:, 1:].numpy(), out_top.indices.numpy(), out_top.values.numpy(),
                             self_rank.numpy(), pca.numpy(), explained.numpy())

    def block(self, trace: Trace, layer: int, position: int) -> BlockView:
        """Inside one block at one position: the residual, both RMSNorms (scale and gain), and the SwiGLU MLP's gate,
        up and post activations with each neuron's write-out size, recomputed from the trace's residual."""
        resid = self._use(trace)
        with self._locked() as net:
            block = net.blocks[layer]
            x = torch.from_numpy(resid[layer])[None]  # (1, T, D) entering the layer
            rotations, mask = net.positions(0, trace.n_tokens)
            attn_out = block.attn(block.ln1(x), rotations, mask, None, layer)
            mid = x + attn_out
            normed = block.ln2(mid)
            gate, up = block.mlp.w1(normed)[0, position], block.mlp.w3(normed)[0, position]  # (F,)
            post = torch.nn.functional.silu(gate) * up
            mlp_out = block.mlp.w2(post)
            w2 = block.mlp.w2.weight.float()  # (D, F)
            view = BlockView(
                layer, position, _own(x[0, position]), float(rms_scale(x[0, position], net.cfg.norm_eps)),
                _own(block.ln1.weight), _own(attn_out[0, position]), _own(mid[0, position]),
                float(rms_scale(mid[0, position], net.cfg.norm_eps)), _own(block.ln2.weight), _own(gate), _own(up),
                _own(post), _own(w2.norm(dim=0)), _own(mlp_out), net.cfg.norm_eps)
        return view

    def parameter_count(self) -> int:
        """The model's parameters, counted from its weights (a tied matrix once)."""
        with self._locked() as net:
            return sum(p.numel() for p in net.parameters())

    def norm_gains(self) -> np.ndarray:
        """Every RMSNorm's gain: (2L + 1, D), ln1 and ln2 of each layer, then the final norm."""
        with self._locked() as net:
            gains = [w for b in net.blocks for w in (b.ln1.weight, b.ln2.weight)] + [net.ln_final.weight]
            return torch.stack(gains).float().numpy()

    def measure_speed(self, ids: list[int], decode_steps: int = 16) -> dict[str, float]:
        """Measured here, now: the float32 matmul peak (a micro-benchmark), prefill tokens/s over `ids`, and decode
        tokens/s with the KV cache. About two seconds, holding the model."""
        with self._locked() as net:
            peak = measure_peak_flops(0.5)
            tokens = torch.tensor([ids])
            net(tokens)
            prefill = min(_timed(lambda: net(tokens)) for _ in range(3))
            cache = KVCache.empty(net.cfg, 1, len(ids) + decode_steps + 1, net.tok_embeddings.weight.dtype, "cpu")
            net(tokens, cache=cache)
            step = torch.tensor([[ids[-1]]])
            decode = _timed(lambda: [net(step, cache=cache) for _ in range(decode_steps)])
        return {"peak_flops": peak, "prefill_tokens_per_s": len(ids) / prefill,
                "decode_tokens_per_s": decode_steps / decode,
                "context": len(ids)}

    def merge_steps(self, text: str) -> list[tuple[bytes, list[ReplayStep]]]:
        """How the model's tokenizer builds each piece of `text`, merge by merge (see `model.bpe.merge_steps`)."""
        pieces = regex.findall(self._enc._pat_str, self._enc.check(text, errors="replace"))
        return [(p.encode("utf-8"), merge_steps(p.encode("utf-8"), self._enc._mergeable_ranks)) for p in pieces]

    # -- export -----------------------------------------------------------------------------

    def export(self, trace: Trace, folder: str | Path | None = None) -> Path:
        """The trace's tensors as an .npz file (`numpy.load` reads it): what the trace keeps, plus every layer's
        q, k, v, rot_q, rot_k and pattern, recomputed a layer at a time into files so memory stays bounded."""
        resid = self._use(trace)
        path = Path(folder or tempfile.mkdtemp(prefix="trace-")) / "trace.npz"
        small = dict(ids=trace.ids, prompt=np.array(trace.prompt), chat=np.array(trace.chat),
                     token_bytes=np.array([b.hex() for b in trace.token_bytes]), special=trace.special,
                     surprisal=trace.surprisal, next_logits=trace.next_logits, resid=resid,
                     head_stats=trace.head_stats, head_stat_names=np.array(HEAD_STAT_NAMES))
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path, "w", allowZip64=True) as npz:
            for name, array in small.items():
                with npz.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
            stacked: dict[str, np.memmap] = {}
            for l in range(self.cfg.n_layers):
                tensors = self._compute_layer(resid, l)
                for name, array in vars(tensors).items():
                    if name not in stacked:
                        shape = (self.cfg.n_layers, *array.shape)
                        stacked[name] = np.lib.format.open_memmap(Path(tmp) / f"{name}.npy", mode="w+",
                                                                  dtype=array.dtype, shape=shape)
                    stacked[name][l] = array
            for name, array in stacked.items():
                array.flush()
                del array
                npz.write(Path(tmp) / f"{name}.npy", f"{name}.npy")
            stacked.clear()
        return path


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@dataclass(frozen=True)
class EmbeddingView:
    """Tokens' embedding rows and what they say (n tokens, k neighbours)."""

    tokens: np.ndarray  # (n,)
    rows: np.ndarray  # (n, D)
    norms: np.ndarray  # (V,) every token's embedding norm
    nearest: np.ndarray  # (n, k) nearest other tokens by cosine
    cosine: np.ndarray  # (n, k)
    output: np.ndarray  # (n, k) most likely tokens when the row is read out through the final norm
    output_p: np.ndarray  # (n, k)
    self_rank: np.ndarray  # (n,) rank of the token itself in that read-out (0 = it predicts itself)
    pca: np.ndarray  # (n, 2) the rows projected on their first two principal components
    explained: np.ndarray  # (2,) share of variance each explains


@dataclass(frozen=True)
class BlockView:
    """One layer at one position, recomputed from the trace (D d_model, F MLP width)."""

    layer: int
    position: int
    resid_pre: np.ndarray  # (D,) the residual entering the layer
    scale1: float  # ln1's divisor, sqrt(mean(x^2) + eps)
    gain1: np.ndarray  # (D,)
    attn_out: np.ndarray  # (D,)
    resid_mid: np.ndarray  # (D,)
    scale2: float
    gain2: np.ndarray  # (D,)
    gate: np.ndarray  # (F,) w1 x, before SiLU
    up: np.ndarray  # (F,) w3 x
    post: np.ndarray  # (F,) silu(gate) * up
    w2_norms: np.ndarray  # (F,) the length of each neuron's write-out column of w2
    mlp_out: np.ndarray  # (D,)
    eps: float


def _own(t: torch.Tensor) -> np.ndarray:
    """A float32 copy of a slice, as numpy: a view would keep the whole tensor it came from alive (a trace's
    next-token logits would hold every position's, 100 MB at 512 tokens)."""
    return t.float().numpy().copy()


@dataclass(eq=False)
class _LensJob:
    """A logit-lens computation in progress (created on the first block, under the model's lock)."""

    lens: LogitLens | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

