"""The server, on FastAPI and uvicorn: the only module that knows the framework.

It adapts FastAPI's WebSockets to the app's path, socket -> session -> hub ->
broker, and back through each connection's sink, which writes frames straight to
the transport so that fan-out never waits for a client. uvicorn does the rest with
Heroku's numbers (``serve_uvicorn``): the bind, keep-alive Pings, the frame size
limit, compression, worker processes and the 1012 close on SIGTERM. Run it as the
Procfile does: ``python -m {{ cookiecutter.package_name }}.server``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from . import serve_uvicorn
from .app import App
from .protocol import INTERNAL_ERROR, UNSUPPORTED_DATA
from .session import Session
from .settings import load
from .sink import FrameSink
from .web import NOT_FOUND

log = logging.getLogger(__name__)

# Read once per process, on import and so before uvicorn binds: a bad value stops
# the app here with one line. Worker processes import this module afresh.
settings = load()
serve_uvicorn.configure_logging(settings)

NO_STORE = {"Cache-Control": "no-store"}
# What a send raises once the client is gone (Starlette), or once uvicorn closed
# the connection itself (invalid UTF-8, a frame too big, no Pong): the receive loop
# hears of it too, through a disconnect message.
CLOSED = (WebSocketDisconnect, RuntimeError)
# The scope key under which ServerSend keeps uvicorn's ASGI send.
SERVER_SEND = "{{ cookiecutter.package_name }}.server_send"


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, App]]:
    core = App(settings)  # the framework-independent app: rooms, broker, counters
    await core.start()
    try:
        yield {"core": core}  # every request and WebSocket sees it as .state.core
    finally:
        # uvicorn has closed every WebSocket (1012) and waited for their handlers.
        await core.stop()
        log.info("stopped")


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)


class ServerSend:
    """ASGI middleware that keeps the server's own ``send`` in a WebSocket's scope
    (FastAPI wraps the one a route sees), for ``serve_uvicorn.frame_sink``."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.inner(scope, receive, send)


app.add_middleware(ServerSend)


def _response(status: HTTPStatus, content_type: str, body: bytes) -> Response:
    return Response(body, status, headers=NO_STORE, media_type=content_type)


@app.get("/healthz")
async def healthz(request: Request) -> Response:
    status, body = request.state.core.health()
    return _response(status, "application/json", body)


@app.get("/")
@app.get("/static/{name}")
async def static(request: Request) -> Response:
    found = request.state.core.static.get(request.url.path)
    if found is None:
        return _response(*NOT_FOUND)
    return _response(HTTPStatus.OK, *found)


@app.exception_handler(HTTPStatus.NOT_FOUND)
async def not_found(request: Request, error: Exception) -> Response:
    # Any other path, GET /ws without an upgrade too: every variant's plain 404.
    return _response(*NOT_FOUND)


# ------------------------------------------------------------------- WebSockets


async def _serve(
    websocket: WebSocket, converse: Callable[[WebSocket, App], Awaitable[None]]
) -> None:
    """Admit the handshake or refuse it before any upgrade, then converse."""
    core: App = websocket.state.core
    refusal = core.admit(websocket.headers.get("origin"), websocket.headers.get("host"))
    if refusal is not None:
        # An HTTP answer instead of the upgrade (the ASGI denial response).
        await websocket.send_denial_response(
            PlainTextResponse(f"{refusal.phrase}\n", refusal, headers=NO_STORE)
        )
        return
    try:
        await websocket.accept()
        await converse(websocket, core)
    finally:
        core.release()  # also when the handshake did not complete


async def _converse(websocket: WebSocket, core: App) -> None:
    """The /ws protocol. This task feeds each text frame to the session in turn;
    replies and room messages go straight to the connection's transport, so
    fan-out never waits for this client."""
    sink = serve_uvicorn.frame_sink(websocket.scope[SERVER_SEND], websocket.close)
    session = core.session(sink)
    try:
        await _receive(websocket, session, sink)
    finally:
        await session.end()
        await sink.wait_closed()


async def _receive(websocket: WebSocket, session: Session, sink: FrameSink) -> None:
    """Feed the session until the client leaves or the connection is closed."""
    try:
        while not sink.closing:
            message = await websocket.receive()
            text = message.get("text")
            if text is not None:
                await session.handle(text)
            elif message["type"] == "websocket.disconnect":
                # Also when uvicorn closed the connection: invalid UTF-8 (1007), a
                # frame over WS_MAX_MESSAGE_BYTES (1009), no Pong, SIGTERM (1012).
                return
            else:
                sink.close(UNSUPPORTED_DATA, "binary frames are not accepted")
    except Exception:
        log.exception("connection failed; closing it with 1011")
        sink.close(INTERNAL_ERROR, "unexpected server error")


async def _echo(websocket: WebSocket, core: App) -> None:
    """Every frame back as it came: for protocol conformance tests only."""
    with contextlib.suppress(*CLOSED):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])


@app.websocket("/ws")
async def ws(websocket: WebSocket) -> None:
    await _serve(websocket, _converse)


if settings.echo_path:

    @app.websocket(settings.echo_path)
    async def echo(websocket: WebSocket) -> None:
        await _serve(websocket, _echo)


@app.websocket("/{path:path}")
async def no_websocket(websocket: WebSocket) -> None:
    # A handshake on any other path: the plain 404 (Starlette would answer 403).
    await websocket.send_denial_response(_response(*NOT_FOUND))


def main() -> None:
    serve_uvicorn.run("{{ cookiecutter.package_name }}.server:app", settings)


if __name__ == "__main__":
    main()
