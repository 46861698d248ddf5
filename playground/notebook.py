"""The playground from Python and Jupyter: the app's own runner, traces and figures, as a few functions.

    import playground as pg
    t = pg.analyze("The capital of France is")     # one forward: the same Trace the app keeps
    t.attention(layer=3, head=5)                    # the Attention tab's pattern (a Plotly figure, inline)
    t.lens(); t.sampler(temperature=0.7, top_p=0.9); t.routes(position=-1); t.why(14, 4)
    t.cache["blocks.3.attn.hook_pattern"]           # TransformerLens names and meanings: (1, H, T, T)
    pg.ablate(t, heads=["L14H0"]); pg.patch("The capital of France is", "The capital of Italy is", " Paris", " Rome")

Everything goes through a `ModelRunner`, the app's one seam to the model, and every figure is drawn by the tab's
own handler, so a notebook and the app cannot drift. Bad input raises the error the app shows (`PromptError`, a
ValueError), with the same message. `pg.runner_for(model)` is the runner of another checkpoint (`--model`'s choices).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import plotly.graph_objects as go
import torch

from model.interventions import SWEEPS
from model.selection import choose_model

from . import tab_attention, tab_intervene, tab_lens, tab_routes, tab_sampler
from .errors import PromptError
from .gen_session import GenSession
from .runner import ModelRunner
from .trace import Trace
from .ui import number

__all__ = ["Analysis", "View", "ablate", "analyze", "patch", "runner_for"]


@functools.cache
def runner_for(model: str | None = None) -> ModelRunner:
    """The runner of a model (None: the default, as `python app.py` chooses it), loaded once per session."""
    net, enc, _ = choose_model(model)
    return ModelRunner(net, enc, background_lens=False)


class View:
    """A tab's view: its figure (shown inline in Jupyter and VS Code) and the note the tab prints beside it."""

    def __init__(self, figure: go.Figure, note: str = "") -> None:
        self.figure, self.note = figure, note

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.figure._repr_mimebundle_(include, exclude)

    def __repr__(self) -> str:
        return f"View({self.figure.layout.title.text!r}){': ' + self.note if self.note else ''}"


def _shown(figure, note: str) -> View:
    """A tab's (figure, note), or the tab's own message raised as the error it is."""
    if figure is None:
        raise PromptError(note.removeprefix("⚠️").strip() or "nothing to show")
    return View(figure, note)


def _quiet(*args, **kwargs) -> None:  # stands in for Gradio's progress bar
    return None


class Analysis:
    """One prompt analysed: its trace (what every tab reads), its tokens, and the tabs' views of it."""

    def __init__(self, run: ModelRunner, trace: Trace) -> None:
        self.runner, self.trace = run, trace

    def __repr__(self) -> str:
        return f"Analysis({self.trace.prompt!r}: {self.trace.n_tokens} tokens on {self.runner.cfg.name})"

    @property
    def ids(self) -> list[int]:
        return self.trace.ids.tolist()

    @property
    def tokens(self) -> list[str]:
        return [b.decode("utf-8", errors="replace") for b in self.trace.token_bytes]

    @functools.cached_property
    def cache(self) -> dict[str, torch.Tensor]:
        """Every hook's activation on this prompt, by TransformerLens name, batch first (as run_with_cache)."""
        return self.runner.activations(self.ids)

    def _position(self, position: int, name: str = "position") -> int:
        T = self.trace.n_tokens
        return number(position, name, -T, T - 1, whole=True) % T

    def _layer_head(self, layer: int, head: int) -> tuple[int, int]:
        cfg = self.runner.cfg
        return (number(layer, "layer", 0, cfg.n_layers - 1, whole=True),
                number(head, "head", 0, cfg.n_heads - 1, whole=True))

    def attention(self, layer: int, head: int, large: bool = False) -> View:
        """One head's attention pattern (the Attention tab's heatmap)."""
        layer, head = self._layer_head(layer, head)
        heatmap, *_, summary = tab_attention.render_head(self.runner, self.trace, layer, head, large)
        return _shown(heatmap, summary)

    def lens(self, with_mid: bool = False, statistic: str = "top_prob", position: int = -1,
             large: bool = False) -> View:
        """The logit lens over every layer and position (the Logit-lens tab's grid)."""
        grid, _, note = tab_lens.render(self.runner, self.trace, statistic, bool(with_mid), self._position(position),
                                        "", large, progress=_quiet)
        return _shown(grid, note)

    def sampler(self, order: str = "hf", top_n: int = 15, large: bool = False, **settings) -> View:
        """The next-token distribution before and after the sampler chain (the Sampler tab's bars); settings by
        `SamplerSettings` name (temperature, top_k, top_p, min_p, ...)."""
        controls = {c.name: c for c in tab_sampler.CONTROLS}
        unknown = set(settings) - set(controls)
        if unknown:
            raise ValueError(f"unknown sampler settings {sorted(unknown)}; known: {sorted(controls)}")
        values = [number(settings[name], name, c.low, c.high, whole=c.whole) if name in settings else c.default
                  for name, c in controls.items()]  # the ranges the tab's sliders allow
        session = GenSession.start(self.runner, self.trace)
        bars, *_, message = tab_sampler.render(self.runner, session, order, *values, top_n, large)
        return _shown(bars, message)

    def routes(self, position: int = -1, threshold: float = tab_routes.THRESHOLD, large: bool = False) -> View:
        """The information flow routes to the prediction after `position` (the Routes tab's graph)."""
        figure, note = tab_routes.graph_view(self.runner, self.trace, self._position(position), threshold, large,
                                             progress=_quiet)
        return _shown(figure, note)

    def why(self, layer: int, head: int, query: int = -1, key: int | None = None, large: bool = False) -> View:
        """Why a head attends from `query` to `key` (default: the key it attends most): its score split into the
        residual stream's components (the Routes tab's Why here?)."""
        layer, head = self._layer_head(layer, head)
        query = self._position(query, "query")
        if key is None:
            key = int(self.runner.layer(self.trace, layer).pattern[head, query].argmax())
        figure, note = tab_routes.why_view(self.runner, self.trace, layer, head, query,
                                           self._position(key, "key"), large)
        return _shown(figure, note)


def analyze(prompt: str, chat: bool = False, model: str | None = None) -> Analysis:
    """Run the model once on a prompt (in its chat template if asked): an Analysis every view reads."""
    run = runner_for(model)
    return Analysis(run, run.analyze(prompt, chat, lens=False))


def _analysis(prompt_or_analysis: str | Analysis, model: str | None) -> Analysis:
    return prompt_or_analysis if isinstance(prompt_or_analysis, Analysis) else analyze(prompt_or_analysis,
                                                                                        model=model)


def ablate(t: str | Analysis, heads: Iterable[str] = (), attention_layers: Iterable[int] = (),
           mlp_layers: Iterable[int] = (), mode: str = "zero", a: str = "", b: str = "", large: bool = False,
           model: str | None = None) -> View:
    """The next-token distribution before and after ablating heads ("L14H0") or whole blocks, zeroed or replaced
    by their mean (the Intervene tab's Ablate); the note has the logit difference of a and b (default: the two
    most likely)."""
    t = _analysis(t, model)
    cfg = t.runner.cfg
    selected = []
    for name in heads:
        layer, head = _head(name)
        selected.append([number(layer, "head layer", 0, cfg.n_layers - 1, whole=True),
                         number(head, "head", 0, cfg.n_heads - 1, whole=True)])
    layers = [[number(l, what, 0, cfg.n_layers - 1, whole=True) for l in ls]
              for what, ls in (("attention layer", attention_layers), ("MLP layer", mlp_layers))]
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    note, figure = tab_intervene.ablate(t.runner, t.trace, selected, *layers, mode, a, b, large)
    return _shown(figure, note)


def _head(name: str) -> tuple[int, int]:
    from .api import HEAD

    match = HEAD.match(str(name))
    if not match:
        raise ValueError(f"heads look like 'L14H0', got {name!r}")
    return int(match[1]), int(match[2])


def patch(clean: str, corrupted: str, a: str, b: str, kind: str = "resid", large: bool = False,
          model: str | None = None) -> View:
    """Activation patching from the clean prompt into the corrupted one (the Intervene tab's heatmap): kind
    "resid", "attn" or "mlp" (each layer and position) or "heads"; a and b are the two prompts' answers."""
    if kind not in SWEEPS:
        raise ValueError(f"kind must be one of {list(SWEEPS)}, got {kind!r}")
    *_, (note, figure) = tab_intervene.patch(runner_for(model), clean, corrupted, a, b, kind, large)
    return _shown(figure, note)
