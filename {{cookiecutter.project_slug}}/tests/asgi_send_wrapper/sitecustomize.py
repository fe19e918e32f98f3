"""Loaded by every app process when TEST_WRAP_ASGI_SEND=1 (tests/conftest.py):
uvicorn's loaded application is wrapped in a middleware that wraps ``send``, as
Sentry's and OpenTelemetry's ASGI middlewares do, so the app cannot reach
uvicorn's own send and must take its public fallback."""

from typing import Any

import uvicorn.config

_load = uvicorn.config.Config.load


def _load_wrapped(self: uvicorn.config.Config) -> None:
    _load(self)
    inner = self.loaded_app

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        async def traced_send(message: Any) -> None:
            await send(message)

        await inner(scope, receive, traced_send)

    self.loaded_app = outer


uvicorn.config.Config.load = _load_wrapped  # type: ignore[method-assign]
