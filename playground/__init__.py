"""The app's tabs and figures: one module per tab with a `build(...)`, pure plotting in `figures*`, the per-prompt `Trace`."""

# Event options for handlers that only read a visitor's own state: no model run, so any
# number may run at once, hidden from the API and without a progress spinner.
READ_ONLY = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")
