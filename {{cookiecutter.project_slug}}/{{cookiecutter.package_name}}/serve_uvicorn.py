"""ASGI on uvicorn with Heroku's numbers: what the fastapi and django variants share.

``websocket`` serves one ASGI WebSocket, from its connect message to its end, on
the app (app.py): both variants route their WebSocket paths to it. ``run`` starts
uvicorn with every option set from the settings, rather than on the Procfile
line, so each carries its reason and a bad setting stops the app before it binds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.protocol import Protocol, State

from . import web
from .admission import Handshake
from .app import App
from .logs import configure
from .queued_sink import QueuedSink
from .settings import Settings
from .sink import FrameSink, Sink, announce

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
ASGISend = Callable[[Message], Awaitable[None]]

# Heroku's router reaches the dyno on IPv4; 0.0.0.0 is every interface (uvicorn's
# default, 127.0.0.1, would fail the boot with R10).
HOST = "0.0.0.0"
# The router keeps idle connections to a dyno open for 90 s: closing them sooner
# (uvicorn's default is 5 s) races the router's next request on that connection.
KEEP_ALIVE = 95
# On SIGTERM uvicorn closes every WebSocket with 1012 and waits this long for the
# handlers; well inside the 30 s before Heroku's SIGKILL.
GRACEFUL_SHUTDOWN = 20
# The methods of uvicorn's (pinned: 0.54.0) httptools protocol that the timer hooks.
HEAD_HOOKS = ("connection_made", "on_headers_complete", "connection_lost")
# uvicorn 0.54 logs as errors what is none: a denial response (403, 503) ends the
# handshake "without completing" it (its pull request #3138), and a client's
# invalid UTF-8 comes with a traceback though it is answered with 1007. Each
# WebSocket also gets two INFO lines of its own; the app logs its events itself.
QUIET = {
    "ASGI callable returned without completing handshake.",
    "Invalid UTF-8 sequence received from client.",
    '%s - "WebSocket %s" [accepted]',
    '%s - "WebSocket %s" %d',
    '%s - "WebSocket %s" 403',
    "connection open",
    "connection closed",
}


# ------------------------------------------------------------------- WebSockets


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def forwarded_for(scope: Scope) -> str | None:
    """Every X-Forwarded-For header of the request, joined."""
    values = (
        v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"
    )
    return web.joined(values)


def peer(scope: Scope) -> str | None:
    """The socket's peer address (uvicorn's, not one from X-Forwarded-For: run()
    turns uvicorn's proxy headers off)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def plain_request(scope: Scope, method: str, body: bytes | None) -> web.Request:
    """The app's view of an ASGI HTTP request (or of a handshake answered plainly)."""
    return web.Request(
        method,
        scope["path"],
        peer(scope),
        forwarded_for(scope),
        header(scope, b"authorization"),
        body,
    )


async def deny(send: ASGISend, answer: web.Response) -> None:
    """Answer a handshake with plain HTTP instead of upgrading: ASGI's WebSocket
    Denial Response, which uvicorn implements."""
    headers = [(b"content-type", answer.content_type.encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in answer.headers]
    start = {"type": "websocket.http.response.start", "status": answer.status}
    await send({**start, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": answer.body})


async def websocket(
    app: App, scope: Scope, receive: Receive, send: ASGISend, server_send: object
) -> None:
    """One WebSocket scope. ``send`` is the one the framework hands its endpoint;
    ``server_send`` is uvicorn's own when the framework has it, the fast path's
    way to the connection's transport (see ``outbound``)."""
    await receive()  # websocket.connect
    path = scope["path"]
    if path not in app.socket_paths:  # the plain answer, as a GET would get
        await deny(send, await app.answer(plain_request(scope, "GET", b"")))
        return
    admitted = app.admit(
        Handshake(
            origin=header(scope, b"origin"),
            host=header(scope, b"host"),
            # uvicorn's handshake has refused every other version already.
            version=header(scope, b"sec-websocket-version"),
            peer=peer(scope),
            forwarded_for=forwarded_for(scope),
        )
    )
    if isinstance(admitted, web.Response):
        await deny(send, admitted)
        return

    async def receive_data() -> str | bytes | None:
        # Also when uvicorn closed the connection itself: invalid UTF-8 (1007), a
        # frame over WS_MAX_MESSAGE_BYTES (1009), no Pong, SIGTERM (1012).
        message = await receive()
        if message["type"] != "websocket.receive":
            return None
        data: str | bytes | None = message.get("text")
        return message.get("bytes") if data is None else data

    async def send_data(frame: str | bytes) -> None:
        kind = "text" if isinstance(frame, str) else "bytes"
        await send({"type": "websocket.send", kind: frame})

    with admitted:
        await send({"type": "websocket.accept"})
        if path == app.settings.echo_path:
            await app.echo(receive_data, send_data)
        else:
            await app.converse(outbound(send, server_send), receive_data)


class DirectSink(FrameSink):
    """Frames written synchronously through uvicorn's websockets-sansio connection
    (uvicorn is pinned: 0.54.0), whose ``conn`` frames them (compressed when
    negotiated) and whose transport carries them, as uvicorn's own send does once
    it is past its flow control (which WS_MAX_PENDING_BYTES replaces): no writer
    task per connection, and fan-out is one call per member."""

    __slots__ = ("_conn", "_send")

    def __init__(
        self, conn: Protocol, transport: asyncio.WriteTransport, send: ASGISend
    ) -> None:
        super().__init__(transport)
        self._conn = conn
        self._send = send

    def write_frame(self, utf8: bytes) -> None:
        if self._conn.state is State.OPEN:  # not once a close frame went either way
            self._conn.send_text(utf8)
            self._transport.write(b"".join(self._conn.data_to_send()))

    async def close_frame(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


class SendSink(QueuedSink):
    """The public path: ASGI's send, through a writer task. Used when the send
    the app gets is not uvicorn's own, as when a middleware wraps it (Sentry and
    OpenTelemetry do). ASGI gives no way to drop the TCP connection: a client that
    reads nothing is dropped by uvicorn's own Ping timeout."""

    __slots__ = ("_send",)

    def __init__(self, send: ASGISend) -> None:
        super().__init__()
        self._send = send

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close_frame(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def abort(self) -> None:
        self._writer.cancel()


def outbound(send: ASGISend, server_send: object) -> Sink:
    """The fast path when ``server_send`` is a method of uvicorn's websockets-sansio
    protocol, checked once per connection; else ASGI's public send."""
    protocol = getattr(server_send, "__self__", None)
    conn = getattr(protocol, "conn", None)
    transport = getattr(protocol, "transport", None)
    # uvloop's transports do not subclass asyncio's: what the sink calls is checked.
    writes = callable(getattr(transport, "get_write_buffer_size", None))
    if isinstance(conn, Protocol) and transport is not None and writes:
        announce("uvicorn's websockets-sansio connection, into the transport")
        return DirectSink(conn, transport, send)
    announce("ASGI send, through a writer task per connection")
    return SendSink(send)


# ------------------------------------------------------------------------ uvicorn


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose first request head
    is not complete within web.REQUEST_HEAD_TIMEOUT."""

    _head: web.HeadTimer | None = None

    # Narrower than asyncio's BaseTransport, as uvicorn's own signature is.
    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._head = web.HeadTimer(transport)

    def on_headers_complete(self) -> None:
        if self._head is not None:
            self._head.stop()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head is not None:
            self._head.stop()
        super().connection_lost(exc)


def http_protocol() -> type[asyncio.Protocol] | str:
    """HeadTimeoutProtocol, after one check that the methods it extends are still
    uvicorn's; else uvicorn's own choice, and a warning."""
    if all(hasattr(HttpToolsProtocol, name) for name in HEAD_HOOKS):
        return HeadTimeoutProtocol
    log.warning("no request head timeout: uvicorn's httptools protocol changed")
    return "auto"


def configure_logging(settings: Settings) -> None:
    """The app's logging, in every process: uvicorn's worker processes import the
    server module afresh and never run its main()."""
    configure(settings.log_level)
    logging.getLogger("uvicorn.error").addFilter(lambda record: record.msg not in QUIET)


def run(app: str, settings: Settings) -> None:
    """Serve ``app`` (an import string, so that several processes can load it)."""
    processes = settings.processes
    if settings.redis_url is None and processes > 1:
        log.warning(
            "WEB_CONCURRENCY=%d ignored: the memory broker is one process; "
            "set REDIS_URL to run several",
            processes,
        )
        processes = 1
    # After its graceful shutdown uvicorn raises SIGTERM again for the handler it
    # replaced: exit 0 there, as an app that stopped cleanly should, instead of
    # dying by the signal (status 143).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(
        app,
        host=HOST,
        port=settings.port,
        workers=processes,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        # uvicorn would take the client address from X-Forwarded-For on any
        # connection from 127.0.0.1; the app has its own rule (the last entry,
        # on a dyno only: web.client_address).
        proxy_headers=False,
        http=http_protocol(),
        # The websockets-based implementation: it supports the denial responses
        # (403, 503) that the handshake rules need.
        ws="websockets-sansio",
        # Pings keep Heroku's router from cutting an idle connection (55 s) and
        # find dead peers.
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ws_max_size=settings.max_message_bytes,
        # Off by default: about 14 KiB per idle connection instead of 64 KiB.
        ws_per_message_deflate=settings.compression,
        # Heroku's router logs every request already.
        access_log=False,
        # The app's own logging setup (configure_logging) stays in force.
        log_config=None,
        log_level=settings.log_level.lower(),
    )
