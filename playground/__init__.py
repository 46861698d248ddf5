"""The app around the model: the runner (the one seam to the model), the per-prompt trace, the tabs and their figures.

`registry.TABS` lists the tabs; each `tab_*.py` has one `build(ctx) -> TabView` (see `ui`)
and module-level handlers. `figures/` holds the pure plotting functions, `api` the HTTP API.
"""
