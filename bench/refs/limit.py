"""LIMIT: a bare websockets server that relays every text frame to every
connection with ``broadcast()``. No Redis, no JSON, no rooms: the fastest fan-out
Python does on this machine, the bound every variant is measured against."""

import asyncio
import os

from websockets.asyncio.server import ServerConnection, broadcast, serve

CONNECTIONS: set[ServerConnection] = set()


async def relay(ws: ServerConnection) -> None:
    CONNECTIONS.add(ws)
    try:
        async for message in ws:
            broadcast(CONNECTIONS, message)
    finally:
        CONNECTIONS.discard(ws)


async def main() -> None:
    # Compression off, as in every variant's default (and every run here).
    async with serve(relay, "127.0.0.1", int(os.environ["PORT"]), compression=None):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
