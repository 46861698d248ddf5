"""Presenter mode for a projector: one screen per view, large high-contrast text, keyboard stepping, slide export.

Everything here runs in the visitor's browser (CSS, and the script `presenter.js` in the page's head after its
configuration), so stepping through a talk costs the server only the redraws it already does:

- With presenter mode on, the title and model line fold away, the prompt shrinks to one line that
  stays at the top with the tab bar, the examples and each tab's explanation fold to one line (a
  click opens them), and the active tab's main figure (`registry.Tab.figure`) is scrolled to sit just
  under the bar, whole, whenever it is drawn or the tab changes. Figures cap their height to fit
  1280 x 720 (`figures.base.PRESENTER_MAX_HEIGHT`).
- Keys (ignored while typing in a box): each tab's `KEYS` (`ui.Key`), e.g. arrows for head and
  layer on Attention, position on the logit lens and RoPE, sample / back on the Sampler; PageUp and
  PageDown do what Left and Right do (a presenter's clicker sends them). `[` and `]` change tab,
  `p` toggles presenter mode, `s` downloads the main figure as a 16:9 PNG slide, `v` as SVG, `?`
  shows the keys, Escape hides them.
- Prepared links carry the view: each tab's `LINKS` (`ui.Link`) name the controls a query may set
  (`?tab=attention&layer=3&head=5`, `?tab=lens&pos=7`, `?tab=sampler&temperature=0.7&top_p=0.9&gen=12,873`);
  they are applied once the tab has drawn, and the page's "link to this view" always carries their current
  values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

SLIDE_SIZE = (1920, 1080)  # the PNG/SVG slide, 16:9

CSS = """
body.presenter { --body-text-color: #000; --block-label-text-color: #000; --block-info-text-color: #000;
  --body-text-color-subdued: #111; }
body.presenter .gradio-container { font-size: 20px !important; overflow: clip !important; }
body.presenter .gradio-container label, body.presenter .gradio-container .prose,
body.presenter .gradio-container button, body.presenter .gradio-container textarea {
  font-size: 20px !important; color: #000; }
/* Nothing smaller than 18 px, and no light grey text, anywhere on the page. */
body.presenter .gradio-container * { font-size: max(18px, 1em) !important; }
body.presenter .gradio-container input[type=number] { font-size: 18px !important; color: #000; }
body.presenter .hint, body.presenter .dec-note, body.presenter .gen .prompt { color: #111 !important; }
body.presenter [data-testid="block-info"], body.presenter .gradio-container label span { color: #000 !important; }
body.presenter .gradio-container ::placeholder { color: #333 !important; }
body.presenter .tokens .tok { outline: 1px solid #000; }
/* One screen per view: the header folds to the prompt line, which stays on top with the tab bar. */
body.presenter #title, body.presenter #model-line, body.presenter #status { display: none; }
body.presenter #top { position: sticky; top: 0; z-index: 1000; background: var(--body-background-fill, #fff);
  padding: 4px 0; }
body.presenter #prompt [data-testid="block-info"], body.presenter #prompt .hint { display: none; }
/* One line where it fits; on a narrow screen the buttons wrap below rather than off the edge. (Gradio keeps only
   the never-matching prefixed copy of a rule inside @media, so no media query here.) */
body.presenter #prompt-row { align-items: center; flex-wrap: wrap; }
body.presenter #prompt-side { flex: 0 1 auto !important; width: auto !important; min-width: 0 !important;
  flex-direction: row !important; flex-wrap: wrap; align-items: center; gap: 8px; }
body.presenter #prompt-side > * { flex: 0 0 auto !important; width: auto !important; min-width: 0 !important; }
body.presenter #chat { display: none; }
body.presenter #large { padding: 6px 10px; }
body.presenter #large label > span { display: none; }
body.presenter #large label::after { content: "Presenter"; font-size: 18px; }
body.presenter .tokens .tok .id, body.presenter .tokens .raw { font-size: 18px !important; color: #000; }
body.presenter #slide-buttons { display: flex !important; flex-wrap: nowrap; gap: 6px; }
body.presenter #slide-buttons > *, body.presenter #slide-buttons button { flex: 0 0 auto !important;
  width: auto !important; min-width: max-content !important; }
body.presenter .tabs > .tab-wrapper { position: sticky; top: var(--presenter-top, 64px); z-index: 999;
  background: var(--body-background-fill, #fff); }
body.presenter [role=tablist] { flex-wrap: wrap; }
body.presenter [role=tablist] button { font-size: 18px !important; padding: 4px 6px; color: #000; }
body.presenter .intro { display: -webkit-box; -webkit-line-clamp: 1; -webkit-box-orient: vertical; overflow: hidden;
  cursor: pointer; border-left: 4px solid #000; padding-left: 8px; }
body.presenter .intro.open { display: block; }
body:not(.presenter) #slide-buttons { display: none !important; }
#key-help { position: fixed; right: 24px; bottom: 24px; z-index: 2000; background: #fff; color: #000;
  border: 3px solid #000; border-radius: 8px; padding: 16px 20px; font-size: 20px; max-width: 560px;
  box-shadow: 0 4px 24px rgba(0, 0, 0, .3); }
#key-help table { border-collapse: collapse; }
#key-help td { padding: 2px 10px; vertical-align: top; font-size: 20px; }
#key-help kbd { border: 2px solid #000; border-radius: 4px; padding: 0 6px; font-family: inherit; font-weight: 600; }
"""



SCRIPT = Path(__file__).with_name("presenter.js")  # the page's script; it knows no tab, only `config`
ROOM_SCRIPT = Path(__file__).with_name("room.js")  # a room's follower and speaker (room.py)


def config(tabs: Sequence) -> dict:
    """What the script knows of these tabs (`registry.TABS`): their main figures, keys, link parameters and labels,
    and the slide size."""
    return {
        "figures": {tab.id: tab.figure for tab in tabs},
        "keys": {tab.id: [{"keys": list(k.keys), "target": k.target, "step": k.step, "says": k.says}
                          for k in tab.keys] for tab in tabs},
        "links": {tab.id: [{"param": k.param, "target": k.target, "kind": k.kind, "source": k.source,
                            "last": k.last} for k in tab.links] for tab in tabs},
        "labels": {tab.id: tab.label for tab in tabs},
        "clicks": {figure: target for tab in tabs for figure, target in tab.clicks.items()},
        "slide": list(SLIDE_SIZE),
    }


def head(tabs: Sequence) -> str:
    """The page's head: the configuration as one JSON object, then the script."""
    settings = json.dumps(config(tabs)).replace("</", "<\\/")  # nothing in it may close the script element
    return (f"<script>window.PLAYGROUND_CONFIG = {settings};</script>\n<script>\n{SCRIPT.read_text()}</script>\n"
            f"<script>\n{ROOM_SCRIPT.read_text()}</script>\n")
