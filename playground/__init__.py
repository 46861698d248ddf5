"""The app around the model: the runner (the one seam to the model), the per-prompt trace, the tabs and their figures.

`registry.TABS` lists the tabs; each `tab_*.py` has one `build(ctx) -> TabView` (see `ui`)
and module-level handlers. `figures/` holds the pure plotting functions, `api` the HTTP API,
`server` the app itself (`python app.py`, or the `transformer-playground` command), and
`notebook` the same views from Python, at the package's top level:

    import playground as pg
    t = pg.analyze("The capital of France is")
    t.attention(layer=3, head=5)
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine, before gradio is imported

_NOTEBOOK = ("Analysis", "View", "ablate", "analyze", "patch", "runner_for")
__all__ = list(_NOTEBOOK)


def __getattr__(name: str):
    """`pg.analyze` and the rest of `playground.notebook`, imported on first use (the app does not need them)."""
    if name in _NOTEBOOK:
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'playground' has no attribute {name!r}")
