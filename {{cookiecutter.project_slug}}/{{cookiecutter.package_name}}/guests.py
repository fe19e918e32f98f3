"""Guest tokens, ``POST /token``: a display name in, a connection token out.

For the demo page and workshops: anyone may become a guest, so each client
address may ask at most GUESTS_PER_WINDOW times per WINDOW_SECONDS. A guest who
presents their last guest token keeps their id. A team whose own backend mints
tokens turns this off with AUTH_GUEST=false.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict, deque
from http import HTTPStatus

from .protocol import ProtocolError, json_object
from .settings import Settings
from .tokens import MAX_CLAIM_CHARS, TokenError, Verifier, has_control, mint
from .web import (
    NOT_FOUND,
    ONLY_POST,
    TOO_LARGE,
    Request,
    Response,
    bearer,
    error_answer,
    json_answer,
    text,
)

TOKEN_PATH = "/token"
# {"name": ...} with a 64-character name fits many times over.
BODY_LIMIT = 1024
# A workshop behind one NAT (a room of 60 people) fits; a script minting guests
# in a loop does not.
GUESTS_PER_WINDOW = 60
WINDOW_SECONDS = 60.0
GUEST_PREFIX = "guest-"
# Random bytes in a new guest's id: 64 bits, so two guests never share one.
GUEST_ID_BYTES = 8


class Window:
    """At most ``limit`` events per key in any ``seconds``: a sliding log of each
    key's recent events, keys forgotten once their events are all old."""

    def __init__(self, limit: int, seconds: float) -> None:
        self._limit = limit
        self._seconds = seconds
        # Least recently used first, so the keys to forget are at the front.
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0 when the event is allowed (and counted), else the seconds to wait."""
        now = time.monotonic()
        horizon = now - self._seconds
        while self._events:
            oldest = next(iter(self._events.values()))
            if oldest and oldest[-1] > horizon:
                break
            self._events.popitem(last=False)
        events = self._events.setdefault(key, deque())
        self._events.move_to_end(key)
        while events and events[0] <= horizon:
            events.popleft()
        if len(events) >= self._limit:
            return events[0] - horizon
        events.append(now)
        return 0.0


class Guests:
    def __init__(self, settings: Settings, verifier: Verifier) -> None:
        self._settings = settings
        self._verifier = verifier
        self._window = Window(GUESTS_PER_WINDOW, WINDOW_SECONDS)

    def body_limit(self, method: str) -> int:
        return BODY_LIMIT if self._settings.auth_guest and method == "POST" else 0

    def answer(self, request: Request, client: str) -> Response:
        if not self._settings.auth_guest:
            return NOT_FOUND
        if request.method != "POST":
            return ONLY_POST
        wait = self._window.take(client)
        if wait:
            return text(
                HTTPStatus.TOO_MANY_REQUESTS, ("Retry-After", str(math.ceil(wait)))
            )
        if request.body is None:
            return TOO_LARGE
        try:
            name = _name(json_object(request.body, "body"))
        except ProtocolError as error:
            return error_answer(HTTPStatus.BAD_REQUEST, error)
        settings = self._settings
        new_id = GUEST_PREFIX + secrets.token_hex(GUEST_ID_BYTES)
        sub = self._returning(request) or new_id
        token = mint(
            sub,
            ttl=settings.auth_guest_ttl,
            name=name,
            rooms=settings.auth_guest_rooms,
            key=settings.auth_keys[0],
        )
        user = self._verifier.verify(token)
        fields = {
            "token": token,
            "user": user.public(),
            "expires_in": user.expires_in(),
        }
        return json_answer(HTTPStatus.OK, fields)

    def _returning(self, request: Request) -> str | None:
        """The id of the guest token presented, if it is one of ours: signed with
        a key of the app's and expired at most AUTH_GUEST_TTL ago, so a guest who
        comes back the next day is still the same user."""
        token = bearer(request.authorization)
        if token is None:
            return None
        try:
            user = self._verifier.verify(token, leeway=self._settings.auth_guest_ttl)
        except TokenError:
            return None  # any other credential: a new guest
        return user.id if user.id.startswith(GUEST_PREFIX) else None


def _name(fields: dict[str, object]) -> str:
    name = fields.get("name")
    if isinstance(name, str):
        name = name.strip()
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_CLAIM_CHARS:
        raise ProtocolError(
            "invalid_message",
            f"name must be a string of 1 to {MAX_CLAIM_CHARS} characters",
        )
    if has_control(name):
        raise ProtocolError(
            "invalid_message", "name must not contain control characters"
        )
    return name
