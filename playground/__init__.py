"""The app's tabs and figures: one module per tab with a `build(...)`, pure plotting in `figures`, the per-prompt `Trace`."""
