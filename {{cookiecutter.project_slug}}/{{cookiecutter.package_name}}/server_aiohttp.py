"""The server, on aiohttp.web: the only module that knows the framework.

It adapts aiohttp to the app's path, socket -> session -> hub -> broker, and back
through each connection's sink. Run it as the Procfile does:
``python -m {{ cookiecutter.package_name }}.server``.

aiohttp has no multi-process server of its own, so this is one process on one
event loop and WEB_CONCURRENCY is not used: scale out with more dynos, which share
rooms through Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http import HTTPStatus

from aiohttp import WSCloseCode, WSMsgType, hdrs, web

from .app import App
from .logs import configure
from .settings import ROUTER_IDLE_SECONDS, Settings, load
from .sink import CLOSE_TIMEOUT, FrameSink, QueuedSink
from .web import NOT_FOUND

# Named for the module, also when run as __main__ by the Procfile.
log = logging.getLogger("{{ cookiecutter.package_name }}.server")

# Heroku's router reaches the dyno on IPv4; 0.0.0.0 is every interface.
HOST = "0.0.0.0"
# The router keeps idle connections to a dyno open for 90 s: closing them sooner
# (aiohttp's default is 75 s) races the router's next request on that connection.
KEEP_ALIVE = 95
# After a restart every client reconnects within seconds (their backoff starts at
# 0.5 s): a deeper accept queue than aiohttp's 128, like uvicorn's 2048.
BACKLOG = 2048
# On SIGTERM run_app stops listening and runs on_shutdown, which tells every
# WebSocket to go away (each handler then ends within CLOSE_TIMEOUT). It waits this
# long for the handlers, cancels their requests, waits as long again, cancels the
# handlers, then runs App.stop(): about 2 x 10 s at worst, inside the 25 s the
# app has before Heroku's SIGKILL at 30 s.
SHUTDOWN_TIMEOUT = 10
# Headers of the 426 answer to a request on a WebSocket path that is not a
# handshake: what the path speaks (RFC 6455, section 4.4).
WEBSOCKET_ONLY = {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"}


class WebSocket(web.WebSocketResponse):
    """aiohttp's WebSocket response with the app's keep-alive, limit and compression.

    Keep-alive as aiohttp 3.14 does it: once ``heartbeat`` seconds pass without
    any data from the client it sends a Ping; if no data at all (a Pong or any
    other frame) arrives in the next ``_pong_heartbeat`` seconds, it drops the TCP
    connection without a close frame. A client that keeps sending is not pinged:
    its frames show it is alive, and each one gets a reply, so neither direction
    is idle. aiohttp waits heartbeat / 2 for the Pong and has no option for it;
    here the wait is WS_PING_TIMEOUT.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            # Pings keep Heroku's router from cutting an idle connection (55 s) and
            # find dead peers; aiohttp sends none unless heartbeat is set.
            heartbeat=settings.ping_interval,
            autoping=True,  # answer the client's Pings
            # aiohttp refuses a frame of exactly max_msg_size (its check is >=);
            # the contract accepts WS_MAX_MESSAGE_BYTES itself. Larger: 1009.
            max_msg_size=settings.max_message_bytes + 1,
            # Off by default: once it has compressed a frame, a connection holds
            # about 120 KiB of zlib state instead of about 20 KiB in all.
            compress=settings.compression,
            # How long a close waits for the client's close frame.
            timeout=CLOSE_TIMEOUT,
        )
        # The attribute aiohttp's pong timer reads (aiohttp is pinned: 3.14.5).
        self._pong_heartbeat = settings.ping_timeout


def outbound(
    ws: WebSocket, transport: asyncio.Transport, compression: bool
) -> tuple[FrameSink | QueuedSink, asyncio.Task[None] | None]:
    """The connection's outbound side, and the writer task it needs, if any."""

    async def close(code: int, reason: str) -> None:
        await ws.close(code=code, message=reason.encode())

    if not compression:
        # Uncompressed, aiohttp writes a frame synchronously; its send_str is a
        # coroutine only for compression and flow control, which the app does
        # itself (WS_MAX_PENDING_BYTES). No writer task per connection: fan-out
        # is one call per member. The writer is aiohttp's (pinned: 3.14.5).
        writer = ws._writer

        def write_text(data: bytes) -> None:
            writer._write_websocket_frame(data, WSMsgType.TEXT, 0)

        return FrameSink(write_text, transport, close), None
    sink = QueuedSink(ws.send_str, close, transport.abort)
    return sink, asyncio.create_task(_write(sink))


async def _write(sink: QueuedSink) -> None:
    """The writer task: the sink's frames, in order."""
    # A client that left mid-send: the receive loop sees it too.
    with contextlib.suppress(ConnectionResetError):
        await sink.drain()


# What runs on an accepted WebSocket: the app's protocol, or the echo.
Conversation = Callable[[WebSocket, FrameSink | QueuedSink], Awaitable[None]]


def _response(
    status: HTTPStatus,
    content_type: str,
    body: bytes,
    extra_headers: Mapping[str, str] | None = None,
) -> web.Response:
    headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
    headers.update(extra_headers or {})
    return web.Response(status=status, body=body, headers=headers)


def _text(
    status: HTTPStatus, extra_headers: Mapping[str, str] | None = None
) -> web.Response:
    body = f"{status.phrase}\n".encode()
    return _response(status, "text/plain; charset=utf-8", body, extra_headers)


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = App(settings)
        # Every open WebSocket's sink, to close on SIGTERM.
        self._open: set[FrameSink | QueuedSink] = set()

    def application(self) -> web.Application:
        application = web.Application()
        application.cleanup_ctx.append(self._lifespan)
        application.on_shutdown.append(self._on_shutdown)
        application.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/", self.static),
                web.get("/static/{name}", self.static),
                web.get("/ws", self.conversation),
            ]
        )
        if self.settings.echo_path is not None:
            application.router.add_get(self.settings.echo_path, self.echo)
        return application

    # ------------------------------------------------------------------ plain HTTP

    async def healthz(self, request: web.Request) -> web.Response:
        status, body = self.app.health()
        return _response(status, "application/json", body)

    async def static(self, request: web.Request) -> web.Response:
        found = self.app.static.get(request.path)
        if found is None:
            return _response(*NOT_FOUND)
        return _response(HTTPStatus.OK, *found)

    # ------------------------------------------------------------------ WebSockets

    async def conversation(self, request: web.Request) -> web.StreamResponse:
        return await self._accept(request, self._converse)

    async def echo(self, request: web.Request) -> web.StreamResponse:
        return await self._accept(request, self._echo)

    async def _accept(
        self, request: web.Request, conversation: Conversation
    ) -> web.StreamResponse:
        """Admit the handshake, upgrade, and run ``conversation`` on the socket."""
        ws = WebSocket(self.settings)
        if not ws.can_prepare(request):
            # A plain GET, or a broken handshake: say what this path speaks.
            return _text(HTTPStatus.UPGRADE_REQUIRED, WEBSOCKET_ONLY)
        refusal = self.app.admit(
            request.headers.get(hdrs.ORIGIN), request.headers.get(hdrs.HOST)
        )
        if refusal is not None:
            return _text(refusal)
        try:
            await ws.prepare(request)
            transport = request.transport
            if transport is None:
                return ws  # the client left during the handshake
            sink, writer = outbound(ws, transport, self.settings.compression)
            self._open.add(sink)
            if not self.app.accepting:  # SIGTERM came during the handshake
                sink.close(WSCloseCode.GOING_AWAY, "server shutting down")
            try:
                await conversation(ws, sink)
            finally:
                self._open.discard(sink)
                if writer is not None:
                    writer.cancel()
                await sink.wait_closed()
        finally:
            self.app.release()
        return ws

    async def _converse(self, ws: WebSocket, sink: FrameSink | QueuedSink) -> None:
        session = self.app.session(sink)
        log.debug("connection opened from %s", ws.get_extra_info("peername"))
        try:
            async for message in ws:
                if sink.closing:
                    break
                if message.type is WSMsgType.TEXT:
                    await session.handle(message.data)
                elif message.type is WSMsgType.BINARY:
                    sink.close(WSCloseCode.UNSUPPORTED_DATA, "binary frames refused")
                # ERROR: aiohttp has closed the connection itself, with 1007 for
                # invalid UTF-8 or 1009 for an oversized frame (or dropped it: no
                # Pong in time); the loop ends.
        except Exception:
            log.exception("connection failed; closing it with 1011")
            sink.close(WSCloseCode.INTERNAL_ERROR, "unexpected server error")
        finally:
            await session.end()
            log.debug("connection closed: %s", ws.close_code)

    async def _echo(self, ws: WebSocket, sink: FrameSink | QueuedSink) -> None:
        """Every frame back as it came: for protocol conformance tests only. The
        sink is not used to send here, only to close on shutdown."""
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await ws.send_str(message.data)
                elif message.type is WSMsgType.BINARY:
                    await ws.send_bytes(message.data)
        except ConnectionResetError:
            pass  # closed while echoing: the client left or the server is stopping

    # -------------------------------------------------------------- start and stop

    async def _lifespan(self, application: web.Application) -> AsyncIterator[None]:
        await self.app.start()
        # run_app binds the port as soon as the startup hooks return.
        log.info("listening on %s:%d", HOST, self.settings.port)
        yield
        await self.app.stop()
        log.info("stopped")

    async def _on_shutdown(self, application: web.Application) -> None:
        # run_app has stopped listening (SIGTERM): every WebSocket goes away.
        log.info("shutting down: closing %d connections", len(self._open))
        self.app.accepting = False
        for sink in tuple(self._open):
            sink.close(WSCloseCode.GOING_AWAY, "server shutting down")


def main() -> None:
    settings = load()
    configure(settings.log_level)
    if settings.processes > 1:
        log.info("WEB_CONCURRENCY ignored: aiohttp serves from one process")
    web.run_app(
        Server(settings).application(),
        host=HOST,
        port=settings.port,
        backlog=BACKLOG,
        keepalive_timeout=KEEP_ALIVE,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        # SIGTERM and SIGINT start the graceful shutdown above.
        handle_signals=True,
        # aiohttp rounds WebSocket timers longer than this up to a whole second:
        # a Ping up to 1 s late could pass the router's 55 s for a
        # WS_PING_INTERVAL near it, so timers up to 55 s are kept exact.
        timeout_ceil_threshold=ROUTER_IDLE_SECONDS,
        # Heroku's router logs every request already.
        access_log=None,
        # Logging says when the app listens; no banner on stdout.
        print=None,
    )


if __name__ == "__main__":
    main()
