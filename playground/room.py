"""A room: the audience's phones follow the speaker's view, and the room guesses the next token before the model.

The speaker opens a room (`Rooms.create`, from presenter mode or `python app.py --room`) and gets a short code, a
link `/?room=CODE` with its QR code for the audience, and a secret key that alone may change the room. The
speaker's page sends what it shows (`Room.show`: the prompt, the tab, each linked control's value, the deck slide,
and the main view as drawn: its Plotly figures and its HTML) whenever that changes; followers wait for the next
version with one long poll each (`Room.changed`) and draw the same view in their own browser. So N followers cost
the server one encoded copy of each version and no model run at all: the figures are the speaker's own.

A question (`Room.ask`) runs the model once, on the speaker's prompt up to a position, and keeps the next-token
distribution there; each follower's one-word guess is scored by the model's probability of its first token (as
written after the prompt: with a leading space after a word), and `Question.results` compares the room's guesses
with the model's top 10 when the speaker reveals them. The HTTP routes are in `room_http`; the page's side is
`room.js`.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import secrets
import socket
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from html import escape

import numpy as np

from .errors import PromptError

# Limits (the README's Limits table names each, with its message)
ROOM_CODE_LEN = 5  # letters and digits that cannot be misread (no 0/O, 1/I/L)
ROOM_CODE_CHARS = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
MAX_ROOMS = 16  # rooms open at once on one server
MAX_FOLLOWERS = 500  # followers in one room
ROOM_IDLE_S = 3600  # a room nobody has used (no view, question or guess) for an hour closes
ROOM_LIFETIME_S = 12 * 3600  # and every room closes after twelve hours
MAX_GUESS_CHARS = 32  # one word
GUESS_INTERVAL_S = 1.0  # one guess a second per follower
MAX_VIEW_BYTES = 4 * 2**20  # a view the speaker sends (its figures as JSON)
POLL_HOLD_S = 20.0  # a follower's long poll is answered at the next change or after this long
FOLLOWER_GONE_S = 60.0  # a follower not heard from for this long is no longer counted
TALLY_ROWS = 12  # guesses drawn as bars
TOP_K = 10  # the model's top tokens shown at the reveal

LOOPBACK = ("127.0.0.1", "localhost", "::1")
EVERYWHERE = ("0.0.0.0", "::", "")


class RoomError(Exception):
    """A request the room refuses, with the HTTP status and a message for the visitor."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def unknown_room(code: str) -> RoomError:
    return RoomError(404, f"There is no room {code!r} on this server: it may have closed (rooms close after "
                          f"{ROOM_IDLE_S // 60} minutes unused). Ask the speaker for the code, or use the app on "
                          f"your own.")


# -- the view a speaker sends --------------------------------------------------------------------------------------

_ALLOWED_TAGS = {"div", "span", "p", "b", "strong", "i", "em", "code", "pre", "br", "hr", "table", "thead", "tbody",
                 "tr", "td", "th", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "sub", "sup", "small",
                 "blockquote", "kbd", "mark", "del", "s", "u"}
_VOID_TAGS = {"br", "hr"}
_DROPPED_WITH_TEXT = {"script", "style", "iframe", "object", "embed", "svg", "math", "template", "noscript",
                      "textarea", "select", "button", "head", "title", "canvas", "video", "audio"}
_ALLOWED_ATTRIBUTES = {"class", "title", "colspan", "rowspan", "style", "data-id", "data-plot"}
_BAD_STYLE = re.compile(r"url\s*\(|expression\s*\(|@import|javascript:|behavior\s*:|[<>]", re.I)


class _Sanitizer(HTMLParser):
    """HTML kept to an allowlist: text and formatting tags with classes and plain styles; no script, link, image,
    form, event handler or URL of any kind."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.dropping = 0  # inside a dropped element: its text goes too

    def handle_starttag(self, tag, attrs) -> None:
        if tag in _DROPPED_WITH_TEXT:
            self.dropping += 1
            return
        if self.dropping or tag not in _ALLOWED_TAGS:
            return
        kept = []
        for name, value in attrs:
            value = value or ""
            if name not in _ALLOWED_ATTRIBUTES or (name == "style" and _BAD_STYLE.search(value)):
                continue
            kept.append(f' {name}="{escape(value, quote=True)}"')
        self.out.append(f"<{tag}{''.join(kept)}>")

    def handle_startendtag(self, tag, attrs) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _DROPPED_WITH_TEXT:
            self.dropping -= 1

    def handle_endtag(self, tag) -> None:
        if tag in _DROPPED_WITH_TEXT:
            self.dropping = max(0, self.dropping - 1)
            return
        if not self.dropping and tag in _ALLOWED_TAGS and tag not in _VOID_TAGS:
            self.out.append(f"</{tag}>")

    def handle_data(self, data) -> None:
        if not self.dropping:
            self.out.append(escape(data, quote=False))


def safe_html(html: str) -> str:
    """The HTML of a view with everything but text and formatting removed (what a follower's page may insert)."""
    parser = _Sanitizer()
    parser.feed(str(html))
    parser.close()
    return "".join(parser.out)


def _short(value, limit: int) -> str:
    return str(value if value is not None else "")[:limit]


def checked_view(view) -> dict:
    """The speaker's view as followers get it: known fields only, text cut to size, HTML sanitized (RoomError
    for what is not a view)."""
    if not isinstance(view, dict):
        raise RoomError(400, "A view is a JSON object: {tab, label, prompt, values, slide, parts}.")
    values = view.get("values") or {}
    if not isinstance(values, dict) or len(values) > 24:
        raise RoomError(400, "A view's values are an object of at most 24 controls (param: value).")
    parts = view.get("parts") or []
    if not isinstance(parts, list) or len(parts) > 12:
        raise RoomError(400, "A view's parts are a list of at most 12 (each {html} or {plot}).")
    shown = []
    for part in parts:
        if isinstance(part, dict) and isinstance(part.get("html"), str):
            shown.append({"html": safe_html(part["html"])})
        elif isinstance(part, dict) and isinstance(part.get("plot"), dict):
            plot = part["plot"]
            shown.append({"plot": {"data": plot.get("data") if isinstance(plot.get("data"), list) else [],
                                   "layout": plot.get("layout") if isinstance(plot.get("layout"), dict) else {}}})
        else:
            raise RoomError(400, "Each part of a view is {\"html\": text} or {\"plot\": {\"data\", \"layout\"}}.")
    return {
        "tab": _short(view.get("tab"), 40), "label": _short(view.get("label"), 80),
        "prompt": _short(view.get("prompt"), 20_000), "chat": bool(view.get("chat")),
        "values": {_short(k, 40): _short(v, 200) for k, v in values.items()},
        "slide": _short(view.get("slide"), 300), "parts": shown,
    }


# -- guesses -------------------------------------------------------------------------------------------------------

def checked_guess(text, unencodable: Callable[[str], list]) -> str:
    """A guess as it is counted: one word, NFC, at most MAX_GUESS_CHARS, text the tokenizer can encode; RoomError
    naming what is wrong otherwise."""
    if not isinstance(text, str):
        raise RoomError(400, "A guess is text: one word.")
    word = unicodedata.normalize("NFC", text).strip()
    if not word:
        raise RoomError(400, "Type a word first: the guess is empty.")
    if len(word) > MAX_GUESS_CHARS:
        raise RoomError(400, f"One word of at most {MAX_GUESS_CHARS} characters, please ({len(word):,} sent).")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in word):
        raise RoomError(400, "The guess has control or invisible characters: type letters, digits or punctuation.")
    if any(c.isspace() for c in word):
        raise RoomError(400, "One word, please: the guess has a space in it.")
    bad = unencodable(word)
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for _, c in bad[:3])
        raise RoomError(400, f"The model's tokenizer has no bytes for {shown}: type another word.")
    return word


def plotly_text(text: str) -> str:
    """Visitor text for a Plotly label: `<`, `>` and `&` as entities, so Plotly shows them and reads no tag."""
    return escape(text, quote=False)


@dataclass
class Guess:
    text: str
    token: int  # the first token of the guess as written after the prompt
    at: float


@dataclass
class Question:
    """'What comes next?' at one position of the speaker's prompt, and the room's guesses."""

    number: int
    prompt: str
    chat: bool
    position: int  # the model's distribution after this token
    context: str  # the text up to and including it
    probs: np.ndarray  # (V,) float64: the model's next-token distribution there
    lead: str  # what a guessed word is written after: " " after a word, "" after whitespace
    token_text: Callable[[int], str]  # a token's label
    state: str = "open"  # open -> closed -> revealed
    guesses: dict[str, Guess] = field(default_factory=dict)  # follower -> their guess
    actual: int | None = None  # the prompt's own next token, when the position is not the last

    def tallies(self) -> list[dict]:
        """The room's guesses grouped by their first token (most guessed first), each with the text most often
        typed for it, the count, the room's share and the model's probability."""
        by_token: dict[int, Counter] = {}
        for g in self.guesses.values():
            by_token.setdefault(g.token, Counter())[g.text] += 1
        n = max(1, len(self.guesses))
        rows = [{"text": texts.most_common(1)[0][0], "token": token, "token_text": self.token_text(token),
                 "count": sum(texts.values()), "share": sum(texts.values()) / n, "p": float(self.probs[token]),
                 "typed": dict(texts)}
                for token, texts in by_token.items()]
        return sorted(rows, key=lambda r: (-r["count"], -r["p"]))

    def top(self, k: int = TOP_K) -> list[tuple[int, float]]:
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(int(t), float(self.probs[t])) for t in order]

    def results(self) -> dict:
        """What the reveal shows: the model's top 10 beside the room's guesses, how many guessed the model's top-1,
        the model's probability of the room's favourite, and the overlap of the two distributions."""
        n = len(self.guesses)
        top = self.top()
        top1 = top[0][0]
        tallies = self.tallies()
        room = Counter(g.token for g in self.guesses.values())
        overlap = sum(min(count / n, float(self.probs[t])) for t, count in room.items()) if n else 0.0
        favourite = tallies[0] if tallies else None
        return {
            "guesses": n,
            "top": [{"token": t, "token_text": self.token_text(t), "p": p, "room": room.get(t, 0) / n if n else 0.0}
                    for t, p in top],
            "guessed_top1": room.get(top1, 0),
            "favourite": None if favourite is None else {"text": favourite["text"], "count": favourite["count"],
                                                         "p": favourite["p"], "token_text": favourite["token_text"]},
            "overlap": overlap,
            "overlap_means": OVERLAP_MEANS,
            "actual": None if self.actual is None else self.token_text(self.actual),
        }

    def public(self) -> dict:
        """What every follower may see: the question, its state, and the results once revealed."""
        return {"number": self.number, "state": self.state, "context": self.context[-160:], "position": self.position,
                "guesses": len(self.guesses), "lead": self.lead,
                **({"results": self.results()} if self.state == "revealed" else {})}


OVERLAP_MEANS = ("overlap = Σ over first tokens of min(room's share of guesses, model's probability): 1 when the "
                 "room guesses in the model's own proportions, 0 when it guesses only tokens the model never "
                 "predicts (1 minus the total variation distance)")


# -- a room --------------------------------------------------------------------------------------------------------

class _Waiters:
    """Long polls waiting for a change, each a future on its own event loop; woken from any thread."""

    def __init__(self) -> None:
        self._futures: set = set()
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return len(self._futures)

    async def wait(self, hold_s: float, disconnected: Callable | None = None) -> None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        entry = (loop, future)
        with self._guard:
            self._futures.add(entry)
        gone = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        try:
            await asyncio.wait([f for f in (future, gone) if f is not None], timeout=hold_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            with self._guard:
                self._futures.discard(entry)
            if gone is not None:
                gone.cancel()

    def wake(self) -> None:
        with self._guard:
            entries, self._futures = self._futures, set()
        for loop, future in entries:
            try:
                loop.call_soon_threadsafe(lambda f=future: f.done() or f.set_result(None))
            except RuntimeError:  # its loop has closed
                pass


class Room:
    """One room: the speaker's view by version, the followers, the question."""

    def __init__(self, code: str, key: str, follow_url: str, runner, clock: Callable[[], float] = time.monotonic):
        self.code, self.key, self.follow_url = code, key, follow_url
        self.runner = runner
        self.clock = clock
        self.opened = self.used = clock()
        self.version = 0
        self.view: dict | None = None
        self.question: Question | None = None
        self.asked: list[Question] = []  # every question, for the deck's notes
        self.followers: dict[str, float] = {}  # follower -> last heard from
        self.last_guess: dict[str, float] = {}
        self.guess_serial = 0
        self.closed = False
        self.changes, self.guessing = _Waiters(), _Waiters()
        self._encoded: tuple[int, bytes, bytes] | None = None
        self._guard = threading.Lock()

    # the speaker's side
    def is_speaker(self, key) -> bool:
        return isinstance(key, str) and secrets.compare_digest(key.encode(), self.key.encode())

    def show(self, view) -> int:
        """The speaker's new view; followers are woken. Returns the new version."""
        view = checked_view(view)
        with self._guard:
            self.view = view
            self._bump()
        return self.version

    def ask(self, prompt: str, chat: bool = False, position: int | None = None) -> Question:
        """Open 'What comes next?' after `position` of the prompt (its last token by default): one model run."""
        runner = self.runner
        try:
            ids = runner.tokenize(prompt, bool(chat))[0]
        except PromptError as e:
            raise RoomError(400, str(e)) from None
        last = len(ids) - 1
        if position is None or position == "" or int(position) in (-1,):
            at = last
        else:
            at = int(position)
            if not 0 <= at <= last:
                raise RoomError(400, f"The position must be between 0 and {last} (the prompt's last token); "
                                     f"{at} was asked.")
        logits = np.asarray(runner.next_logits(list(ids[: at + 1])), dtype=np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        context = runner.decode(ids[: at + 1])
        lead = "" if not context or context[-1].isspace() else " "
        with self._guard:
            question = Question(len(self.asked) + 1, prompt, bool(chat), at, context, probs, lead,
                                lambda t: _token_text(runner, t),
                                actual=int(ids[at + 1]) if at < last else None)
            self.question = question
            self.asked.append(question)
            self.guess_serial += 1
            self._bump()
        self.guessing.wake()
        return question

    def set_state(self, state: str) -> Question:
        """Close the guessing, or reveal the model's answer (closing it too)."""
        with self._guard:
            if self.question is None:
                raise RoomError(409, "No question has been asked in this room yet.")
            self.question.state = state
            self.guess_serial += 1
            self._bump()
        self.guessing.wake()
        return self.question

    def end(self) -> None:
        with self._guard:
            self.closed = True
            self._bump()
        self.guessing.wake()

    # the followers' side
    def join(self) -> str:
        now = self.clock()
        with self._guard:
            self._forget_gone(now)
            if len(self.followers) >= MAX_FOLLOWERS:
                raise RoomError(429, f"This room is full ({MAX_FOLLOWERS} followers). You can still use the app on "
                                     f"your own.")
            follower = secrets.token_urlsafe(12)
            self.followers[follower] = now
        return follower

    def heard_from(self, follower) -> None:
        if isinstance(follower, str) and follower in self.followers:
            self.followers[follower] = self.clock()

    def _forget_gone(self, now: float) -> None:
        gone = [f for f, seen in self.followers.items() if now - seen > FOLLOWER_GONE_S]
        for f in gone:
            del self.followers[f]
            self.last_guess.pop(f, None)

    def n_followers(self) -> int:
        with self._guard:
            self._forget_gone(self.clock())
            return len(self.followers)

    def guess(self, follower, text) -> Guess:
        """A follower's guess (replacing their earlier one while the question is open)."""
        now = self.clock()
        if not isinstance(follower, str) or follower not in self.followers:
            raise RoomError(403, "Join the room first (reload the page).")
        question = self.question
        if question is None:
            raise RoomError(409, "No question is open: wait for the speaker to ask one.")
        if question.state != "open":
            raise RoomError(409, "The guesses are closed for this question.")
        if now - self.last_guess.get(follower, -1e9) < GUESS_INTERVAL_S:
            raise RoomError(429, "One guess a second, please: try again in a moment.")
        word = checked_guess(text, self.runner.unencodable)
        token = self.runner.first_token(question.lead + word)
        with self._guard:
            self.last_guess[follower] = now
            self.followers[follower] = now
            guess = Guess(word, int(token), now)
            question.guesses[follower] = guess
            self.guess_serial += 1
            self.used = now
        self.guessing.wake()
        return guess

    # what is read
    def public(self) -> dict:
        return {"code": self.code, "version": self.version, "closed": self.closed, "view": self.view,
                "question": None if self.question is None else self.question.public()}

    def encoded(self) -> tuple[int, bytes, bytes]:
        """This version's public state as JSON bytes, plain and gzipped, encoded once for every follower."""
        with self._guard:
            if self._encoded is None or self._encoded[0] != self.version:
                body = json.dumps(self.public(), separators=(",", ":"), allow_nan=False).encode()
                self._encoded = (self.version, body, gzip.compress(body, 5))
            return self._encoded

    def tallies(self) -> dict:
        question = self.question
        if question is None:
            return {"code": self.code, "question": None, "serial": self.guess_serial}
        return {"code": self.code, "serial": self.guess_serial, "question": question.public(),
                "tallies": question.tallies()}

    def notes(self) -> str:
        """Every question asked, with its answer, as Markdown a deck's notes can hold."""
        lines = [f"## Room {self.code}: the room's guesses", ""]
        for q in self.asked:
            r = q.results()
            lines.append(f"**Q{q.number}. What comes next after “{q.context[-80:]}”?** ({r['guesses']} guesses"
                         f"{', not revealed' if q.state != 'revealed' else ''})")
            lines.append("")
            lines.append("| model's top | p | room |")
            lines.append("|---|---:|---:|")
            for row in r["top"]:
                lines.append(f"| `{row['token_text']}` | {row['p']:.3f} | {row['room']:.0%} |")
            lines.append("")
            if r["guesses"]:
                fav = r["favourite"]
                lines.append(f"{r['guessed_top1']} of {r['guesses']} guessed the model's top-1. The room's favourite, "
                             f"*{fav['text']}*, has model probability {fav['p']:.3f}. Overlap {r['overlap']:.2f} "
                             f"({OVERLAP_MEANS}).")
                lines.append("")
        return "\n".join(lines)

    def _bump(self) -> None:
        self.version += 1
        self.used = self.clock()
        self.changes.wake()


def _token_text(runner, token: int) -> str:
    from .figures.tokens import token_label

    return token_label(runner.token_bytes(int(token)), True, 24)


# -- the rooms of one server ---------------------------------------------------------------------------------------

class Rooms:
    """The rooms one server holds, with the address the audience reaches it at."""

    def __init__(self, runner, clock: Callable[[], float] = time.monotonic):
        self.runner = runner
        self.clock = clock
        self.rooms: dict[str, Room] = {}
        self.host, self.port, self.public_url = "127.0.0.1", 7860, ""
        self._guard = threading.Lock()

    def configure(self, host: str | None = None, port: int | None = None, public_url: str | None = None) -> None:
        """Where this server listens, and an address the audience reaches it at if one was given."""
        self.host = self.host if host is None else host
        self.port = self.port if port is None else int(port)
        self.public_url = self.public_url if public_url is None else public_url

    def base_url(self, origin: str = "") -> tuple[str, str]:
        """The address followers open, and a note when they may not reach it: a given public address, a Space's,
        this machine's LAN address when serving every interface, else the page's own origin."""
        import os

        if self.public_url:
            return self.public_url.rstrip("/") + "/", ""
        space = os.environ.get("SPACE_HOST")
        if space:
            return f"https://{space}/", ""
        if self.host in EVERYWHERE:
            lan = lan_address()
            if lan:
                return f"http://{lan}:{self.port}/", ""
        base = (origin or f"http://{self.host}:{self.port}").rstrip("/") + "/"
        host = re.sub(r"^[a-z]+://", "", base).split("/")[0].rsplit(":", 1)[0].strip("[]")
        if host in LOCAL_HOSTS:
            return base, ("This server listens on this machine only: phones cannot reach " + base + ". Start it "
                          "with `--host 0.0.0.0` on a network the audience shares, or run it on a Space.")
        return base, ""

    def create(self, origin: str = "") -> Room:
        with self._guard:
            self.sweep()
            if len(self.rooms) >= MAX_ROOMS:
                raise RoomError(429, f"This server has {MAX_ROOMS} rooms open, its limit: try again when one "
                                     f"closes (an unused room closes after {ROOM_IDLE_S // 60} minutes).")
            code = "".join(secrets.choice(ROOM_CODE_CHARS) for _ in range(ROOM_CODE_LEN))
            while code in self.rooms:
                code = "".join(secrets.choice(ROOM_CODE_CHARS) for _ in range(ROOM_CODE_LEN))
            base, _ = self.base_url(origin)
            room = Room(code, secrets.token_urlsafe(24), f"{base}?room={code}", self.runner, self.clock)
            self.rooms[code] = room
            return room

    def get(self, code) -> Room:
        """The open room with this code (any case), or RoomError 404."""
        code = str(code or "").strip().upper()[:16]
        with self._guard:
            self.sweep()
            room = self.rooms.get(code)
        if room is None:
            raise unknown_room(code)
        return room

    def sweep(self) -> None:
        """Close rooms unused for ROOM_IDLE_S, older than ROOM_LIFETIME_S, or ended."""
        now = self.clock()
        for code, room in list(self.rooms.items()):
            if room.closed or now - room.used > ROOM_IDLE_S or now - room.opened > ROOM_LIFETIME_S:
                del self.rooms[code]
                if not room.closed:
                    room.end()


LOCAL_HOSTS = LOOPBACK + ("0.0.0.0", "::")


def lan_address() -> str | None:
    """This machine's address on its network (the interface a packet would leave by; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def qr_svg(url: str) -> str:
    """The link as a QR code, an inline SVG that scales to its box (segno, offline)."""
    import segno

    svg = segno.make(url, error="m").svg_inline(scale=1, border=2, dark="#000", light="#fff", omitsize=True)
    return svg


CSS = """
/* A follower's page shows the speaker's view instead of the app; "Explore on my own" brings the app back. */
body.room-following .gradio-container { display: none !important; }
#room-follow { display: none; padding: 12px 16px; max-width: 1400px; margin: 0 auto; color: #000;
  font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; }
body.room-following #room-follow { display: block; }
#room-follow .room-head { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; justify-content: space-between;
  font-size: 18px; border-bottom: 2px solid #000; padding-bottom: 6px; }
#room-where { font-size: 18px; font-weight: 600; margin: 8px 0 4px; }
#room-prompt { white-space: pre-wrap; overflow-wrap: anywhere; background: #f3f3f3; border-radius: 6px;
  padding: 6px 10px; font-size: 16px; }
#room-prompt:empty { display: none; }
#room-ask-box { display: none; border: 3px solid #e8710a; border-radius: 8px; padding: 10px 12px; margin: 10px 0;
  font-size: 18px; overflow-wrap: anywhere; }
#room-ask-box form { display: flex; gap: 8px; margin: 8px 0; }
#room-ask-box input { flex: 1; min-width: 0; font-size: 20px; padding: 6px 8px; border: 2px solid #000;
  border-radius: 6px; }
#room-view { margin-top: 10px; overflow-wrap: anywhere; }
#room-view .room-plot { width: 100%; }
#room-follow button, #room-bar button, #room-follow-again, .room-buttons button, .room-buttons a { font-size: 18px;
  padding: 6px 12px; border: 2px solid #000; border-radius: 6px; background: #fff; color: #000; cursor: pointer;
  text-decoration: none; }
#room-follow-again { display: none; position: fixed; right: 12px; bottom: 12px; z-index: 3000;
  background: #e8710a !important; color: #fff !important; font-weight: 600; }
body:has(#room-follow):not(.room-following) #room-follow-again { display: block; }
@media (max-width: 640px) {
  #room-view .room-plot { min-width: 560px; }
  #room-view { overflow-x: auto; }
}
#room-bar { position: fixed; left: 12px; bottom: 12px; z-index: 2500; display: flex; flex-wrap: wrap; gap: 8px;
  align-items: center; background: #fff; color: #000; border: 3px solid #e8710a; border-radius: 8px;
  padding: 6px 10px; font-size: 18px; max-width: calc(100vw - 24px); }
.room-overlay { display: none; position: fixed; inset: 0; z-index: 2600; background: #fff; color: #000;
  flex-direction: column; align-items: center; justify-content: center; gap: 12px; padding: 16px; overflow: auto; }
#room-qr .room-code { font-size: 48px; font-weight: 700; letter-spacing: 0.1em; }
#room-qr .room-qr-box { width: min(62vh, 80vw); }
#room-qr .room-qr-box svg { width: 100%; height: auto; display: block; }
#room-qr .room-link { font-size: 24px; font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
#room-qr .room-note, #room-qr .room-hint { font-size: 18px; max-width: 900px; text-align: center; }
#room-question { justify-content: flex-start; }
#room-question .room-question-box { width: min(1200px, 100%); }
.room-buttons { display: flex; flex-wrap: wrap; gap: 8px; }
#room-results p { font-size: 20px; margin: 4px 0; }
#room-banner { position: relative; z-index: 2700; background: #fff4e5; color: #000; border-bottom: 2px solid #e8710a;
  padding: 8px 40px 8px 12px; font-size: 18px; overflow-wrap: anywhere; }
#room-banner button { position: absolute; right: 8px; top: 4px; font-size: 18px; background: none; border: 0;
  cursor: pointer; }
body:not(.presenter) #room-start { display: none !important; }
"""
