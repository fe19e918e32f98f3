"""PEER-DJANGO: Django Channels with channels_redis' RedisPubSubChannelLayer, in
the pattern of Channels' chat tutorial (group_add on connect, group_send on
receive, a handler that sends), settings and routing in this one module, run on
uvicorn."""

import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    # A fixed key is fine: nothing here signs anything a client keeps.
    SECRET_KEY="bench-reference-not-secret-" + "x" * 40,
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"]]},
        }
    },
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

GROUP = "chatroom"


# Any to mypy, which runs where Channels is not installed: no base to check against.
class ChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        await self.channel_layer.group_send(
            GROUP, {"type": "chat.message", "text": text_data}
        )

    async def chat_message(self, event: dict[str, str]) -> None:
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("ws", ChatConsumer.as_asgi())])}
)
