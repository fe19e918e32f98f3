"""The WebSocket protocol (README, Protocol): client frames in, replies out.

``parse`` turns one text frame into a request or raises ``ProtocolError`` carrying
the contract's error code; the reply builders produce the exact frames the contract
shows. Nothing here knows about sockets, brokers or frameworks.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

# The contract's close codes that the app sends itself (1007 and 1009 come from
# the frameworks' own checks).
GOING_AWAY = 1001  # server shutdown, where the framework leaves it to the app
SERVICE_RESTART = 1012  # server shutdown: reconnect
UNSUPPORTED_DATA = 1003  # a binary frame on /ws
INTERNAL_ERROR = 1011  # an unexpected error in this connection
TRY_AGAIN_LATER = 1013  # a slow consumer, over WS_MAX_PENDING_BYTES
UNAUTHORIZED = 4401  # no auth within AUTH_TIMEOUT, or the token expired

# Matched with fullmatch: "$" alone would let a trailing newline through.
ROOM_RULE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_REF_LENGTH = 64
REQUEST_TYPES = ("auth", "refresh", "join", "leave", "publish", "ping")
UNAUTHENTICATED = ("unauthenticated", "authenticate first: send an auth frame")


class Payload(NamedTuple):
    """One frame for clients, as text and as the UTF-8 bytes that go on the wire."""

    text: str
    utf8: bytes


@dataclass(frozen=True, slots=True)
class Position:
    """A message's place in its room's history (history.py); offset 0: before
    the room's first message."""

    offset: int
    epoch: str


class ProtocolError(Exception):
    """A bad request: answered with an ``error`` frame; the connection lives on."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def reply(self) -> str:
        return _frame(
            {"type": "error", "code": self.code, "message": self.message}, self.ref
        )


@dataclass(frozen=True, slots=True)
class Request:
    type: str  # one of REQUEST_TYPES
    room: str | None = None
    data: Any = None
    ref: str | None = None
    token: str | None = None  # auth and refresh
    history: int | None = None  # join: how many past messages
    since: Position | None = None  # join: the last message the client has


def json_object(text: str | bytes, what: str = "frame") -> dict[str, Any]:
    """A JSON object as a browser's JSON.parse would take it, or invalid_json."""
    try:
        fields = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except NotFinite as error:
        raise ProtocolError("invalid_json", str(error)) from None
    except (ValueError, RecursionError):  # UnicodeDecodeError included
        raise ProtocolError("invalid_json", f"the {what} is not valid JSON") from None
    if not isinstance(fields, dict):
        raise ProtocolError("invalid_json", f"the {what} must be a JSON object")
    return fields


def parse(text: str) -> Request:
    """One client text frame as a request, or ProtocolError with the contract's code."""
    fields = json_object(text)

    ref = fields.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF_LENGTH):
        # The ref itself is bad, so the error cannot carry it.
        raise ProtocolError(
            "invalid_message",
            f"ref must be a string of at most {MAX_REF_LENGTH} characters",
        )
    kind = fields.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "type must be a string", ref)
    if kind not in REQUEST_TYPES:
        raise ProtocolError(
            "unknown_type",
            f"type {kind[:64]!r} is unknown: use one of {', '.join(REQUEST_TYPES)}",
            ref,
        )
    if kind == "ping":
        return Request("ping", ref=ref)
    if kind in ("auth", "refresh"):
        token = fields.get("token")
        if not isinstance(token, str):
            raise ProtocolError(
                "invalid_message", f"{kind} needs a token (a string)", ref
            )
        return Request(kind, ref=ref, token=token)

    if kind == "publish":
        room, data = publication(fields, ref)
        return Request("publish", room, data, ref)
    room = room_of(fields, kind, ref)
    if kind == "join":
        return Request(kind, room, ref=ref, **_catch_up(fields, ref))
    return Request(kind, room, ref=ref)


# An epoch is the app's own (16 hex digits); this bounds what a client can send.
MAX_EPOCH_LENGTH = 64


def _catch_up(fields: dict[str, Any], ref: str | None) -> dict[str, Any]:
    """A join's history or since, checked (the connection refuses both when
    history is off)."""
    history, since = fields.get("history"), fields.get("since")
    if history is not None and since is not None:
        raise ProtocolError(
            "invalid_message", "join takes history or since, not both", ref
        )
    if history is not None:
        if not (_whole(history) and history >= 1):
            raise ProtocolError(
                "invalid_message", "history must be a whole number of at least 1", ref
            )
        return {"history": history}
    if since is not None:
        offset = since.get("offset") if isinstance(since, dict) else None
        epoch = since.get("epoch") if isinstance(since, dict) else None
        if not (
            isinstance(offset, int)
            and _whole(offset)
            and offset >= 0
            and isinstance(epoch, str)
            and 1 <= len(epoch) <= MAX_EPOCH_LENGTH
        ):
            raise ProtocolError(
                "invalid_message",
                "since must be an object with offset (a whole number, 0 or more) "
                "and epoch (the string that joined or a message gave)",
                ref,
            )
        return {"since": Position(offset, epoch)}
    return {}


def _whole(value: Any) -> bool:
    # JSON true and false are ints in Python, not numbers in JSON.
    return isinstance(value, int) and not isinstance(value, bool)


def publication(fields: dict[str, Any], ref: str | None = None) -> tuple[str, Any]:
    """A publish's room and data (a frame's, or a body of POST /api/publish)."""
    room = room_of(fields, "publish", ref)
    if "data" not in fields:
        raise ProtocolError(
            "invalid_message", "publish needs data (any JSON value)", ref
        )
    return room, fields["data"]


def room_of(fields: dict[str, Any], kind: str, ref: str | None = None) -> str:
    """The request's room, or ProtocolError: invalid_message, invalid_room."""
    room = fields.get("room")
    if not isinstance(room, str):
        raise ProtocolError("invalid_message", f"{kind} needs a room (a string)", ref)
    if not ROOM_RULE.fullmatch(room):
        raise ProtocolError(
            "invalid_room",
            "a room name is 1 to 64 characters among A-Z a-z 0-9 _ . : -",
            ref,
        )
    return room


class NotFinite(ValueError):
    """NaN, Infinity or a number too large for a double: a browser's JSON.parse
    would choke on the frame we would send, so it is refused on the way in."""


def _refuse_constant(name: str) -> None:
    raise NotFinite(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotFinite(f"the number {text[:32]} is too large")
    return value


def _frame(fields: dict[str, Any], ref: str | None) -> str:
    if ref is not None:
        fields["ref"] = ref
    return json.dumps(fields)


def joined(
    room: str,
    ref: str | None = None,
    position: Position | None = None,
    recovered: bool | None = None,
) -> str:
    """``joined``; with history on, the room's latest offset and its epoch, and
    for a join with since, whether every missed message follows."""
    fields: dict[str, Any] = {"type": "joined", "room": room}
    if position is not None:
        fields["offset"] = position.offset
        fields["epoch"] = position.epoch
    if recovered is not None:
        fields["recovered"] = recovered
    return _frame(fields, ref)


def left(room: str, ref: str | None = None) -> str:
    return _frame({"type": "left", "room": room}, ref)


def published(room: str, ref: str | None = None) -> str:
    return _frame({"type": "published", "room": room}, ref)


def pong(ref: str | None = None) -> str:
    return _frame({"type": "pong"}, ref)


def gap(rooms: list[str]) -> str:
    return json.dumps({"type": "gap", "rooms": rooms})


def authed(user: dict[str, str], expires_in: int, ref: str | None = None) -> str:
    return _frame({"type": "authed", "user": user, "expires_in": expires_in}, ref)


def refreshed(expires_in: int, ref: str | None = None) -> str:
    return _frame({"type": "refreshed", "expires_in": expires_in}, ref)


def message(room: str, data: Any, sender: dict[str, str] | None = None) -> str:
    """The frame every member receives, and the exact payload published to Redis;
    ``sender`` is the publishing connection's user, set by the server."""
    fields = {"type": "message", "room": room, "data": data}
    if sender is not None:
        fields["from"] = sender
    return json.dumps(fields, allow_nan=False)


def publish_text(
    room: str, data: Any, sender: dict[str, str] | None, ref: str | None = None
) -> str:
    """``message``, or invalid_json for data that cannot be written back."""
    try:
        return message(room, data, sender)
    except RecursionError:
        # json.loads accepts nesting a few levels deeper than json.dumps can
        # write back inside the frame (Python 3.11).
        raise ProtocolError(
            "invalid_json", "the data is nested too deeply", ref
        ) from None
