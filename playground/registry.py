"""The app's tabs, in order: (label, id, module). The shell builds, tracks and renders tabs from this list alone.

Adding a tab is one module with `build(ctx: TabContext) -> TabView` and one line here. The
id is what `?tab=` links use.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from . import (
    tab_arithmetic, tab_attention, tab_block, tab_bpe, tab_decoding, tab_embeddings, tab_intervene, tab_lens, tab_rope,
    tab_routes, tab_sampler, tab_tokenization, tab_tour,
)


@dataclass(frozen=True)
class Tab:
    label: str  # what the tab says
    id: str  # for links (?tab=...) and the active-tab state
    module: ModuleType  # has build(ctx) -> TabView
    figure: str  # elem_id of its main figure (what must fit a phone or a projector)

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
    Tab("Tour", tab_tour.TAB_ID, tab_tour, "tour-slide"),
    Tab("Tokenization", "tokenization", tab_tokenization, "token-spans"),
    Tab("Attention", "attention", tab_attention, "attn-heatmap"),
    Tab("RoPE", "rope", tab_rope, "rope-pairs"),
    Tab("Logit lens", tab_lens.TAB_ID, tab_lens, "lens-grid"),
    Tab("Sampler", "sampler", tab_sampler, "samp-bars"),
    Tab("Decoding", "decoding", tab_decoding, "dec-tree"),
    Tab("Intervene", "intervene", tab_intervene, "int-grid"),
    Tab("Routes", tab_routes.TAB_ID, tab_routes, "routes-graph"),
    Tab("Embeddings", "embeddings", tab_embeddings, "emb-neighbours"),
    Tab("Inside a block", "block", tab_block, "blk-norms"),
    Tab("Arithmetic", "arithmetic", tab_arithmetic, "ar-flops"),
    Tab("Train BPE", "bpe", tab_bpe, "bpe-replay"),
)
TAB_IDS = tuple(tab.id for tab in TABS)
DEFAULT_TAB = "tokenization"  # the page opens here (on the Tour when started with a deck)
