"""Which WebSocket handshakes this process takes, and the slot each one holds.

A server module describes each handshake as a ``Handshake`` before it upgrades,
and ``Gate.admit`` answers with the refusal to send instead, or a ``Slot``: the
connection's place in WS_MAX_CONNECTIONS, given back when its ``with`` block
ends, however the connection ends (also when the handshake never completes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType

from .settings import Settings
from .web import TEXT, Response, client_address, origin_allowed, text

log = logging.getLogger(__name__)

# RFC 6455 is version 13, the only one Heroku's router speaks; aiohttp alone would
# also accept the hybi drafts 7 and 8. Refused as the websockets library refuses
# it, which is what the fastapi and django variants send (uvicorn's handshake is
# the library's, answered before the app sees the request): no Cache-Control.
WEBSOCKET_VERSION = "13"


def bad_version(version: str | None) -> Response:
    body = (
        "Failed to open a WebSocket connection: "
        f"invalid Sec-WebSocket-Version header: {version}.\n"
    )
    return Response(HTTPStatus.BAD_REQUEST, TEXT, body.encode(), headers=())


def wants_websocket(upgrade: str | None) -> bool:
    """Whether a request's Upgrade header asks for a WebSocket; one that does not
    gets the plain answer (426 on a WebSocket path)."""
    return upgrade is not None and "websocket" in upgrade.lower()


@dataclass(frozen=True, slots=True)
class Handshake:
    """What admission looks at, from the upgrade request's headers."""

    origin: str | None
    host: str | None
    version: str | None
    peer: str | None  # the socket's peer address
    forwarded_for: str | None  # every X-Forwarded-For header, joined by commas


class Slot:
    """One admitted connection's place; ``with slot:`` gives it back at the end."""

    __slots__ = ("_gate", "_client")

    def __init__(self, gate: Gate, client: str) -> None:
        self._gate: Gate | None = gate
        self._client = client

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Give the place back; a second call does nothing."""
        if self._gate is not None:
            self._gate.given_back(self._client)
            self._gate = None


class Gate:
    def __init__(self, settings: Settings) -> None:
        self._allowed_origins = settings.allowed_origins
        self._max_connections = settings.max_connections
        self._max_per_client = settings.max_connections_per_client
        self._behind_router = settings.behind_router
        self.connections = 0  # open WebSockets plus handshakes admitted
        self._per_client: dict[str, int] = {}  # the same, by client address
        self.accepting = True  # False from SIGTERM on

    def admit(self, handshake: Handshake) -> Response | Slot:
        """The refusal to answer the handshake with, or the slot it now holds."""
        if handshake.version != WEBSOCKET_VERSION:
            return bad_version(handshake.version)
        if not origin_allowed(self._allowed_origins, handshake.origin, handshake.host):
            log.info("handshake refused: origin %r not allowed", handshake.origin)
            return text(HTTPStatus.FORBIDDEN)
        if not self.accepting:
            return text(HTTPStatus.SERVICE_UNAVAILABLE)
        if self.connections >= self._max_connections:
            log.warning("handshake refused: %d connections", self.connections)
            return text(HTTPStatus.SERVICE_UNAVAILABLE)
        client = client_address(
            self._behind_router, handshake.peer, handshake.forwarded_for
        )
        held = self._per_client.get(client, 0)
        if held >= self._max_per_client:
            # The address is personal data: the count alone says what happened.
            log.info("handshake refused: a client holds %d connections", held)
            return text(HTTPStatus.TOO_MANY_REQUESTS)
        self._per_client[client] = held + 1
        self.connections += 1
        return Slot(self, client)

    def given_back(self, client: str) -> None:
        self.connections -= 1
        held = self._per_client.pop(client) - 1
        if held:
            self._per_client[client] = held
