"""The server, on Django and Channels under uvicorn: the adapter between them and
the app.

Django answers plain HTTP: WhiteNoise serves ``/static/``, and one view hands
every other request to the app (app.py). Channels routes WebSockets to a consumer
that hands each to the app through ``serve_uvicorn``, which the fastapi variant
shares. The app's broker, not a channel layer, carries the fan-out between
processes. Run it as the Procfile does: ``python -m {{ cookiecutter.package_name }}``.
"""

from __future__ import annotations

import logging
import os

# Django finds its settings through this variable: name them before importing it.
os.environ.setdefault(
    "DJANGO_SETTINGS_MODULE",
    "{{ cookiecutter.package_name }}.django_settings",
)

from channels.consumer import AsyncConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import re_path

from . import serve_uvicorn, web
from .app import App
from .serve_uvicorn import ASGISend, Receive, Scope
from .settings import load

log = logging.getLogger(__name__)


# Every process that serves imports this module: the one the Procfile starts and,
# when WEB_CONCURRENCY > 1, each uvicorn worker, a fresh interpreter. Each reads the
# settings (a bad value stops it with one line) and sets up logging before Django
# reads its own settings, which may already log.
SETTINGS = load()
serve_uvicorn.configure_logging(SETTINGS)
django_asgi_app = get_asgi_application()


def _app(scope: Scope) -> App:
    app: App = scope["state"]["app"]  # this process's App, from the lifespan
    return app


class Consumer(AsyncConsumer):  # type: ignore[misc]
    """Every WebSocket: Channels builds one instance per connection. Its own
    dispatch loop is not used: it also listens on a channel layer, which this app
    does not have, at the cost of a task per frame, and first hops to a thread to
    close stale database connections, of which this app has none."""

    async def __call__(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        # send is uvicorn's own, unless a middleware wraps the application.
        await serve_uvicorn.websocket(_app(scope), scope, receive, send, send)


async def answer(request: HttpRequest) -> HttpResponse:
    """Every plain HTTP request outside /static/, GET /ws without an upgrade
    included."""
    app, method = _app(request.scope), request.method or "GET"
    limit = app.body_limit(method, request.path)
    body: bytes | None = b""
    if limit:
        # Django has read the body already (into a file once it is large); no
        # more than limit + 1 bytes of it come into memory here.
        too_long = web.declared_over(request.headers.get("Content-Length"), limit)
        body = None if too_long else request.read(limit + 1)
        if body is not None and len(body) > limit:
            body = None
    scope_request = serve_uvicorn.plain_request(request.scope, method, body)
    found = await app.answer(scope_request)
    response = HttpResponse(
        found.body, status=found.status, content_type=found.content_type
    )
    for name, value in found.headers:
        response[name] = value
    return response


# ROOT_URLCONF names this module. /static/ is WhiteNoise's, before any view.
urlpatterns = [re_path(r"", answer)]


async def lifespan(scope: Scope, receive: Receive, send: ASGISend) -> None:
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


application = ProtocolTypeRouter(
    {
        "lifespan": lifespan,
        "http": django_asgi_app,
        # No AllowedHostsOriginValidator: the app applies its own Origin rule
        # (WS_ALLOWED_ORIGINS) while admitting each handshake.
        "websocket": URLRouter([re_path(r"", Consumer.as_asgi())]),
    }
)


def main() -> None:
    # SETTINGS were read and logging set up above, when this module was imported.
    serve_uvicorn.run("{{ cookiecutter.package_name }}.server:application", SETTINGS)
