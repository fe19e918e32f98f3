"""The server, on FastAPI and uvicorn: the adapter between them and the app.

FastAPI routes every request: plain HTTP to one catch-all route, WebSockets to
``/ws`` (and the echo path), each handed to the app (app.py) through
``serve_uvicorn``, which the django variant shares. uvicorn does the rest with
Heroku's numbers: the bind, keep-alive Pings, the frame size limit, compression,
worker processes and the 1012 close on SIGTERM. Run it as the Procfile does:
``python -m {{ cookiecutter.package_name }}``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import serve_uvicorn, web
from .app import App
from .settings import load

log = logging.getLogger(__name__)

# Read once per process, on import and so before uvicorn binds: a bad value stops
# the app here with one line. Worker processes import this module afresh.
settings = load()
serve_uvicorn.configure_logging(settings)

# The scope key under which ServerSend keeps uvicorn's ASGI send.
SERVER_SEND = "{{ cookiecutter.package_name }}.server_send"
# Every method a client may use: the app answers each (405 where it must).
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


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
    """ASGI middleware that keeps the server's own ``send`` in a WebSocket's scope,
    for the fast path of ``serve_uvicorn.outbound``: FastAPI wraps the one its
    endpoints see."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.inner(scope, receive, send)


app.add_middleware(ServerSend)


@app.api_route("/{path:path}", methods=METHODS)
async def http(request: Request) -> Response:
    """Every plain HTTP request, GET /ws without an upgrade included."""
    core: App = request.state.core
    limit = core.body_limit(request.method, request.scope["path"])
    body = (
        await web.read_body(
            request.stream(), request.headers.get("content-length"), limit
        )
        if limit
        else b""
    )
    answer = await core.answer(
        serve_uvicorn.plain_request(request.scope, request.method, body)
    )
    return Response(
        answer.body,
        answer.status,
        headers=dict(answer.headers),
        media_type=answer.content_type,
    )


@app.websocket("/{path:path}")
async def ws(websocket: WebSocket) -> None:
    """Every WebSocket handshake: /ws, the echo path, and a 404 elsewhere."""
    core: App = websocket.state.core
    await serve_uvicorn.websocket(
        core,
        websocket.scope,
        websocket.receive,
        websocket.send,
        websocket.scope.get(SERVER_SEND),
    )


def main() -> None:
    serve_uvicorn.run("{{ cookiecutter.package_name }}.server:app", settings)
