"""The server, on FastAPI and uvicorn: the only module that knows the framework.

It adapts FastAPI's WebSockets to the app's path, socket -> session -> hub ->
broker, and back through each connection's ``QueuedSink``, whose one writer task
sends in order so that fan-out never waits for a client. uvicorn does the rest
with Heroku's numbers (``serve_uvicorn``): the bind, keep-alive Pings, the frame
size limit, compression, worker processes and the 1012 close on SIGTERM. Run it as
the Procfile does: ``python -m {{ cookiecutter.package_name }}.server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, Response
from starlette.websockets import WebSocketDisconnect, WebSocketState

from . import serve_uvicorn
from .app import App
from .logs import configure
from .session import QueuedSink
from .settings import load
from .web import NOT_FOUND

log = logging.getLogger(__name__)

# Read once per process, when the module is imported and before uvicorn binds: a bad
# value stops the app here with one line. Worker processes import it afresh.
settings = load()

# A peer that does not take our close frame within 5 s (it reads nothing) is let
# go, so a slow consumer cannot hold its connection's resources.
CLOSE_TIMEOUT = 5
UNSUPPORTED_DATA = 1003
INTERNAL_ERROR = 1011
NO_STORE = {"Cache-Control": "no-store"}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, App]]:
    # Worker processes (WEB_CONCURRENCY > 1) start afresh, without main().
    configure(settings.log_level)
    core = App(settings)  # the framework-independent app: rooms, broker, counters
    await core.start()
    try:
        # Every request and WebSocket sees it as ``.state.core``.
        yield {"core": core}
    finally:
        # uvicorn has closed every WebSocket (1012) and waited for the handlers.
        await core.stop()
        log.info("stopped")


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)


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
    # Any other path, and GET /ws without an upgrade: the plain 404 of every variant.
    return _response(*NOT_FOUND)


# ------------------------------------------------------------------- WebSockets


Conversation = Callable[[WebSocket, App], Awaitable[None]]


async def _serve(websocket: WebSocket, converse: Conversation) -> None:
    """Admit the handshake or refuse it before any upgrade, then converse."""
    core: App = websocket.state.core
    refusal = core.admit(websocket.headers.get("origin"), websocket.headers.get("host"))
    if refusal is not None:
        # An HTTP answer instead of the upgrade (the ASGI denial-response extension).
        await websocket.send_denial_response(
            PlainTextResponse(f"{refusal.phrase}\n", refusal, headers=NO_STORE)
        )
        return
    try:
        await websocket.accept()
        await converse(websocket, core)
    finally:
        core.release()  # also when the handshake did not complete


async def _close(
    websocket: WebSocket, code: int, reason: str, cutoff: asyncio.Timeout
) -> None:
    """Send the close frame; ``cutoff`` ends the connection's handler when the peer
    does not take it in time, since uvicorn's send waits for room in the socket's
    buffer, which a client that reads nothing never makes."""
    if websocket.application_state is not WebSocketState.CONNECTED:
        return  # closed already
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await websocket.close(code, reason)
    except TimeoutError:
        log.info("close %d not taken within %d s: dropping the client", code, CLOSE_TIMEOUT)
        cutoff.reschedule(0)  # the past: the receive loop stops at once
    except WebSocketDisconnect:
        pass  # gone already


async def _write(sink: QueuedSink) -> None:
    """The connection's writer task. A send fails only once the connection is
    closing or gone, which the receive loop also learns, and ends the session."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await sink.drain()


async def _converse(websocket: WebSocket, core: App) -> None:
    """The /ws protocol: each text frame to the session in turn; replies and room
    messages wait in a QueuedSink, drained by one writer task (never a task per
    message), so a slow client holds up neither the others nor the broker."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(None) as cutoff:
            sink = QueuedSink(
                websocket.send_text,
                lambda code, reason: _close(websocket, code, reason, cutoff),
            )
            session = core.session(sink)
            writer = asyncio.create_task(_write(sink))
            try:
                while True:
                    message = await websocket.receive()
                    text = message.get("text")
                    if text is not None:
                        await session.handle(text)
                    elif message["type"] == "websocket.disconnect":
                        # Also after uvicorn closed it: invalid UTF-8 (1007), a frame
                        # over WS_MAX_MESSAGE_BYTES (1009), no Pong, or SIGTERM (1012).
                        break
                    else:
                        writer.cancel()
                        await _close(
                            websocket, UNSUPPORTED_DATA, "binary frames", cutoff
                        )
                        break
            except Exception:
                log.exception("connection failed; closing it with 1011")
                writer.cancel()
                await _close(websocket, INTERNAL_ERROR, "unexpected error", cutoff)
            finally:
                writer.cancel()
                await session.end()


async def _echo(websocket: WebSocket, core: App) -> None:
    """Every frame back as it came: for protocol conformance tests only."""
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
async def no_websocket_here(websocket: WebSocket) -> None:
    # A handshake on any other path: the plain 404, not Starlette's 403.
    await websocket.send_denial_response(_response(*NOT_FOUND))


def main() -> None:
    configure(settings.log_level)
    serve_uvicorn.run("{{ cookiecutter.package_name }}.server:app", settings)


if __name__ == "__main__":
    main()
