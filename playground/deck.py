"""Decks: a talk as a Markdown file of views, one section per slide.

    # How a transformer predicts the next word          <- the deck's title
    ## The prompt becomes tokens                         <- a slide and its title
    prompt: The capital of France is
    tab: tokenization

    Every word is one or more **tokens** ...             <- the caption, shown on the slide (Markdown)

    Notes: what to say; only in the speaker's view and the export's notes (n shows them)

A slide's fields come first, one `name: value` a line: `prompt` (the text analysed; the previous slide's if left
out), `chat` (yes/no), `tab` (a tab's id, or `tour` with `step: N` for a step of the guided tour), and the view's
state under the names prepared links use (`layer`, `head`, `pos`, `threshold`, the Sampler's `temperature`,
`top_p`, ...): the fields of each tab that can be a slide are its link parameters (`views.slides()`). A slide
that does not parse, names an unknown tab or field, or a value out of range is left out
with a message naming the slide and the field; the others still load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .tour import STEPS

BUILT_IN = Path(__file__).with_name("decks")  # the decks the page offers (?deck=<file name without .md>)
TOUR_STEPS = len(STEPS)  # a deck's `tour` slide names one of the tour's steps
COMMON_FIELDS = {"prompt", "chat", "tab"}
YES, NO = ("1", "yes", "true", "on"), ("0", "no", "false", "off")


@dataclass(frozen=True)
class Slide:
    title: str
    prompt: str
    chat: bool
    tab: str  # a tab's id, or "tour"
    state: dict = field(default_factory=dict)  # link parameter -> value (numbers as float, `order` and `gen` text)
    caption: str = ""
    notes: str = ""


@dataclass
class Deck:
    title: str
    slides: list[Slide]
    problems: list[str]  # one line per slide or field left out, naming it


def _value(param: str, text: str, kinds: dict[str, str]):
    kind = kinds[param]
    if kind in ("radio", "text"):
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{param} must be a number, got {text!r}") from None


def parse_deck(text: str, links: dict[str, dict[str, str]]) -> Deck:
    """A deck from its Markdown. `links`: each tab's link parameters and their kinds (tab id -> {param: kind}), as
    `registry.TABS` gives them; `tour` is a tab of its own (field `step`)."""
    title_match = re.search(r"^# (.+)$", text, re.M)
    title = title_match[1].strip() if title_match else "A deck"
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    links = {**links, "tour": {"step": "slider"}}
    slides, problems, prompt, chat = [], [], "", False
    if not sections:
        problems.append("the deck has no slides: each starts with a line '## Title'")
    for number, section in enumerate(sections, 1):
        head, _, body = section.partition("\n")
        where = f"slide {number} ({head.strip()!r})"
        lines = body.strip("\n").splitlines()
        fields: dict[str, str] = {}
        while lines and re.match(r"^\s*[A-Za-z_]+\s*:", lines[0]) and not lines[0].lower().startswith("notes:"):
            name, _, value = lines.pop(0).partition(":")
            fields[name.strip().lower()] = value.strip()
        rest = "\n".join(lines).strip()
        parts = re.split(r"(?im)^notes:", rest, maxsplit=1)
        caption, notes = parts[0].strip(), (parts[1].strip() if len(parts) > 1 else "")
        try:
            tab = fields.get("tab", "")
            if tab not in links:
                raise ValueError(f"tab must be one of {sorted(links)}, got {tab!r}")
            prompt = fields.get("prompt", prompt)
            if not prompt.strip():
                raise ValueError("prompt: the first slide must give one (later slides keep the last)")
            if "chat" in fields:
                if fields["chat"].lower() not in YES + NO:
                    raise ValueError(f"chat must be yes or no, got {fields['chat']!r}")
                chat = fields["chat"].lower() in YES
            unknown = set(fields) - COMMON_FIELDS - set(links[tab])
            if unknown:
                raise ValueError(f"{sorted(unknown)[0]} is not a field of the {tab} tab (its fields: "
                                 f"{', '.join(sorted(links[tab])) or 'none'})")
            state = {p: _value(p, v, links[tab]) for p, v in fields.items() if p not in COMMON_FIELDS}
            if tab == "tour" and not (1 <= state.get("step", 0) <= TOUR_STEPS and state["step"] == int(state["step"])):
                raise ValueError(f"step must be a whole number 1..{TOUR_STEPS}, got {fields.get('step')!r}")
        except ValueError as e:
            problems.append(f"{where} left out: {e}")
            continue
        slides.append(Slide(head.strip(), prompt, chat, tab, state, caption, notes))
    return Deck(title, slides, problems)


def built_in_decks() -> dict[str, Path]:
    """The decks shipped with the app, by name (the file name without .md)."""
    return {path.stem: path for path in sorted(BUILT_IN.glob("*.md"))}
