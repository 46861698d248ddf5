"""A room's HTTP routes, on the app's own origin and port (a Space serves nothing else): `RoomRoutes`.

An ASGI middleware in front of Gradio answers paths under `/room/` and passes every other request on. Each app's
rooms hang on its Blocks (`blocks.rooms`, set by `create_app`), found through the request's app. The README's API
section lists the routes; changing a room takes the speaker's key (`X-Room-Key`), reading it does not.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from .errors import ModelBusyError
from .room import MAX_VIEW_BYTES, POLL_HOLD_S, RoomError, Rooms, qr_svg

PREFIX = "/room/"
_ROUTE = re.compile(r"^/room/(?P<code>[A-Za-z0-9]{1,16})(?:/(?P<action>[a-z_.]+))?/?$")
PLOTLY_JS = None  # plotly.min.js from the plotly package, read once (followers' pages draw the speaker's figures)
MAX_BODY = MAX_VIEW_BYTES + 4096


def plotly_js() -> bytes:
    global PLOTLY_JS
    if PLOTLY_JS is None:
        import plotly

        PLOTLY_JS = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    return PLOTLY_JS


class RoomRoutes:
    """ASGI middleware: `/room/...` answered here, the rest by the app."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        root = scope.get("root_path", "") or ""
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        if scope["type"] != "http" or not path.startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        rooms = getattr(getattr(scope.get("app"), "blocks", None), "rooms", None)
        try:
            if rooms is None:
                raise RoomError(404, "This app serves no rooms.")
            await self.answer(rooms, path, scope, receive, send)
        except RoomError as e:
            await respond(send, e.status, {"error": str(e)})
        except ModelBusyError as e:
            await respond(send, 503, {"error": str(e)})

    async def answer(self, rooms: Rooms, path: str, scope, receive, send) -> None:
        method = scope["method"]
        query = dict(part.split("=", 1) if "=" in part else (part, "") for part in
                     scope.get("query_string", b"").decode("latin-1").split("&") if part)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path.rstrip("/") == "/room/plotly.js":
            await respond_bytes(send, 200, plotly_js(), "application/javascript",
                                [(b"cache-control", b"public, max-age=86400")])
            return
        if path.rstrip("/") == "/room/new":
            if method != "POST":
                raise RoomError(405, "POST /room/new opens a room.")
            room = await asyncio.to_thread(rooms.create, origin_of(headers, scope))
            _, note = rooms.base_url(origin_of(headers, scope))
            await respond(send, 200, {"code": room.code, "key": room.key, "follow_url": room.follow_url,
                                      "speaker_url": f"{room.follow_url}#key={room.key}", "qr_svg": qr_svg(
                                          room.follow_url), "note": note})
            return
        match = _ROUTE.match(path)
        if not match:
            raise RoomError(404, "No such room route: see the README's API section.")
        room = rooms.get(match["code"])
        action = match["action"] or ""
        body = await read_json(receive) if method == "POST" else {}
        key = headers.get("x-room-key") or (body.get("key") if isinstance(body, dict) else None)

        def speaker_only() -> None:
            if not room.is_speaker(key):
                raise RoomError(403, "Only the speaker changes the room: this request has no speaker's key.")

        if method == "GET" and action == "":
            since = _int(query.get("since"), -1)
            room.heard_from(query.get("follower"))
            if room.version <= since and not room.closed:
                await room.changes.wait(min(POLL_HOLD_S, _float(query.get("hold"), POLL_HOLD_S)),
                                        lambda: disconnected(receive))
            version, plain, zipped = room.encoded()
            gz = "gzip" in headers.get("accept-encoding", "")
            await respond_bytes(send, 200, zipped if gz else plain, "application/json",
                                [(b"content-encoding", b"gzip")] if gz else [])
        elif method == "GET" and action == "question":
            since = _int(query.get("since"), -1)
            if room.guess_serial <= since and not room.closed:
                await room.guessing.wait(min(POLL_HOLD_S, _float(query.get("hold"), POLL_HOLD_S)),
                                         lambda: disconnected(receive))
            tallies = room.tallies()
            if query.get("figure") and room.question is not None:
                from .figures.room import guesses_figure

                large = query.get("large") in ("1", "true")
                tallies["figure"] = json.loads(guesses_figure(room.question, 1.5 if large else 1.0).to_json())
            await respond(send, 200, tallies)
        elif method == "GET" and action == "qr.svg":
            await respond_bytes(send, 200, qr_svg(room.follow_url).encode(), "image/svg+xml")
        elif method == "GET" and action == "notes.md":
            await respond_bytes(send, 200, room.notes().encode(), "text/markdown; charset=utf-8")
        elif method == "GET" and action == "followers":
            await respond(send, 200, {"code": room.code, "followers": room.n_followers()})
        elif method == "POST" and action == "join":
            await respond(send, 200, {"follower": room.join(), "version": room.version})
        elif method == "POST" and action == "guess":
            guess = room.guess(body.get("follower"), body.get("text"))
            await respond(send, 200, {"text": guess.text, "token_text": room.question.token_text(guess.token)})
        elif method == "POST" and action == "view":
            speaker_only()
            await respond(send, 200, {"version": room.show(body.get("view"))})
        elif method == "POST" and action == "question":
            speaker_only()
            question = await asyncio.to_thread(room.ask, body.get("prompt"), bool(body.get("chat")),
                                               body.get("position"))
            await respond(send, 200, question.public())
        elif method == "POST" and action in ("close", "reveal"):
            speaker_only()
            await respond(send, 200, room.set_state("closed" if action == "close" else "revealed").public())
        elif method == "POST" and action == "end":
            speaker_only()
            room.end()
            rooms.sweep()
            await respond(send, 200, {"closed": True})
        else:
            raise RoomError(405 if action in ROUTES else 404, f"No route {method} /room/CODE/{action}: see the "
                                                               f"README's API section.")


ROUTES = ("", "question", "qr.svg", "notes.md", "followers", "join", "guess", "view", "close", "reveal", "end")


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if number == number and number >= 0 else default


def origin_of(headers: dict, scope) -> str:
    """The page's own origin as the visitor's browser sees it (behind a proxy, its forwarded scheme and host)."""
    host = headers.get("x-forwarded-host") or headers.get("host") or ""
    scheme = headers.get("x-forwarded-proto") or scope.get("scheme", "http")
    return f"{scheme.split(',')[0].strip()}://{host.split(',')[0].strip()}" if host else ""


async def read_json(receive) -> dict:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RoomError(400, "The request ended early.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise RoomError(413, f"That request is over {MAX_VIEW_BYTES // 2**20} MB: the room takes views up to "
                                 f"that size (a smaller prompt draws smaller figures).")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    if not raw:
        return {}
    try:
        body = json.loads(raw, parse_constant=lambda _: None)  # NaN and Infinity are not JSON
    except (ValueError, UnicodeDecodeError):
        raise RoomError(400, "The request's body is not JSON.") from None
    if not isinstance(body, dict):
        raise RoomError(400, "The request's body is a JSON object.")
    return body


async def disconnected(receive) -> None:
    """Returns when the client has gone (a GET's body has been read, so the next message is its disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def respond(send, status: int, payload) -> None:
    await respond_bytes(send, status, json.dumps(payload, allow_nan=False).encode(), "application/json")


async def respond_bytes(send, status: int, body: bytes, kind: str, extra: list | None = None) -> None:
    headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode()),
               *(extra or [])]
    if not any(k == b"cache-control" for k, _ in headers):
        headers.append((b"cache-control", b"no-store"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
