"""The app as every server module sees it: one object per process.

A server module builds one ``App`` and calls ``start`` and ``stop`` around
serving. It hands each plain HTTP request to ``answer`` (with its body, up to
``body_limit`` bytes, when that is not 0), each WebSocket handshake to ``admit``
(a refusal, or a slot to hold while the connection lives), and each accepted
WebSocket to ``converse`` or ``echo``; it never decides a rule of the contract
itself.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any

from . import gc_tuning
from .admission import Gate, Handshake, Slot
from .api import PUBLISH_PATH, PublishApi
from .connection import Closed, Connection, Receive, Send, echo
from .deadlines import Deadlines
from .guests import TOKEN_PATH, Guests
from .logs import mask_url
from .node import Node
from .settings import Settings
from .sink import Sink
from .tokens import Verifier
from .web import (
    NOT_FOUND,
    SAFE_METHODS,
    SPEAKS_WEBSOCKET,
    Request,
    Response,
    StaticFiles,
    client_address,
    health,
    text,
)

log = logging.getLogger(__name__)

SOCKET_PATH = "/ws"


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node = Node(settings)
        self.gate = Gate(settings)
        self.verifier = Verifier(settings.auth_keys)
        self.deadlines = Deadlines()
        self.guests = Guests(settings, self.verifier)
        self.api = PublishApi(settings, self.node)
        self.static = StaticFiles()
        # Where WebSockets are served: /ws, and the echo endpoint when it is on.
        self.socket_paths = frozenset(
            path for path in (SOCKET_PATH, settings.echo_path) if path is not None
        )

    async def start(self) -> None:
        settings = self.settings
        gc_tuning.tune()
        if settings.redis_url is None:
            log.info("broker: memory (one process; set REDIS_URL to share rooms)")
        else:
            log.info("broker: redis at %s", mask_url(settings.redis_url))
        if settings.auth_key_random:
            log.info("AUTH_SECRET unset: tokens are signed with a random key")
        log.info(
            "identity: %s, guest tokens %s, publish API %s",
            "anonymous allowed" if settings.auth_anonymous else "token required",
            "on" if settings.auth_guest else "off",
            "off" if settings.api_key is None else "on",
        )
        await self.node.start()

    async def stop(self) -> None:
        await self.node.close()
        log.info("broker released")

    def shutting_down(self) -> None:
        """SIGTERM: from now on every handshake is refused with 503."""
        self.gate.accepting = False

    @property
    def accepting(self) -> bool:
        return self.gate.accepting

    @property
    def connections(self) -> int:
        return self.gate.connections

    # ------------------------------------------------------------------ plain HTTP

    def body_limit(self, method: str, path: str) -> int:
        """The most body bytes ``answer`` reads for this request; 0: none. A
        server module passes body=None when the body is longer."""
        if path == TOKEN_PATH:
            return self.guests.body_limit(method)
        if path == PUBLISH_PATH:
            return self.api.body_limit(method)
        return 0

    async def answer(self, request: Request) -> Response:
        """The response to any request that is not a WebSocket handshake. HEAD gets
        GET's, body included: each server module sends its headers alone."""
        method, path = request.method, request.path
        if path == TOKEN_PATH:
            address = client_address(
                self.settings.behind_router, request.peer, request.forwarded_for
            )
            return self.guests.answer(request, address)
        if path == PUBLISH_PATH:
            return await self.api.answer(request)
        if path in self.socket_paths:
            return text(HTTPStatus.UPGRADE_REQUIRED, *SPEAKS_WEBSOCKET)
        found: Response | None
        if path == "/healthz":
            found = health(self.node.healthy, self.node.broker_kind, self.connections)
        else:
            found = self.static.get(path)
        if found is None:
            return NOT_FOUND
        if method not in SAFE_METHODS:
            return text(HTTPStatus.METHOD_NOT_ALLOWED, ("Allow", "GET, HEAD"))
        return found

    # ------------------------------------------------------------------ WebSockets

    def admit(self, handshake: Handshake) -> Response | Slot:
        """The refusal to answer a handshake with, or the slot it holds from now
        on: accept the upgrade inside ``with slot:``."""
        return self.gate.admit(handshake)

    def converse(
        self, sink: Sink, receive: Receive, closed: Closed = ()
    ) -> Coroutine[Any, Any, None]:
        """The /ws protocol on an accepted WebSocket, until it closes. (Not itself
        a coroutine: one frame less held by every idle connection.)"""
        connection = Connection(
            self.node, self.settings, self.verifier, self.deadlines, sink
        )
        return connection.converse(receive, closed)

    def echo(
        self, receive: Receive, send: Send, closed: Closed = ()
    ) -> Coroutine[Any, Any, None]:
        """WS_ECHO_PATH: every frame back as it came (conformance tests only)."""
        return echo(receive, send, closed)
