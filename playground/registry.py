"""The app's tabs, in order: (label, module, main figure). The shell builds, tracks and renders tabs from this list
alone.

Adding a tab is one module with a `TAB_ID` (what `?tab=` links use), `build(ctx: TabContext) -> TabView` and its
named views (`VIEWS`, see `view`), and one line here; naming its `SLIDE` view makes it a deck's slide, and adding it
to `views.BY_TAB` lets the tour, decks and the notebook call its views by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from . import (
    tab_arithmetic, tab_attention, tab_block, tab_bpe, tab_decoding, tab_embeddings, tab_intervene, tab_lab, tab_lens,
    tab_rope, tab_compare, tab_routes, tab_sampler, tab_tokenization, tab_tour,
)


@dataclass(frozen=True)
class Tab:
    label: str  # what the tab says
    module: ModuleType  # has TAB_ID and build(ctx) -> TabView; VIEWS and SLIDE if its views are shown elsewhere
    figure: str  # elem_id of its main figure (what must fit a phone or a projector)

    @property
    def id(self) -> str:
        """For links (?tab=...) and the active-tab state: the module's TAB_ID."""
        return self.module.TAB_ID

    @property
    def views(self) -> dict:
        """The tab's named views: name -> view(runner, trace, **state) -> View (`views.show` calls them)."""
        return dict(getattr(self.module, "VIEWS", {}))

    @property
    def slide(self) -> str | None:
        """The view a deck's slide of this tab shows (None: it cannot be a slide)."""
        return getattr(self.module, "SLIDE", None)

    @property
    def keys(self) -> tuple:
        """The module's keyboard shortcuts (`ui.Key`s in its KEYS), for presenter stepping."""
        return tuple(getattr(self.module, "KEYS", ()))

    @property
    def links(self) -> tuple:
        """The controls a prepared link may set (`ui.Link`s in its LINKS)."""
        return tuple(getattr(self.module, "LINKS", ()))

    @property
    def clicks(self) -> dict:
        """Figures whose clicks come back to the server: figure elem_id -> the textbox the point's JSON goes to."""
        return dict(getattr(self.module, "CLICKS", {}))


TABS = (
    Tab("Tour", tab_tour, "tour-slide"),
    Tab("Tokenization", tab_tokenization, "token-spans"),
    Tab("Attention", tab_attention, "attn-heatmap"),
    Tab("RoPE", tab_rope, "rope-pairs"),
    Tab("Logit lens", tab_lens, "lens-grid"),
    Tab("Sampler", tab_sampler, "samp-bars"),
    Tab("Decoding", tab_decoding, "dec-tree"),
    Tab("Intervene", tab_intervene, "int-grid"),
    Tab("Routes", tab_routes, "routes-graph"),
    Tab("Embeddings", tab_embeddings, "emb-neighbours"),
    Tab("Inside a block", tab_block, "blk-norms"),
    Tab("Arithmetic", tab_arithmetic, "ar-flops"),
    Tab("Train BPE", tab_bpe, "bpe-replay"),
    Tab("Compare", tab_compare, "cmp-left"),
    Tab("Lab", tab_lab, "lab-mask"),
)
TAB_IDS = tuple(tab.id for tab in TABS)
DEFAULT_TAB = "tokenization"  # the page opens here (on the Tour when started with a deck)
