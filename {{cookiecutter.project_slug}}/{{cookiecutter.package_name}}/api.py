"""``POST /api/publish``: a team's backend publishes to a room over HTTP.

It presents API_KEY as a Bearer credential and publishes exactly as a connection
would, without a ``from``. The checks run in the contract's order: 404 when
API_KEY is unset, 405 for another method, 401 for a missing or wrong key, 413
for a body over WS_MAX_MESSAGE_BYTES, 400 for a bad body, 503 when the broker is
unreachable.
"""

from __future__ import annotations

import hmac
from http import HTTPStatus

from .broker import BrokerUnavailable
from .node import Node
from .protocol import ProtocolError, json_object, publication, publish_text
from .settings import Settings
from .web import (
    NOT_FOUND,
    ONLY_POST,
    TOO_LARGE,
    Request,
    Response,
    bearer,
    error_answer,
    json_answer,
)

PUBLISH_PATH = "/api/publish"
WRONG_KEY = ProtocolError(
    "unauthenticated", "send the API key as Authorization: Bearer <API_KEY>"
)
UNAVAILABLE = ProtocolError(
    "broker_unavailable", "the message broker cannot be reached: try again"
)


class PublishApi:
    def __init__(self, settings: Settings, node: Node) -> None:
        # Compared as bytes: compare_digest takes str only when it is ASCII.
        key = settings.api_key
        self._key = None if key is None else key.encode()
        self._max_bytes = settings.max_message_bytes
        self._node = node

    def body_limit(self, method: str) -> int:
        return self._max_bytes if self._key is not None and method == "POST" else 0

    async def answer(self, request: Request) -> Response:
        if self._key is None:
            return NOT_FOUND
        if request.method != "POST":
            return ONLY_POST
        presented = bearer(request.authorization)
        # In constant time, so the key cannot be guessed byte by byte from timing.
        if presented is None or not hmac.compare_digest(presented.encode(), self._key):
            return error_answer(
                HTTPStatus.UNAUTHORIZED, WRONG_KEY, ("WWW-Authenticate", "Bearer")
            )
        if request.body is None:
            return TOO_LARGE
        try:
            room, data = publication(json_object(request.body, "body"))
            text = publish_text(room, data, None)
        except ProtocolError as error:
            return error_answer(HTTPStatus.BAD_REQUEST, error)
        try:
            await self._node.publish(room, text)
        except BrokerUnavailable:
            return error_answer(HTTPStatus.SERVICE_UNAVAILABLE, UNAVAILABLE)
        return json_answer(HTTPStatus.OK, {"type": "published", "room": room})
