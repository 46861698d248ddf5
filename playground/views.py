"""Every tab's named views, found by tab id and name: what the tour, decks, the notebook and anything new call.

A tab module lists its views in `VIEWS` (name -> `view(runner, trace, **state) -> View`, see `view`) and names the
one a deck's slide shows in `SLIDE`. This module only looks them up; it imports the tabs that have views and not
the Tour, which shows them (so the tour and decks can import it without a circle).
"""

from __future__ import annotations

import inspect

from . import (
    tab_arithmetic, tab_attention, tab_block, tab_bpe, tab_decoding, tab_embeddings, tab_intervene, tab_lab, tab_lens,
    tab_rope, tab_routes, tab_sampler, tab_tokenization,
)
from .errors import PromptError
from .view import View

BY_TAB = {module.TAB_ID: module for module in (tab_tokenization, tab_attention, tab_rope, tab_lens, tab_sampler,
                                               tab_decoding, tab_intervene, tab_routes, tab_embeddings, tab_block,
                                               tab_arithmetic, tab_bpe, tab_lab)}  # every tab but the Tour and Compare


def view(tab_id: str, name: str):
    """A view by its tab and name (PromptError naming what exists when there is no such view)."""
    module = BY_TAB.get(tab_id)
    if module is None:
        raise PromptError(f"no tab {tab_id!r} has views; the tabs with views are {', '.join(BY_TAB)}")
    if name not in module.VIEWS:
        raise PromptError(f"the {tab_id} tab has no view {name!r}; its views: {', '.join(module.VIEWS)}")
    return module.VIEWS[name]


def show(tab_id: str, name: str, runner, trace, state: dict, large: bool = False) -> View:
    """The view called with the state it takes: other entries (a tab's link values the view does not read, such as
    the sampler's seed) are left out. A view's **settings take the names its module lists in SETTINGS."""
    fn = view(tab_id, name)
    takes = set(inspect.signature(fn).parameters) | set(getattr(BY_TAB[tab_id], "SETTINGS", ()))
    return fn(runner, trace, **{k: v for k, v in state.items() if k in takes}, large=large)


def slides() -> dict[str, dict[str, str]]:
    """The tabs a slide can show (those naming a SLIDE view), with their link parameters and kinds: a deck's
    fields for each."""
    return {tab_id: {link.param: link.kind for link in getattr(module, "LINKS", ())}
            for tab_id, module in BY_TAB.items() if module.SLIDE}
