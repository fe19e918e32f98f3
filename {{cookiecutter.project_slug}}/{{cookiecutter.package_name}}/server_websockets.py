"""The server, on the websockets library: the adapter between it and the app.

websockets serves the WebSockets and the GET and HEAD requests, and plain_http.py
the requests websockets' parser refuses (POST /token, POST /api/publish); this
module turns each into a call on the app (app.py) and the app's answers back
into websockets' objects. Run it as the Procfile does:
``python -m {{ cookiecutter.package_name }}``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import web
from .admission import Handshake, Slot, wants_websocket
from .app import App
from .logs import configure
from .plain_http import connection_class
from .protocol import SERVICE_RESTART
from .settings import Settings, load
from .sink import CLOSE_TIMEOUT, FrameSink, announce

log = logging.getLogger(__name__)

# Heroku's router reaches the dyno on IPv4; 0.0.0.0 is every interface.
HOST = "0.0.0.0"
# The whole handshake, request head included: a client that opens TCP and says
# nothing is dropped well before the router's 30 s (H12).
OPEN_TIMEOUT = web.REQUEST_HEAD_TIMEOUT


class Sink(FrameSink):
    """Frames go straight into the transport's write buffer through the library's
    public ``broadcast``, so fan-out never waits for a client."""

    __slots__ = ("_ws",)

    def __init__(self, ws: ServerConnection) -> None:
        super().__init__(ws.transport)
        self._ws = ws

    def write_frame(self, utf8: bytes) -> None:
        broadcast((self._ws,), utf8, text=True)

    async def close_frame(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


def _response(answer: web.Response, method: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", answer.content_type),
            ("Content-Length", str(len(answer.body))),
            *answer.headers,
            ("Connection", "close"),  # websockets serves one request per connection
        ]
    )
    # websockets writes whatever body it is given: HEAD's is left out here.
    body = b"" if method == "HEAD" else answer.body
    return Response(answer.status.value, answer.status.phrase, headers, body)


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = App(settings)
        self._slots: dict[ServerConnection, Slot] = {}  # admitted, not yet handled

    def process_request(
        self, ws: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        path = urlsplit(request.path).path
        upgrade = wants_websocket(request.headers.get("Upgrade"))
        peer = ws.remote_address[0] if ws.remote_address else None
        forwarded_for = web.joined(request.headers.get_all("X-Forwarded-For"))
        if path not in self.app.socket_paths or not upgrade:
            plain = web.Request(request.method, path, peer, forwarded_for)
            return self._answer(plain)
        admitted = self.app.admit(
            Handshake(
                origin=request.headers.get("Origin"),
                host=request.headers.get("Host"),
                version=request.headers.get("Sec-WebSocket-Version"),
                peer=peer,
                forwarded_for=forwarded_for,
            )
        )
        if isinstance(admitted, web.Response):
            return _response(admitted, request.method)
        self._slots[ws] = admitted
        return None  # websockets completes the handshake, or refuses a broken one

    async def _answer(self, request: web.Request) -> Response:
        return _response(await self.app.answer(request), request.method)

    def process_response(
        self, ws: ServerConnection, request: Request, response: Response
    ) -> None:
        if response.status_code != 101 and ws in self._slots:
            self._slots.pop(ws).release()  # the handler will not run

    async def handler(self, ws: ServerConnection) -> None:
        # One coroutine per connection for the whole conversation: each one more
        # would hold a frame for every idle connection.
        assert ws.request is not None  # the handler runs after the handshake
        with self._slots.pop(ws):
            # recv raises ConnectionClosed once the connection has closed, also
            # for invalid UTF-8 (1007) and an oversized frame (1009).
            if urlsplit(ws.request.path).path == self.settings.echo_path:
                await self.app.echo(ws.recv, ws.send, (ConnectionClosed,))
            else:
                await self.app.converse(Sink(ws), ws.recv, (ConnectionClosed,))

    async def run(self) -> None:
        settings = self.settings
        await self.app.start()
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        async with serve(
            self.handler,
            HOST,
            settings.port,
            process_request=self.process_request,
            process_response=self.process_response,
            # Requests with a body go to the app through h11 (plain_http.py).
            create_connection=connection_class(self.app),
            # Pings keep Heroku's router from cutting an idle connection (55 s) and
            # find dead peers; both come from the settings.
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            max_size=settings.max_message_bytes,
            # Off by default: about 14 KiB per idle connection instead of 64 KiB.
            compression="deflate" if settings.compression else None,
            open_timeout=OPEN_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
        ) as server:
            log.info("listening on %s:%d", HOST, settings.port)
            announce("websockets' broadcast, into the transport")
            await stopping.wait()
            log.info("shutting down: closing %d connections", self.app.connections)
            self.app.shutting_down()
            server.close(code=SERVICE_RESTART, reason="server restarting")
            await server.wait_closed()
        await self.app.stop()
        log.info("stopped")


def main() -> None:
    settings = load()
    configure(settings.log_level)
    if settings.processes > 1:
        log.info("WEB_CONCURRENCY ignored: websockets serves from one process")
    asyncio.run(Server(settings).run())
