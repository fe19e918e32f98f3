"""The app as every server module sees it: settings, broker, hub and counters.

A server module builds one ``App``, asks it whether to admit each handshake, opens
a ``Session`` per WebSocket, and calls ``start`` and ``stop`` around serving.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from .broker import make_broker
from .hub import Hub
from .logs import mask_url
from .session import Session
from .settings import Settings
from .sink import Sink
from .web import StaticFiles, health_body, origin_allowed

log = logging.getLogger(__name__)


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub = Hub()
        self.broker = make_broker(settings, self.hub.deliver, self.hub.resubscribed)
        self.hub.broker = self.broker
        self.static = StaticFiles()
        self.connections = 0  # open WebSockets plus handshakes admitted
        self.accepting = True

    async def start(self) -> None:
        if self.settings.redis_url is None:
            log.info("broker: memory (one process; set REDIS_URL to share rooms)")
        else:
            log.info("broker: redis at %s", mask_url(self.settings.redis_url))
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.close()
        log.info("broker released")

    def admit(self, origin: str | None, host: str | None) -> HTTPStatus | None:
        """None to go on with a WebSocket handshake (a slot is then held until
        ``release``), or the status to refuse it with."""
        if not origin_allowed(self.settings.allowed_origins, origin, host):
            log.info("handshake refused: origin %r not allowed", origin)
            return HTTPStatus.FORBIDDEN
        if not self.accepting:
            return HTTPStatus.SERVICE_UNAVAILABLE
        if self.connections >= self.settings.max_connections:
            log.warning("handshake refused: %d connections", self.connections)
            return HTTPStatus.SERVICE_UNAVAILABLE
        self.connections += 1
        return None

    def release(self) -> None:
        self.connections -= 1

    def health(self) -> tuple[HTTPStatus, bytes]:
        if self.broker.healthy:
            status, text = HTTPStatus.OK, "ok"
        else:
            status, text = HTTPStatus.SERVICE_UNAVAILABLE, "degraded"
        return status, health_body(text, self.broker.kind, self.connections)

    def session(self, sink: Sink) -> Session:
        return Session(self.hub, self.settings, sink)
