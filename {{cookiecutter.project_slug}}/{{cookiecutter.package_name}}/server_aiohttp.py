"""The server, on aiohttp.web: the adapter between it and the app.

aiohttp serves the HTTP requests and the WebSockets; this module turns each into
a call on the app (app.py) and the app's answers back into aiohttp's objects.
Run it as the Procfile does: ``python -m {{ cookiecutter.package_name }}``.

aiohttp has no multi-process server of its own, so this is one process on one
event loop and WEB_CONCURRENCY is not used: scale out with more dynos, which share
rooms through Redis.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import WSMsgType, hdrs, web

from . import web as answers
from .admission import Handshake, wants_websocket
from .app import App
from .logs import configure
from .protocol import GOING_AWAY
from .queued_sink import QueuedSink
from .settings import ROUTER_IDLE_SECONDS, Settings, load
from .sink import CLOSE_TIMEOUT, FrameSink, Sink, announce

log = logging.getLogger(__name__)

# Heroku's router reaches the dyno on IPv4; 0.0.0.0 is every interface.
HOST = "0.0.0.0"
# The router keeps idle connections to a dyno open for 90 s: closing them sooner
# (aiohttp's default is 75 s) races the router's next request on that connection.
KEEP_ALIVE = 95
# After a restart every client reconnects within seconds (their backoff starts at
# 0.5 s): a deeper accept queue than aiohttp's 128, like uvicorn's 2048.
BACKLOG = 2048
# On SIGTERM the server stops listening and the runner runs on_shutdown, which
# tells every WebSocket to go away (each handler then ends within CLOSE_TIMEOUT).
# It waits this long for the handlers, cancels them, then runs App.stop(): well
# inside the 25 s the app has before Heroku's SIGKILL at 30 s.
SHUTDOWN_TIMEOUT = 10
# Every connection's request handler.
HANDLER_OPTIONS: dict[str, Any] = {
    "keepalive_timeout": KEEP_ALIVE,
    # Heroku's router logs every request already.
    "access_log": None,
    # aiohttp rounds WebSocket timers longer than this up to a whole second: a
    # Ping up to 1 s late could pass the router's 55 s for a WS_PING_INTERVAL
    # near it, so timers up to 55 s are kept exact.
    "timeout_ceil_threshold": ROUTER_IDLE_SECONDS,
}


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
        # The attribute aiohttp's pong timer reads, when it is there (aiohttp is
        # pinned: 3.14.5); otherwise aiohttp's own wait, heartbeat / 2, stands.
        if hasattr(self, "_pong_heartbeat"):
            self._pong_heartbeat = settings.ping_timeout

    async def receive_data(self) -> str | bytes | None:
        """The next data frame, or None once the connection has closed: aiohttp
        has then closed it itself, with 1007 for invalid UTF-8 or 1009 for an
        oversized frame, or dropped it (no Pong in time)."""
        message = await self.receive()
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            data: str | bytes = message.data
            return data
        return None

    async def send_data(self, frame: str | bytes) -> None:
        if isinstance(frame, str):
            await self.send_str(frame)
        else:
            await self.send_bytes(frame)


class DirectSink(FrameSink):
    """Uncompressed, aiohttp writes a frame synchronously: its send_str is a
    coroutine only for compression and flow control, which the app does itself
    (WS_MAX_PENDING_BYTES). So frames go straight through aiohttp's frame writer,
    with no writer task per connection, and fan-out is one call per member."""

    __slots__ = ("_ws", "_write")

    def __init__(
        self,
        ws: WebSocket,
        transport: asyncio.Transport,
        write: Callable[[bytes, int, int], None],
    ) -> None:
        super().__init__(transport)
        self._ws = ws
        self._write = write

    def write_frame(self, utf8: bytes) -> None:
        self._write(utf8, WSMsgType.TEXT, 0)

    async def close_frame(self, code: int, reason: str) -> None:
        await self._ws.close(code=code, message=reason.encode())


class WriterSink(QueuedSink):
    """aiohttp's public send_str, through a writer task: with compression, or when
    the frame writer's internals are not there."""

    __slots__ = ("_ws", "_transport")

    def __init__(self, ws: WebSocket, transport: asyncio.Transport) -> None:
        super().__init__()
        self._ws = ws
        self._transport = transport

    async def send_text(self, text: str) -> None:
        await self._ws.send_str(text)

    async def close_frame(self, code: int, reason: str) -> None:
        await self._ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        self._transport.abort()


def outbound(ws: WebSocket, transport: asyncio.Transport, compression: bool) -> Sink:
    """The fast path through aiohttp's frame writer (pinned: 3.14.5) after one
    check that it is there; else the public API."""
    write = getattr(getattr(ws, "_writer", None), "_write_websocket_frame", None)
    if not compression and callable(write):
        announce("aiohttp's frame writer, into the transport")
        return DirectSink(ws, transport, write)
    announce("aiohttp's send_str, through a writer task per connection")
    return WriterSink(ws, transport)


class HeadTimeoutHandler(web.RequestHandler):
    """aiohttp's request handler, closing a connection whose first request head
    is not complete within web.REQUEST_HEAD_TIMEOUT (aiohttp waits its keep-alive)."""

    __slots__ = ("_head", "_head_tail")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head: answers.HeadTimer | None = answers.HeadTimer(transport)
        self._head_tail = b""  # the last bytes seen, for a blank line cut in two

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            seen = self._head_tail + data
            if b"\r\n\r\n" in seen:  # the blank line that ends a request head
                self._head.stop()
                self._head = None
            else:
                self._head_tail = seen[-3:]
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head is not None:
            self._head.stop()
        super().connection_lost(exc)


def _response(answer: answers.Response) -> web.Response:
    headers = {hdrs.CONTENT_TYPE: answer.content_type, **dict(answer.headers)}
    return web.Response(status=answer.status, body=answer.body, headers=headers)


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = App(settings)
        # Every open WebSocket's sink, to close on SIGTERM.
        self._open: set[Sink] = set()

    def application(self) -> web.Application:
        application = web.Application()
        application.cleanup_ctx.append(self._lifespan)
        application.on_shutdown.append(self._on_shutdown)
        # Every request, whatever its path and method: the app decides.
        application.router.add_route("*", "/{path:.*}", self.handle)
        return application

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = request.headers
        upgrade = wants_websocket(headers.get(hdrs.UPGRADE))
        forwarded_for = answers.joined(headers.getall(hdrs.X_FORWARDED_FOR, ()))
        if request.path not in self.app.socket_paths or not upgrade:
            limit = self.app.body_limit(request.method, request.path)
            plain = answers.Request(
                request.method,
                request.path,
                request.remote,
                forwarded_for,
                headers.get(hdrs.AUTHORIZATION),
                await answers.read_body(
                    request.content.iter_any(), headers.get(hdrs.CONTENT_LENGTH), limit
                )
                if limit
                else b"",
            )
            return _response(await self.app.answer(plain))
        admitted = self.app.admit(
            Handshake(
                origin=headers.get(hdrs.ORIGIN),
                host=headers.get(hdrs.HOST),
                version=headers.get(hdrs.SEC_WEBSOCKET_VERSION),
                peer=request.remote,
                forwarded_for=forwarded_for,
            )
        )
        if isinstance(admitted, answers.Response):
            return _response(admitted)
        ws = WebSocket(self.settings)
        with admitted:
            await ws.prepare(request)  # a broken handshake raises HTTPBadRequest
            transport = request.transport
            if transport is None:
                return ws  # the client left during the handshake
            sink = outbound(ws, transport, self.settings.compression)
            self._open.add(sink)  # also the echo's, to close it on SIGTERM
            if not self.app.accepting:  # SIGTERM came during the handshake
                sink.close(GOING_AWAY, "server shutting down")
            try:
                if request.path == self.settings.echo_path:
                    await self.app.echo(ws.receive_data, ws.send_data)
                else:
                    await self.app.converse(sink, ws.receive_data)
            finally:
                self._open.discard(sink)
                await sink.wait_closed()
        return ws

    async def _lifespan(self, application: web.Application) -> AsyncIterator[None]:
        await self.app.start()
        yield
        await self.app.stop()

    async def _on_shutdown(self, application: web.Application) -> None:
        # The listener is closed (SIGTERM): every WebSocket goes away.
        log.info("shutting down: closing %d connections", len(self._open))
        self.app.shutting_down()
        for sink in tuple(self._open):
            sink.close(GOING_AWAY, "server shutting down")


async def serve(settings: Settings) -> None:
    """aiohttp's AppRunner with a listener of its own, whose connections get the
    HeadTimeoutHandler; SIGTERM and SIGINT start the graceful shutdown."""
    server = Server(settings)
    runner = web.AppRunner(
        server.application(), shutdown_timeout=SHUTDOWN_TIMEOUT, **HANDLER_OPTIONS
    )
    await runner.setup()  # runs the startup hooks: the app starts
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    manager = runner.server
    assert manager is not None  # setup made it
    listener = await loop.create_server(
        lambda: HeadTimeoutHandler(manager, loop=loop, **HANDLER_OPTIONS),
        HOST,
        settings.port,
        backlog=BACKLOG,
        reuse_address=True,
    )
    log.info("listening on %s:%d", HOST, settings.port)
    try:
        await stopping.wait()
    finally:
        listener.close()  # no new connections; the open ones are closed below
        await runner.cleanup()  # on_shutdown, the handlers, then App.stop()
        log.info("stopped")


def main() -> None:
    settings = load()
    configure(settings.log_level)
    if settings.processes > 1:
        log.info("WEB_CONCURRENCY ignored: aiohttp serves from one process")
    asyncio.run(serve(settings))
