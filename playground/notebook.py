"""The playground from Python and Jupyter: the app's own runner, traces and figures, as a few functions.

    import playground as pg
    t = pg.analyze("The capital of France is")     # one forward: the same Trace the app keeps
    t.attention(layer=3, head=5)                    # the Attention tab's pattern (a Plotly figure, inline)
    t.lens(); t.sampler(temperature=0.7, top_p=0.9); t.routes(position=-1); t.why(14, 4)
    t.cache["blocks.3.attn.hook_pattern"]           # TransformerLens names and meanings: (1, H, T, T)
    pg.ablate(t, heads=["L14H0"]); pg.patch("The capital of France is", "The capital of Italy is", " Paris", " Rome")

Everything goes through a `ModelRunner`, the app's one seam to the model, and every figure is drawn by the tab's
own named view (`t.view("rope", "pairs", layer=2)` reaches any of them), so a notebook and the app cannot drift.
Bad input raises the error the app shows (`PromptError`, a ValueError), with the same message.
`pg.runner_for(model)` is the runner of another checkpoint (`--model`'s choices).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch

from model.selection import choose_model

from . import views
from .runner import ModelRunner
from .tab_intervene import heads_of
from .tab_routes import THRESHOLD
from .trace import Trace
from .view import View, text_of

__all__ = ["Analysis", "View", "ablate", "analyze", "patch", "runner_for"]


@functools.cache
def _runner_named(model: str | None) -> ModelRunner:
    net, enc, _ = choose_model(model)
    return ModelRunner(net, enc, background_lens=False)


def runner_for(model: str | ModelRunner | None = None) -> ModelRunner:
    """The runner of a model (None: the default, as `python app.py` chooses it; a name or path as `--model` takes
    it), loaded once per session; a runner given is used as it is."""
    return model if isinstance(model, ModelRunner) else _runner_named(model)


class Analysis:
    """One prompt analysed: its trace (what every tab reads), its tokens, and the tabs' views of it (each a call
    of the tab's named view, `views.show`)."""

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

    def view(self, tab: str, name: str, large: bool = False, **state) -> View:
        """Any tab's named view of this prompt (`views.BY_TAB`; e.g. view("rope", "pairs", layer=2, pos=-1))."""
        return views.view(tab, name)(self.runner, self.trace, **state, large=large)

    def attention(self, layer: int, head: int, large: bool = False) -> View:
        """One head's attention pattern (the Attention tab's heatmap)."""
        return self.view("attention", "pattern", large, layer=layer, head=head)

    def lens(self, with_mid: bool = False, statistic: str = "top_prob", position: int = -1,
             large: bool = False) -> View:
        """The logit lens over every layer and position (the Logit-lens tab's grid)."""
        return self.view("lens", "grid", large, statistic=statistic, with_mid=with_mid, pos=position)

    def sampler(self, order: str = "hf", top_n: int = 15, large: bool = False, **settings) -> View:
        """The next-token distribution before and after the sampler chain (the Sampler tab's bars); settings by
        `SamplerSettings` name (temperature, top_k, top_p, min_p, ...), in the ranges the tab's sliders allow."""
        return self.view("sampler", "next_token", large, order=order, top_n=top_n, **settings)

    def routes(self, position: int = -1, threshold: float = THRESHOLD, large: bool = False) -> View:
        """The information flow routes to the prediction after `position` (the Routes tab's graph)."""
        return self.view("routes", "graph", large, pos=position, threshold=threshold)

    def why(self, layer: int, head: int, query: int = -1, key: int | None = None, large: bool = False) -> View:
        """Why a head attends from `query` to `key` (default: the key it attends most): its score split into the
        residual stream's components (the Routes tab's Why here?)."""
        return self.view("routes", "why", large, layer=layer, head=head, query=query, key=key)


def analyze(prompt: str, chat: bool = False, model: str | ModelRunner | None = None) -> Analysis:
    """Run the model once on a prompt (in its chat template if asked): an Analysis every view reads. `model`: a
    name or path as `--model` takes it, or a runner (`runner_for(...)`)."""
    run = runner_for(model)
    return Analysis(run, run.analyze(text_of(prompt), bool(chat), lens=False))


def _analysis(prompt_or_analysis: str | Analysis, model: str | ModelRunner | None) -> Analysis:
    return prompt_or_analysis if isinstance(prompt_or_analysis, Analysis) else analyze(prompt_or_analysis,
                                                                                        model=model)


def ablate(t: str | Analysis, heads: Iterable[str] = (), attention_layers: Iterable[int] = (),
           mlp_layers: Iterable[int] = (), mode: str = "zero", a: str = "", b: str = "", large: bool = False,
           model: str | ModelRunner | None = None) -> View:
    """The next-token distribution before and after ablating heads ("L14H0") or whole blocks, zeroed or replaced
    by their mean (the Intervene tab's Ablate); the note has the logit difference of a and b (default: the two
    most likely)."""
    t = _analysis(t, model)
    return t.view("intervene", "ablation", large, heads=heads_of(t.runner.cfg, list(heads)),
                  attention_layers=attention_layers, mlp_layers=mlp_layers, mode=mode, a=a, b=b)


def patch(clean: str, corrupted: str, a: str, b: str, kind: str = "resid", large: bool = False,
          model: str | ModelRunner | None = None) -> View:
    """Activation patching from the clean prompt into the corrupted one (the Intervene tab's heatmap): kind
    "resid", "attn" or "mlp" (each layer and position) or "heads"; a and b are the two prompts' answers."""
    return views.view("intervene", "patching")(runner_for(model), clean, corrupted, a, b, kind, large)

