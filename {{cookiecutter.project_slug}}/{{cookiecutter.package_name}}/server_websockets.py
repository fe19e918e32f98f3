"""The server, on the websockets library: the only module that knows the framework.

It adapts websockets to the app's path, socket -> session -> hub -> broker, and
back through each connection's non-blocking sink. Run it as the Procfile does:
``python -m {{ cookiecutter.package_name }}.server``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .app import App
from .broker import Payload
from .logs import configure
from .protocol import INTERNAL_ERROR, UNSUPPORTED_DATA
from .settings import Settings, load
from .sink import CLOSE_TIMEOUT
from .web import NOT_FOUND

# Named for the module, also when run as __main__ by the Procfile.
log = logging.getLogger("{{ cookiecutter.package_name }}.server")

# Heroku's router reaches the dyno on IPv4; 0.0.0.0 is every interface.
HOST = "0.0.0.0"
# The router gives up on a handshake after 30 s (H12); a client that opens TCP and
# says nothing is dropped well before, so it cannot hold a file descriptor.
OPEN_TIMEOUT = 10
# On SIGTERM (deploys, restarts, daily cycling) clients are told to reconnect.
SERVICE_RESTART = 1012


class Sink:
    """A connection's outbound side: frames go straight into the transport's write
    buffer, as ``websockets.broadcast`` does, so fan-out never waits for a client;
    the buffer's size is what the app bounds with WS_MAX_PENDING_BYTES."""

    __slots__ = ("_ws", "_closing")

    def __init__(self, ws: ServerConnection) -> None:
        self._ws = ws
        self._closing: asyncio.Task[None] | None = None

    def send(self, payload: Payload) -> None:
        broadcast((self._ws,), payload.utf8, text=True)

    def pending_bytes(self) -> int:
        return self._ws.transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        # ws.close() first waits for the write buffer to drain, which a client that
        # does not read never lets happen: past CLOSE_TIMEOUT, drop the TCP link.
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._ws.close(code, reason)
        except TimeoutError:
            self._ws.transport.abort()


def _response(status: HTTPStatus, content_type: str, body: bytes) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),  # websockets serves one request per connection
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _text(status: HTTPStatus) -> Response:
    return _response(status, "text/plain; charset=utf-8", f"{status.phrase}\n".encode())


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = App(settings)
        self._socket_paths = {"/ws", settings.echo_path}
        self._admitted: set[ServerConnection] = set()  # hold a connection slot

    def process_request(
        self, ws: ServerConnection, request: Request
    ) -> Response | None:
        path = urlsplit(request.path).path
        if path in self._socket_paths:
            refusal = self.app.admit(
                request.headers.get("Origin"), request.headers.get("Host")
            )
            if refusal is not None:
                return _text(refusal)
            self._admitted.add(ws)
            return None  # websockets answers 426 to a request without Upgrade
        if path == "/healthz":
            status, body = self.app.health()
            return _response(status, "application/json", body)
        found = self.app.static.get(path)
        if found is None:
            return _response(*NOT_FOUND)
        return _response(HTTPStatus.OK, *found)

    def process_response(
        self, ws: ServerConnection, request: Request, response: Response
    ) -> None:
        if (
            response.status_code != HTTPStatus.SWITCHING_PROTOCOLS
            and ws in self._admitted
        ):
            self._admitted.discard(ws)
            self.app.release()

    async def handler(self, ws: ServerConnection) -> None:
        # One coroutine per connection for the whole conversation: each one more
        # would hold a frame for every idle connection.
        try:
            if urlsplit(ws.request.path).path == self.settings.echo_path:
                await self._echo(ws)
                return
            session = self.app.session(Sink(ws))
            log.debug("connection opened from %s", ws.remote_address)
            try:
                async for frame in ws:
                    if not isinstance(frame, str):
                        await ws.close(
                            UNSUPPORTED_DATA, "binary frames are not accepted"
                        )
                        break
                    await session.handle(frame)
            except ConnectionClosed:
                pass  # invalid UTF-8 (1007) and oversized frames (1009) end up here
            except Exception:
                log.exception("connection failed; closing it with 1011")
                await ws.close(INTERNAL_ERROR, "unexpected server error")
            finally:
                await session.end()
                log.debug("connection closed: %s", ws.close_code)
        finally:
            self._admitted.discard(ws)
            self.app.release()

    async def _echo(self, ws: ServerConnection) -> None:
        """Every frame back as it came: for protocol conformance tests only."""
        try:
            async for frame in ws:
                await ws.send(frame)
        except ConnectionClosed:
            pass

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
            await stopping.wait()
            log.info("shutting down: closing %d connections", self.app.connections)
            self.app.accepting = False
            server.close(code=SERVICE_RESTART, reason="server restarting")
            await server.wait_closed()
        await self.app.stop()
        log.info("stopped")


def main() -> None:
    settings = load()
    configure(settings.log_level)
    asyncio.run(Server(settings).run())


if __name__ == "__main__":
    main()
