"""The plain-HTTP side of the app, decided once for every framework.

A server module describes each plain request as a ``Request`` and copies the
app's ``Response`` into its framework's own, so every variant answers the same
request with the same status, ``Content-Type`` and ``Cache-Control``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .protocol import ProtocolError

STATIC_DIR = Path(__file__).parent / "static"
# By suffix, not from the mimetypes module: its answer for .js depends on the
# Python version and the machine's /etc/mime.types.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
TEXT = "text/plain; charset=utf-8"
# The demo page changes with every deploy and /healthz with every request:
# neither a browser nor a proxy should keep a copy.
NO_STORE = ("Cache-Control", "no-store")
# Where WebSockets are served: a plain request there is told what it speaks
# (RFC 6455, section 4.4).
SPEAKS_WEBSOCKET = (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"))
SAFE_METHODS = ("GET", "HEAD")
# A connection must send its first request head within this, in every variant: a
# client that opens TCP and stalls (slowloris) cannot hold a file descriptor.
# Heroku's router gives up on a request after 30 s (H12) and sends whole heads.
REQUEST_HEAD_TIMEOUT = 10


@dataclass(frozen=True, slots=True)
class Response:
    status: HTTPStatus
    content_type: str
    body: bytes
    # Cache-Control and any other header besides Content-Type and Content-Length.
    headers: tuple[tuple[str, str], ...] = (NO_STORE,)


def text(status: HTTPStatus, *headers: tuple[str, str]) -> Response:
    """A plain answer whose body is the status phrase."""
    body = f"{status.phrase}\n".encode()
    return Response(status, TEXT, body, (NO_STORE, *headers))


NOT_FOUND = text(HTTPStatus.NOT_FOUND)
ONLY_POST = text(HTTPStatus.METHOD_NOT_ALLOWED, ("Allow", "POST"))
TOO_LARGE = text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)


@dataclass(frozen=True, slots=True)
class Request:
    """A plain HTTP request, as every server module describes it to the app."""

    method: str
    path: str
    peer: str | None  # the socket's peer address
    forwarded_for: str | None  # every X-Forwarded-For header, joined by commas
    authorization: str | None = None
    # The body, when the app asked for it (App.body_limit); None: it was longer.
    body: bytes | None = b""


def declared_over(declared: str | None, limit: int) -> bool:
    """Whether a Content-Length header says the body is longer than ``limit``."""
    return declared is not None and declared.strip().isdigit() and int(declared) > limit


async def read_body(
    chunks: AsyncIterable[bytes], declared: str | None, limit: int
) -> bytes | None:
    """A request body from its framework's stream, or None as soon as it is longer
    than ``limit`` (its Content-Length, ``declared``, may say so before a byte)."""
    if declared_over(declared, limit):
        return None
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def joined(values: Iterable[str]) -> str | None:
    """A header's every value as one (for X-Forwarded-For), None when it has none."""
    return ",".join(values) or None


def client_address(
    behind_router: bool, peer: str | None, forwarded_for: str | None
) -> str:
    """The client's address: on a dyno the last X-Forwarded-For entry, the one
    Heroku's router appended (a client can send the header too, but only ahead
    of it); elsewhere the socket's peer."""
    if behind_router and forwarded_for:
        last = forwarded_for.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return peer or "unknown"


def bearer(authorization: str | None) -> str | None:
    """The credential of ``Authorization: Bearer <credential>``."""
    if authorization is None:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


def json_answer(
    status: HTTPStatus, fields: dict[str, Any], *headers: tuple[str, str]
) -> Response:
    body = json.dumps(fields).encode()
    return Response(status, "application/json", body, (NO_STORE, *headers))


def error_answer(
    status: HTTPStatus, error: ProtocolError, *headers: tuple[str, str]
) -> Response:
    """The contract's error object, as a WebSocket client would get it."""
    fields = {"type": "error", "code": error.code, "message": error.message}
    return json_answer(status, fields, *headers)


def origin_allowed(
    allowed: tuple[str, ...] | None, origin: str | None, host: str | None
) -> bool:
    """The contract's Origin rule for a WebSocket handshake."""
    if origin is None:
        return True  # not a browser: Origin is a browser's promise, not a secret
    origin = origin.strip().rstrip("/").lower()
    if allowed is None:  # only the app's own origin
        return host is not None and urlsplit(origin).netloc == host.strip().lower()
    return "*" in allowed or origin in allowed


def health(healthy: bool, broker: str, connections: int) -> Response:
    status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
    fields = {
        "status": "ok" if healthy else "degraded",
        "broker": broker,
        "connections": connections,
    }
    return Response(status, "application/json", json.dumps(fields).encode())


class StaticFiles:
    """The demo page and its assets, read once at start (a few KiB)."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self._files: dict[str, Response] = {}
        if not directory.is_dir():
            return
        for path in sorted(directory.iterdir()):
            content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
            found = Response(HTTPStatus.OK, content_type, path.read_bytes())
            self._files[f"/static/{path.name}"] = found
        if "/static/index.html" in self._files:
            self._files["/"] = self._files.pop("/static/index.html")

    def get(self, path: str) -> Response | None:
        return self._files.get(path)


class HeadTimer:
    """Closes a new connection unless ``stop`` is called, when its first request
    head is complete, within REQUEST_HEAD_TIMEOUT: for the servers that arm no
    such timer of their own (uvicorn and aiohttp wait for their keep-alive)."""

    __slots__ = ("_timer",)

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = loop.call_later(
            REQUEST_HEAD_TIMEOUT, transport.close
        )

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
