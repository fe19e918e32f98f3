"""PEER: Starlette with encode/broadcaster's Redis backend, the chat app of
broadcaster's README as it stands for 0.3.1, run on uvicorn.

Two changes from the README, neither on the data path: the route is /ws (the
harness's clients use one path for every server), and startup and shutdown go
through ``lifespan``, the form Starlette 1.x accepts.
"""

import contextlib
import os
from collections.abc import AsyncIterator

import anyio
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

broadcast = Broadcast(os.environ["REDIS_URL"])


async def chatroom_ws(websocket: WebSocket) -> None:
    await websocket.accept()

    async with anyio.create_task_group() as task_group:
        # run until first is complete
        async def run_chatroom_ws_receiver() -> None:
            await chatroom_ws_receiver(websocket=websocket)
            task_group.cancel_scope.cancel()

        task_group.start_soon(run_chatroom_ws_receiver)
        await chatroom_ws_sender(websocket)


async def chatroom_ws_receiver(websocket: WebSocket) -> None:
    async for message in websocket.iter_text():
        await broadcast.publish(channel="chatroom", message=message)


async def chatroom_ws_sender(websocket: WebSocket) -> None:
    async with broadcast.subscribe(channel="chatroom") as subscriber:
        async for event in subscriber:
            await websocket.send_text(event.message)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await broadcast.connect()
    yield
    await broadcast.disconnect()


app = Starlette(routes=[WebSocketRoute("/ws", chatroom_ws)], lifespan=lifespan)
