"""The one seam between the app and the shared model: `ModelRunner`.

Every use of the model goes through here, one at a time (hooks sit on the shared modules, so two runs must never
overlap, and two cores are better used by one run at a time), in turns (`turns.ModelGate`: short requests first,
long jobs a step per turn, handing the model back in between). The runner keeps the gate and little else: each
method holds the model and hands it to a pure function of the model in `model/` (`views` for one layer or block
recomputed from a trace's residual, `interventions`, `decoding`, `lens`), or hands its turns to the jobs that
live in their own modules: `batcher` (analyses waiting, packed into batched runs), `batch_forward` (a batch's
forward into `Trace`s), `lens_worker` (the logit lens, a block at a time, in the background), `export` (a trace as
`.npz`). The trace budget (`TraceBudget.use`) says whether a trace's residual is still there. `jobs` allows each
visitor one long job at a time; `memo` keeps deterministic results for the next visitor who asks the same. Token
text comes from here too.
Nothing under `playground/` or `app.py` holds the model or the tokenizer (a test checks it).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from model import KVCache, ModelEncoding, Transformer, UnencodableTextError, views
from model.transformer import rms_scale
from model.arithmetic import measure_speed
from model.tokenizer import ReplayStep
from model.interventions import (
    ATTRIBUTION_HOOKS, Ablation, Attribution, LayerSweep, Sweep, ablation_hooks, collect_layer_sweep,
    direct_logit_attribution, layer_sweep, logit_difference, patching_runs, patching_sweep, run_from,
)
from model.lab import MaskResult, MaskSpec, SweepPoint, mask_experiment, window_sweep
from model.lens import LensResult, lens_logits
from model.routes import Flow, ScoreSplit, collect_flow, direct_logits, flow_layers, head_output, score_split
from model.sampling import dry_breaker_ids

from .batcher import PromptRequest, Batcher, Progress
from .view import text_of
from .errors import ModelBusyError, PromptError, TraceDropped
from .export import export_trace
from .lens_worker import BackgroundLens, advance_lens
from .memo import Memo
from .trace import LayerTensors, Trace, TraceBudget
from .batch_forward import trace_batch
from .turns import HeavyJobs, ModelGate

__all__ = ["MAX_PROMPT_CHARS", "MAX_PROMPT_TOKENS", "ModelBusyError", "ModelRunner", "Progress", "PromptError",
           "TRACE_MEMORY_MB", "TraceDropped"]

T_ = TypeVar("T_")

MAX_PROMPT_TOKENS = 512
MAX_PROMPT_CHARS = 20_000
MODEL_WAIT_S = 30  # how long a request waits for the model while others use it
ROUTES_MAX_TOKENS = 128  # the Routes tab's prompts at most: its attention parts grow as T^2 (about 6 s at 128)
LENS_QUIET_S = 1.0  # the background lens starts a block only after this long without an analysis
TRACE_MEMORY_MB = int(os.environ.get("PLAYGROUND_TRACE_MEMORY_MB", 6144))  # all visitors' traces together


class ModelRunner:
    """The one shared model and tokenizer, with the app's limits and a turn at the gate for every run. `gate` may be
    given (a test holds it to make the model busy)."""

    def __init__(self, net: Transformer, enc: ModelEncoding, max_tokens: int = MAX_PROMPT_TOKENS,
                 wait_s: float = MODEL_WAIT_S, memory_mb: int = TRACE_MEMORY_MB, background_lens: bool = True,
                 gate: ModelGate | None = None):
        self._net = net
        self._enc = enc
        self.gate = gate or ModelGate()
        self.jobs = HeavyJobs()  # the long jobs running, one per visitor
        self.max_tokens = max_tokens
        self.wait_s = wait_s
        self.budget = TraceBudget(memory_mb * 2**20)
        self.memo = Memo()  # deterministic runs' results, for the next visitor who asks the same (a room, one tab)
        self.parameter_count = views.parameter_count(net)  # the model's parameters, from its weights (tied once)
        self.embedding_parameter_count = views.embedding_parameter_count(net)  # of which in the (un)embedding
        self.norm_gains = views.norm_gains(net)  # every RMSNorm's gain (n L + 1, D): weights never change
        self.norm_names = views.norm_names(net)  # each layer's norms over d_model (Gemma has four)
        self._embedding_norms = views.embedding_norms(net)  # (V,), read on every Embeddings view
        self.batcher = Batcher(lambda wait_s, give_up, waiting: self._locked(wait_s, give_up=give_up, waiting=waiting),
                               lambda batch: trace_batch(self._net, self._enc, batch), net.cfg.n_layers,
                               busy_with=lambda: self.gate.holder)
        quiet = lambda: self.batcher.quiet_for() < LENS_QUIET_S  # noqa: E731 (the lens waits for a quiet moment)
        background = functools.partial(self._locked, heavy=True, what="the logit lens of an earlier analysis")
        self._background = BackgroundLens(background, quiet) if background_lens else None

    def close(self) -> None:
        """Stop the background work (after its current block)."""
        if self._background is not None:
            self._background.close()

    @contextlib.contextmanager
    def _locked(self, wait_s: float | None = None, heavy: bool = False, what: str = "",
                give_up: Callable[[], bool] | None = None,
                waiting: Callable[[], None] | None = None) -> Iterator[Transformer | None]:
        """The model at this request's turn (a `heavy` one: a long job's step, after every short request waiting);
        ModelBusyError after wait_s. None instead if `give_up()` comes true first."""
        wait_s = self.wait_s if wait_s is None else wait_s
        if not self.gate.acquire(wait_s, heavy, what, give_up, waiting):
            yield None
            return
        try:
            with torch.inference_mode():
                yield self._net
        finally:
            self.gate.release()

    def _each_held(self, steps: Iterator[T_], what: str) -> Iterator[T_]:
        """A long job's model-using generator, advanced one step per turn at the model: others go in between."""
        while True:
            with self._locked(heavy=True, what=what):
                item = next(steps, _DONE)
            if item is _DONE:
                return
            yield item

    def heavy_job(self, visitor: str | None, what: str) -> contextlib.AbstractContextManager:
        """A visitor's long job, for as long as it runs: PromptError if they already have one running."""
        return self.jobs.running(visitor, what)

    @property
    def cfg(self):
        return self._net.cfg

    # -- text ---------------------------------------------------------------------------

    @property
    def eos_token_id(self) -> int | None:
        return self._enc.eos_token_id

    @functools.cached_property
    def dry_breakers(self) -> tuple[int, ...]:
        """The tokens that stop a DRY repeat (llama.cpp's default breakers: newline, ':', '"', '*')."""
        return dry_breaker_ids(self._enc.token_texts(self.cfg.vocab_size))

    @property
    def has_chat_template(self) -> bool:
        """Whether the model has a chat template (a base model, like Gemma 3 270M's, has none)."""
        return bool(self._enc.chat_template)

    @property
    def tokenizer_kind(self) -> str:
        """"byte_bpe" (SmolLM2's, tiktoken's kind) or "sentencepiece" (Gemma's: text pieces, byte fallback)."""
        return self._enc.kind

    @property
    def adds_bos(self) -> bool:
        """Whether a prompt starts with BOS (Gemma's does: its tokenizer adds it, and the model needs it)."""
        return bool(self._enc.add_bos)

    @property
    def n_merges(self) -> int:
        return self._enc.n_merges

    @property
    def special_ids(self) -> list[int]:
        return self._enc.special_ids

    def merge_steps(self, text: str) -> list[tuple[bytes, list[ReplayStep]]]:
        return self._enc.merge_steps(text)

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token id stands for; for an id the tokenizer does not use (a vocabulary padded past its
        tokens, as many checkpoints' are), a label saying so."""
        try:
            return self._enc.token_bytes(int(token))
        except KeyError:
            return f"<unused id {int(token)}>".encode()

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids))

    def tokens(self, text: str) -> list[int]:
        """The tokens of a piece of text (unencodable characters replaced; special-token text stays text)."""
        return self._enc.encode(text, errors="replace")

    def unencodable(self, text: str) -> list[tuple[int, str]]:
        """The characters of the text this tokenizer has no bytes for, with their positions."""
        return self._enc.unencodable(text)

    def first_token(self, text: str) -> int | None:
        """The first token of a piece of text, None for no tokens."""
        ids = self.tokens(text)
        return ids[0] if ids else None

    def tokenize(self, prompt: str, chat: bool) -> tuple[list[int], str, list[str]]:
        """Token ids for a prompt (in the chat template if asked), the text encoded, and notes on what was changed."""
        if prompt is None or isinstance(prompt, str) and not prompt.strip():
            raise PromptError("Type a prompt first: there is nothing to analyze yet.")
        prompt = text_of(prompt)
        if len(prompt) > MAX_PROMPT_CHARS:
            raise PromptError(f"That prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,} "
                              f"(and {self.max_tokens} tokens). Try a shorter passage.")
        notes = []
        bad = self._enc.unencodable(prompt)
        if bad and len(bad) == len(prompt) - sum(c.isspace() for c in prompt):
            shown = ", ".join(f"U+{ord(c):04X}" for _, c in bad[:3])
            raise PromptError(f"This tokenizer has no bytes for any character of the prompt ({shown}): there is "
                              f"nothing it can encode. Type some text.")
        if bad:
            shown = ", ".join(f"U+{ord(c):04X}" for _, c in bad[:3])
            notes.append(f"{len(bad)} character(s) this tokenizer has no bytes for ({shown}) were replaced by U+FFFD.")
            prompt = self._enc.check(prompt, errors="replace")
        if chat and not self.has_chat_template:
            raise PromptError(f"{self.cfg.name} is a base model: it has no chat template. Untick the chat switch.")
        fallback = self._enc.byte_fallback(prompt)
        if fallback:
            shown = ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(c for _, c in fallback[:20]))
            notes.append(f"{len(fallback)} character(s) are not in this vocabulary ({shown}): each was encoded as its "
                         f"UTF-8 bytes, one token a byte (byte fallback).")
        try:
            ids = self._enc.apply_chat_template(prompt) if chat else self._enc.encode_prompt(prompt)
        except (UnencodableTextError, ValueError) as e:
            raise PromptError(str(e)) from e
        return self._within_limit(ids, hint=" Try a shorter passage."), prompt, notes

    def _within_limit(self, ids: list[int], what: str = "prompt", hint: str = "") -> list[int]:
        """The ids, refused with a message when there are more than the token limit."""
        if len(ids) > self.max_tokens:
            raise PromptError(f"That {what} is {len(ids):,} tokens; the limit is {self.max_tokens}.{hint}")
        return ids

    # -- analysing prompts, batched ----------------------------------------------------------

    def analyze(self, prompt: str, chat: bool = False, progress: Progress | None = None, lens: bool = True) -> Trace:
        """Run the model on a prompt (batched with any others waiting) and keep what the tabs show; with `lens`,
        its logit lens follows in the background."""
        return self.analyze_tokens(*self.tokenize(prompt, chat), chat, progress, lens)

    def analyze_tokens(self, ids: list[int], prompt: str, notes: list[str], chat: bool = False,
                       progress: Progress | None = None, lens: bool = True) -> Trace:
        """`analyze` of a prompt already tokenized (`tokenize`'s ids, text and notes)."""
        trace = self.batcher.submit(PromptRequest(ids, prompt, chat, notes), self.wait_s, progress)
        self.budget.admit(trace)
        if lens:
            self.lens_later(trace)
        return trace

    def lens_later(self, trace: Trace) -> None:
        """Compute the trace's logit lens in the background, when the model is idle."""
        if self._background is not None:
            self._background.add(trace)

    def estimate_seconds(self, token_layers: int) -> float:
        """About how long a run of that many token-layers takes here."""
        return self.batcher.estimate_seconds(token_layers)

    # -- what a trace recomputes when shown ------------------------------------------------

    def layer(self, trace: Trace, layer: int) -> LayerTensors:
        """One layer's q, k, v (before and after RoPE) and attention pattern, recomputed from its residual with
        the model's own code (equal to the forward's hooks), and kept for the next few calls."""
        resid = self.budget.use(trace)
        kept = trace.layers.get(layer)
        if kept is None:
            kept = self._layer_tensors(resid, layer)
            trace.keep_layer(layer, kept)
        return kept

    def _layer_tensors(self, resid: np.ndarray, layer: int) -> LayerTensors:
        with self._locked() as net:
            t = views.layer_tensors(net, torch.from_numpy(resid[layer]), layer)
        return LayerTensors(*(views.own(t[name]) for name in ("q", "k", "v", "rot_q", "rot_k", "pattern")))

    def lens_rows(self, trace: Trace, with_mid: bool) -> tuple[list[str], np.ndarray]:
        """Row labels and residual streams (R, T, D) for the logit lens, bottom to top: the embedding, then each
        layer (after its attention block too, with_mid)."""
        resid = self.budget.use(trace)
        L = self.cfg.n_layers
        if not with_mid:
            return ["embed"] + [f"L{l}" for l in range(L)], resid
        self._resid_mid(trace)
        labels = ["embed"] + [name for l in range(L) for name in (f"L{l} attn", f"L{l}")]
        interleaved = np.stack([trace.resid_mid, resid[1:]], axis=1).reshape(2 * L, *resid.shape[1:])
        return labels, np.concatenate([resid[:1], interleaved])

    def _resid_mid(self, trace: Trace) -> np.ndarray:
        """The residual after each attention block (L, T, D): computed once, then kept with the trace (it grew:
        counted again)."""
        resid = self.budget.use(trace)
        if trace.resid_mid is None:
            with self._locked() as net:
                trace.resid_mid = views.own(views.resid_mid(net, torch.from_numpy(resid)))
            self.budget.admit(trace)
        return trace.resid_mid

    def resid_mid(self, trace: Trace) -> np.ndarray:
        """The residual after each attention block (L, T, D), kept with the trace once computed."""
        return self._resid_mid(trace)

    def lens(self, trace: Trace, with_mid: bool, progress: Progress | None = None) -> tuple[list[str], LensResult]:
        """Row labels and logit-lens summaries of the trace, computed once per (trace, rows) and kept in it.
        Finishes a background computation already under way rather than starting again."""
        key = "mid" if with_mid else "post"
        labels, rows = self.lens_rows(trace, with_mid)
        while key not in trace.lens:
            advance_lens(self._locked, trace, key, rows, self.wait_s, progress=progress)
        return labels, trace.lens[key]

    def lens_logits(self, resid: np.ndarray) -> torch.Tensor:
        """Logits (..., V) that residuals (..., D) give through the final norm and the unembedding."""
        with self._locked() as net:
            return lens_logits(net, torch.from_numpy(np.ascontiguousarray(resid)))

    def block(self, trace: Trace, layer: int, position: int) -> views.BlockView:
        """Inside one block at one position, recomputed from the trace's residual (`model.views.block_view`)."""
        resid = self.budget.use(trace)
        with self._locked() as net:
            return views.block_view(net, torch.from_numpy(resid[layer]), layer, position)

    def export(self, trace: Trace, folder: str | Path | None = None) -> Path:
        """The trace's tensors as an .npz file, every layer's attention tensors recomputed one at a time."""
        resid = self.budget.use(trace)
        return export_trace(trace, resid, self.cfg.n_layers, lambda l: self._layer_tensors(resid, l), folder)

    # -- running the model on ids --------------------------------------------------------------

    def activations(self, ids: list[int]) -> dict[str, torch.Tensor]:
        """Every hook's activation after ids, by TransformerLens name, batch first (`run_with_cache`'s copies)."""
        self._within_limit(ids)
        with self._locked() as net:
            _, cache = net.run_with_cache(torch.tensor([ids]))
        return cache

    def next_logits(self, ids: list[int]) -> np.ndarray:
        """The model's next-token logits (V,) after ids."""
        with self._locked() as net:
            return views.own(net(torch.tensor([ids]))[0, -1])

    def generation_cache(self, trace: Trace, extra: int) -> KVCache:
        """A KV cache holding the trace's keys (after RoPE) and values, with room for `extra` more tokens."""
        resid = self.budget.use(trace)
        with self._locked() as net:
            return views.prefilled_cache(net, torch.from_numpy(resid), extra)

    def step(self, token: int, kv_cache: KVCache,
             attention: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """One generation step: the next-token logits (V,) after `token`, which is appended to the cache; with
        `attention`, also what the new token attends to in every layer and head, (L, H, S) over all positions."""
        rows: list[np.ndarray] = []

        def keep_row(pattern: torch.Tensor, hook) -> None:  # (1, H, 1, S)
            rows.append(views.own(pattern[0, :, -1]))

        hooks = [(f"blocks.{l}.attn.hook_pattern", keep_row) for l in range(self.cfg.n_layers)] if attention else []
        with self._locked() as net:
            logits = views.own(net.run_with_hooks(torch.tensor([[int(token)]]), hooks, kv_cache=kv_cache)[0, -1])
        return (logits, np.stack(rows)) if attention else logits

    def run_strategy(self, strategy: Callable[..., T_], *args, **kwargs) -> T_:
        """Run one of `model.decoding`'s strategies, strategy(net, *args, **kwargs), as a long job: a strategy that
        takes `pause` hands the model to waiting requests between two tokens (and leaves their time out of its
        timings)."""
        what = STRATEGY_NAMES.get(strategy.__name__, strategy.__name__.replace("_", " "))
        with self._locked(heavy=True, what=what) as net:
            if "pause" in inspect.signature(strategy).parameters:
                kwargs["pause"] = functools.partial(self.gate.pause, what)
            return strategy(net, *args, **kwargs)

    # -- interventions ----------------------------------------------------------------------

    def ablate(self, trace: Trace, ablation: Ablation) -> np.ndarray:
        """Next-token logits (V,) with the ablation applied, run from the first ablated layer on its residual."""
        resid = self.budget.use(trace)
        if ablation.empty:
            return trace.next_logits
        first = ablation.first_layer
        with self._locked() as net:
            return views.own(run_from(net, first, torch.from_numpy(resid[first])[None], ablation_hooks(ablation))[0])

    def layer_sweep(self, trace: Trace, mode: str, a: int, b: int) -> LayerSweep:
        """Each layer's attention block and MLP ablated in turn (`model.interventions.layer_sweep`), a layer per
        hold of the model."""
        resid = torch.from_numpy(self.budget.use(trace))
        steps = layer_sweep(self._net, resid, torch.from_numpy(trace.ids), mode, a, b)
        return collect_layer_sweep(self._each_held(steps, "a layer sweep (Intervene)"), self.cfg.n_layers)

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
        metric = logit_difference(a, b)
        what = f"a patching sweep ({sweep.name})"
        with self._locked(heavy=True, what=what) as net:
            runs = patching_runs(net, clean_ids, corrupted_ids, sweep, metric)
        span = runs.clean - runs.corrupted
        if abs(span) < 1e-6:
            raise PromptError("The clean and corrupted prompts give the same logit difference for these two tokens, "
                              "so there is nothing to restore: choose prompts or tokens that differ.")
        L, T = self.cfg.n_layers, len(clean_ids)

        def rows() -> Iterator[tuple[int, np.ndarray]]:
            started = time.perf_counter()
            for layer, values in self._each_held(patching_sweep(self._net, sweep, runs.corrupted_resid,
                                                                runs.clean_acts, metric), what):
                self.batcher.measured(time.perf_counter() - started, len(values) * T * (L - layer) // L)
                yield layer, ((values.float() - runs.corrupted) / span).numpy()
                started = time.perf_counter()

        return runs.clean, runs.corrupted, rows()

    # -- the Lab: the model with another attention mask --------------------------------------

    def _lab_tokens(self, ids: list[int]) -> list[int]:
        if len(ids) < 2:
            raise PromptError("The Lab measures next-token loss: give it at least two tokens.")
        return self._within_limit(ids, "text")

    def mask_experiment(self, ids: list[int], spec: MaskSpec, layers: Iterable[int] | None = None) -> MaskResult:
        """The tokens run unchanged and with the attention pattern in the chosen layers (`model.lab`): two forwards
        in one turn at the model, the pattern's hooks gone when it is handed back."""
        spec.checked(len(self._lab_tokens(ids)))
        with self._locked(what="a mask experiment (Lab)") as net:
            return mask_experiment(net, ids, spec, layers)

    def mask_sweep(self, ids: list[int], windows: list[int], sinks: Iterable[int] = (0, 4),
                   layers: Iterable[int] | None = None) -> Iterator[SweepPoint]:
        """Loss against window size with each sink count (`model.lab.window_sweep`), a point per turn at the model:
        a long job's steps, so others go in between."""
        self._lab_tokens(ids)
        return self._each_held(window_sweep(self._net, ids, windows, sinks, layers), "a window sweep (Lab)")

    # -- explaining one prediction: routes, and why a head attends where it does -------------

    def routes(self, trace: Trace, progress: Progress | None = None) -> Flow:
        """Every node's incoming importances (`model.routes.flow`), computed once per trace, a layer per turn at
        the model (a long job: about 1.6 s for 64 tokens here), and kept with it."""
        resid = self.budget.use(trace)
        if trace.routes is None:
            if trace.n_tokens > ROUTES_MAX_TOKENS:
                raise PromptError(f"Routes are computed for prompts up to {ROUTES_MAX_TOKENS} tokens (their cost grows "
                                  f"with the square of the length); this one has {trace.n_tokens}.")
            L, layers = self.cfg.n_layers, []
            for done, layer in enumerate(self._each_held(flow_layers(self._net, torch.from_numpy(resid)),
                                                         "the routes of an analysis")):
                layers.append(layer)
                if progress is not None:
                    progress((done + 1) / L, f"Routes: layer {done + 1} of {L}")
            trace.routes = collect_flow(layers, L)
            self.budget.admit(trace)
        return trace.routes

    def score_split(self, trace: Trace, layer: int, head: int, query: int, key: int) -> ScoreSplit:
        """One head's score of `key` from `query`, split into (query-side) x (key-side) component terms."""
        resid, mids = self.budget.use(trace), self._resid_mid(trace)
        with self._locked() as net:
            return score_split(net, torch.from_numpy(resid), torch.from_numpy(mids), layer, head, query, key)

    def node_vector(self, trace: Trace, level: int, position: int) -> np.ndarray:
        """The residual state at a Routes node (D,): level 0 after the embedding, 2l + 1 after layer l's attention,
        2l + 2 after its MLP."""
        resid = self.budget.use(trace)
        if level % 2 == 0:
            return resid[level // 2, position]
        return self._resid_mid(trace)[level // 2, position]

    def head_logits(self, trace: Trace, layer: int, head: int, position: int) -> np.ndarray:
        """What one head writes at a position, as direct effects on the logits (V,) through the final norm (its
        scale frozen at that position's last residual)."""
        resid = self.budget.use(trace)
        tensors = self.layer(trace, layer)
        with self._locked() as net:
            scale = float(rms_scale(torch.from_numpy(resid[-1, position]), net.ln_final.eps))
            out = head_output(net, torch.from_numpy(tensors.pattern), torch.from_numpy(tensors.v), layer, head,
                              position)
            return views.own(direct_logits(net, out, scale))

    # -- the model's weights, read -----------------------------------------------------------

    def embeddings(self, tokens: list[int], k: int = 10) -> views.EmbeddingView:
        with self._locked() as net:
            return views.embedding_view(net, tokens, self._embedding_norms, k)

    def measure_speed(self, ids: list[int], decode_steps: int = 16) -> dict[str, float]:
        """`model.arithmetic.measure_speed`, holding the model (about two seconds) as a long job's one step."""
        with self._locked(heavy=True, what="a speed measurement (Arithmetic)") as net:
            return measure_speed(net, ids, decode_steps)


_DONE = object()
STRATEGY_NAMES = {"beam_search": "beam search (Decoding)", "greedy": "greedy decoding (Decoding)",
                  "sampled": "sampled decoding (Decoding)", "speculative": "speculative decoding (Decoding)",
                  "dola": "DoLa decoding (Decoding)", "contrastive": "contrastive search (Decoding)",
                  "time_kv_cache": "a KV-cache timing (Decoding)", "token_log_probs": "a continuation's log-probs"}
