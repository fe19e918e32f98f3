"""The app as every server module sees it: one object per process.

A server module builds one ``App`` and calls ``start`` and ``stop`` around
serving. It hands each plain HTTP request to ``answer``, each WebSocket
handshake to ``admit`` (a refusal, or a slot to hold while the connection
lives), and each accepted WebSocket to ``converse`` or ``echo``; it never
decides a rule of the contract itself.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any

from .admission import Gate, Handshake, Slot
from .connection import Closed, Connection, Receive, Send, echo
from .logs import mask_url
from .node import Node
from .settings import Settings
from .sink import Sink
from .web import (
    NOT_FOUND,
    SAFE_METHODS,
    SPEAKS_WEBSOCKET,
    Response,
    StaticFiles,
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
        self.static = StaticFiles()
        # Where WebSockets are served: /ws, and the echo endpoint when it is on.
        self.socket_paths = frozenset(
            path for path in (SOCKET_PATH, settings.echo_path) if path is not None
        )

    async def start(self) -> None:
        if self.settings.redis_url is None:
            log.info("broker: memory (one process; set REDIS_URL to share rooms)")
        else:
            log.info("broker: redis at %s", mask_url(self.settings.redis_url))
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

    def answer(self, method: str, path: str) -> Response:
        """The response to any request that is not a WebSocket handshake. HEAD gets
        GET's, body included: each server module sends its headers alone."""
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
        return Connection(self.node, self.settings, sink).converse(receive, closed)

    def echo(
        self, receive: Receive, send: Send, closed: Closed = ()
    ) -> Coroutine[Any, Any, None]:
        """WS_ECHO_PATH: every frame back as it came (conformance tests only)."""
        return echo(receive, send, closed)
