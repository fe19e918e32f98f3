"""The requests websockets' own HTTP parser refuses: any method but GET and HEAD.

websockets reads a request head for the handshake and health checks, and drops
any request with a body (POST /token, POST /api/publish) without an answer. So
``Connection``, websockets' connection with one check on its first bytes, hands
such a request to ``PlainRequest``, which reads it with h11 (a well-kept HTTP/1.1
parser, uvicorn's) and answers it from the app, once, then closes the connection
as websockets does after every plain answer. websockets' handshake timeout
(open_timeout) still bounds the whole request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from http import HTTPStatus
from urllib.parse import urlsplit

import h11
from websockets.asyncio.server import ServerConnection

from . import web
from .app import App

log = logging.getLogger(__name__)

# The methods websockets serves itself; a request line starts "GET " or "HEAD ".
WEBSOCKETS_METHODS = (b"GET ", b"HEAD ")
# The longest standard method and its space ("OPTIONS "): enough to decide.
METHOD_BYTES = 8
# Request heads larger than websockets' own limits (8 KiB lines, 128 headers).
MAX_HEAD_BYTES = 16384


def connection_class(app: App) -> type[Connection]:
    """websockets' connection class for serve(create_connection=...), whose plain
    requests ``app`` answers."""

    class AppConnection(Connection):
        pass

    AppConnection.app = app
    return AppConnection


class Connection(ServerConnection):
    """websockets' connection, handing a request it would refuse to PlainRequest."""

    app: App  # set by connection_class
    # Class defaults, so a WebSocket pays one attribute: _decided.
    _decided = False
    _start = b""
    _plain: PlainRequest | None = None

    def data_received(self, data: bytes) -> None:
        if not self._decided:
            data = self._start + data
            if b" " not in data[:METHOD_BYTES] and len(data) < METHOD_BYTES:
                self._start = data  # a client that sends a byte at a time
                return
            self._decided = True
            if not data.startswith(WEBSOCKETS_METHODS):
                self._plain = PlainRequest(self, self.app)
        if self._plain is not None:
            self._plain.receive(data)
        else:
            super().data_received(data)

    # asyncio's signature: True keeps the transport open after the client's EOF
    # (websockets' own never does, so it says None).
    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._plain is not None:
            return True  # the client may half-close after its body: answer it
        super().eof_received()
        return None


class PlainRequest:
    """One request, read with h11, answered by the app, then the connection
    closes."""

    def __init__(self, ws: ServerConnection, app: App) -> None:
        self._transport = ws.transport
        self._peer = ws.remote_address
        self._app = app
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._request: h11.Request | None = None
        self._body: bytearray | None = bytearray()  # None: over the limit
        self._room = 0  # body bytes the app reads
        self._task: asyncio.Task[None] | None = None

    def receive(self, data: bytes) -> None:
        if self._task is not None:
            return  # answering already: anything more is ignored
        self._h11.receive_data(data)
        try:
            while (event := self._h11.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.Request):
                    self._request = event
                    method, path = event.method.decode(), _path(event.target)
                    self._room = self._app.body_limit(method, path)
                elif isinstance(event, h11.Data):
                    self._keep(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._task = asyncio.create_task(self._respond())
                    return
                else:  # ConnectionClosed: the client left
                    self._transport.close()
                    return
        except h11.RemoteProtocolError as error:
            self._send(web.text(HTTPStatus(error.error_status_hint)))

    def _keep(self, data: bytes | bytearray) -> None:
        if self._body is None:
            return  # over the limit: read to the end, kept nowhere
        self._body += data
        if len(self._body) > self._room:
            self._body = None

    async def _respond(self) -> None:
        request = self._request
        assert request is not None  # h11 gives a Request before EndOfMessage
        headers = request.headers
        try:
            answer = await self._app.answer(
                web.Request(
                    method=request.method.decode(),
                    path=_path(request.target),
                    peer=self._peer[0] if self._peer else None,
                    forwarded_for=web.joined(_all(headers, b"x-forwarded-for")),
                    authorization=web.joined(_all(headers, b"authorization")),
                    body=None if self._body is None else bytes(self._body),
                )
            )
        except Exception:
            log.exception("answering a request failed")
            answer = web.text(HTTPStatus.INTERNAL_SERVER_ERROR)
        self._send(answer)

    def _send(self, answer: web.Response) -> None:
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self._transport.close()
            return
        headers = [
            ("Content-Type", answer.content_type),
            ("Content-Length", str(len(answer.body))),
            *answer.headers,
            ("Connection", "close"),  # one request per connection, as websockets
        ]
        status = answer.status
        data = self._h11.send(
            h11.Response(
                status_code=status.value, headers=headers, reason=status.phrase
            )
        )
        data += self._h11.send(h11.Data(data=answer.body)) or b""
        data += self._h11.send(h11.EndOfMessage()) or b""
        self._transport.write(data)
        self._transport.close()


def _path(target: bytes) -> str:
    return urlsplit(target.decode("latin-1")).path


def _all(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in headers if key == name]
