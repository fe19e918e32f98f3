"""The plain-HTTP side of the app: health check, handshake admission, demo page.

Framework-independent decisions; each server module turns them into its
framework's responses.
"""

from __future__ import annotations

import json
import mimetypes
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

STATIC_DIR = Path(__file__).parent / "static"


def origin_allowed(
    allowed: tuple[str, ...] | None, origin: str | None, host: str | None
) -> bool:
    """The contract's Origin rule for a WebSocket handshake."""
    if origin is None:
        return True  # not a browser: Origin is a browser's promise, not a secret
    origin = origin.strip().rstrip("/").lower()
    if allowed is None:  # only the app's own origin
        return bool(host) and urlsplit(origin).netloc == host.strip().lower()
    return "*" in allowed or origin in allowed


def health_body(status: str, broker: str, connections: int) -> bytes:
    return json.dumps(
        {"status": status, "broker": broker, "connections": connections}
    ).encode()


class StaticFiles:
    """The demo page and its assets, read once at start (a few KiB)."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self._files: dict[str, tuple[str, bytes]] = {}
        if not directory.is_dir():
            return
        for path in directory.iterdir():
            content_type = mimetypes.guess_type(path.name)[0] or "text/plain"
            if content_type.startswith("text/") or content_type.endswith("script"):
                content_type += "; charset=utf-8"
            self._files[f"/static/{path.name}"] = (content_type, path.read_bytes())
        if "/static/index.html" in self._files:
            self._files["/"] = self._files.pop("/static/index.html")

    def get(self, path: str) -> tuple[str, bytes] | None:
        """The content type and body served at this path, or None for a 404."""
        return self._files.get(path)


NOT_FOUND = (HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"Not found\n")
