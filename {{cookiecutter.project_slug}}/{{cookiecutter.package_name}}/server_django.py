"""The server, on Django and Channels under uvicorn: the only module that knows the
framework.

Django answers plain HTTP: ``/healthz``, the demo page, and ``/static/`` through
WhiteNoise. A Channels consumer adapts each WebSocket to the app's path, socket ->
session -> hub -> broker, and back through the connection's sink. The app's broker,
not a channel layer, carries the fan-out between processes. Run it as the Procfile
does: ``python -m {{ cookiecutter.package_name }}.server``.
"""

from __future__ import annotations

import logging
import os
from http import HTTPStatus

# Django finds its settings through this variable: name them before importing it.
os.environ.setdefault(
    "DJANGO_SETTINGS_MODULE",
    "{{ cookiecutter.package_name }}.django_settings",
)

from channels.consumer import AsyncConsumer, get_handler_name
from channels.exceptions import StopConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path, re_path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import serve_uvicorn
from .app import App
from .protocol import INTERNAL_ERROR, UNSUPPORTED_DATA
from .settings import load
from .sink import FrameSink
from .web import NOT_FOUND

# Named for the module, also when run as __main__ by the Procfile.
log = logging.getLogger("{{ cookiecutter.package_name }}.server")


# Every process that serves imports this module: the one the Procfile starts and,
# when WEB_CONCURRENCY > 1, each uvicorn worker, a fresh interpreter. Each reads the
# settings (a bad value stops it with one line) and sets up logging before Django
# reads its own settings, which may already log.
SETTINGS = load()
serve_uvicorn.configure_logging(SETTINGS)
django_asgi_app = get_asgi_application()


# ----------------------------------------------------------------------- WebSocket


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def deny(send, status: HTTPStatus, content_type: str, body: bytes) -> None:
    """Answer a WebSocket handshake with plain HTTP instead of upgrading: ASGI's
    WebSocket Denial Response, which uvicorn implements."""
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode())],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


async def not_found(scope: dict, receive, send) -> None:
    """A WebSocket handshake on a path that has no endpoint."""
    await receive()  # websocket.connect
    await deny(send, *NOT_FOUND)


class AdmittedConsumer(AsyncConsumer):
    """A WebSocket endpoint whose handshakes the App admits first (Origin rule,
    connection limit, shutdown). Channels builds one instance per connection and
    hands it the connection's events one at a time, in order."""

    app: App
    admitted = False  # holds one of the App's connection slots

    async def __call__(self, scope, receive, send) -> None:
        # Channels' own loop also listens on a channel layer, which this app does
        # not use (its broker carries the fan-out), at the cost of a task per frame.
        self.scope, self.base_send = scope, send
        self.app = scope["state"]["app"]  # this process's App, from the lifespan
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # Whatever ended the connection, also a handshake that never completed.
            if self.admitted:
                try:
                    await self.closed()
                finally:
                    self.app.release()

    async def dispatch(self, message: dict) -> None:
        # Channels' own dispatch first hops to a thread to close stale database
        # connections, for every frame; this app has no database.
        await getattr(self, get_handler_name(message))(message)

    async def websocket_connect(self, message: dict) -> None:
        refusal = self.app.admit(
            _header(self.scope, b"origin"), _header(self.scope, b"host")
        )
        if refusal is not None:
            body = f"{refusal.phrase}\n".encode()
            await deny(self.base_send, refusal, "text/plain; charset=utf-8", body)
            return
        self.admitted = True
        await self.send({"type": "websocket.accept"})
        await self.opened()

    async def websocket_disconnect(self, message: dict) -> None:
        raise StopConsumer

    async def opened(self) -> None:
        """The handshake is done; override to set up the connection."""

    async def closed(self) -> None:
        """The connection is gone; override to clean up."""


class RoomsConsumer(AdmittedConsumer):
    """``/ws``: each text frame is a request for the session, answered before the
    next one is read; replies and room messages leave through the sink, in order."""

    sink: FrameSink | None = None

    async def opened(self) -> None:
        # base_send is uvicorn's ASGI send: frames go straight to the transport.
        self.sink = serve_uvicorn.frame_sink(self.base_send, self.send_close)
        self.session = self.app.session(self.sink)
        log.debug("connection opened from %s", self.scope.get("client"))

    async def websocket_receive(self, message: dict) -> None:
        if self.sink.closing:
            return  # the close frame is on its way: nothing more is done
        text = message.get("text")
        if text is None:
            self.sink.close(UNSUPPORTED_DATA, "binary frames are not accepted")
            return
        try:
            await self.session.handle(text)
        except Exception:
            log.exception("connection failed; closing it with 1011")
            self.sink.close(INTERNAL_ERROR, "unexpected server error")

    async def closed(self) -> None:
        if self.sink is None:
            return  # the handshake never completed
        await self.session.end()
        await self.sink.wait_closed()
        log.debug("connection closed from %s", self.scope.get("client"))

    async def send_close(self, code: int, reason: str) -> None:
        close = {"type": "websocket.close", "code": code, "reason": reason}
        await self.base_send(close)


class EchoConsumer(AdmittedConsumer):
    """WS_ECHO_PATH: every frame back as it came, for protocol conformance tests."""

    async def websocket_receive(self, message: dict) -> None:
        text, data = message.get("text"), message.get("bytes")
        await self.send({"type": "websocket.send", "text": text, "bytes": data})


# ---------------------------------------------------------------------- plain HTTP


def _app(request: HttpRequest) -> App:
    return request.scope["state"]["app"]


@require_safe
async def index(request: HttpRequest) -> HttpResponse:
    """The demo page, when it was generated."""
    found = _app(request).static.get("/")
    if found is None:
        raise Http404
    content_type, body = found
    return HttpResponse(body, content_type=content_type)


@never_cache
@require_safe
async def healthz(request: HttpRequest) -> HttpResponse:
    status, body = _app(request).health()
    return HttpResponse(body, status=status, content_type="application/json")


# ROOT_URLCONF names this module. /static/ is WhiteNoise's, before any view.
urlpatterns = [path("", index), path("healthz", healthz)]


# ------------------------------------------------------------------------ lifespan


async def lifespan(scope: dict, receive, send) -> None:
    """ASGI lifespan, which Django's handler does not speak: this process's App
    starts before the first request, and stops once uvicorn has closed every
    WebSocket (with 1012) at shutdown."""
    await receive()  # lifespan.startup
    app = App(SETTINGS)
    try:
        await app.start()
    except Exception as error:
        log.exception("the app failed to start")
        await send({"type": "lifespan.startup.failed", "message": str(error)})
        return
    scope["state"]["app"] = app
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    await app.stop()
    await send({"type": "lifespan.shutdown.complete"})


websocket_routes = [path("ws", RoomsConsumer.as_asgi())]
if SETTINGS.echo_path:
    echo = SETTINGS.echo_path.lstrip("/")
    websocket_routes.append(path(echo, EchoConsumer.as_asgi()))
websocket_routes.append(re_path("", not_found))

application = ProtocolTypeRouter(
    {
        "lifespan": lifespan,
        "http": django_asgi_app,
        # No AllowedHostsOriginValidator: the consumers apply the app's own Origin
        # rule (WS_ALLOWED_ORIGINS) while admitting each handshake.
        "websocket": URLRouter(websocket_routes),
    }
)


def main() -> None:
    # SETTINGS were read and logging set up above, when this module was imported.
    serve_uvicorn.run("{{ cookiecutter.package_name }}.server:application", SETTINGS)


if __name__ == "__main__":
    main()
