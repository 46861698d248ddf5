"""Transformer playground: a Gradio app that shows every intermediate tensor of a real Llama-style model.

`python app.py` starts it, as a Hugging Face Space does (`python app.py --help`); installed
with pip, the same app is the `transformer-playground` command. The app itself is
`playground/server.py`; its names are importable from here too.
"""

from playground.server import *  # noqa: F401,F403 (create_app, queued, launch_options and the limits)
from playground.server import main

if __name__ == "__main__":
    raise SystemExit(main())
