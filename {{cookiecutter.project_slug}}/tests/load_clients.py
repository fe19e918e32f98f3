"""Many WebSocket clients in one process, for load tests run from pytest.

    LOAD_TOKEN=<token> python tests/load_clients.py URL COUNT [ROOM ...]

Opens COUNT connections to URL, each authenticated with LOAD_TOKEN when it is
set; every second one joins one of the ROOMs in turn and waits for ``joined``.
Then it prints one JSON line to stdout, ``{"ready": COUNT, "seconds": S}``, and
waits. When every connection has been closed by the server, or when stdin
reaches its end (the test gave up waiting), it prints a second line,
``{"closes": [[code, time], ...]}``: per connection, the code of the close frame
it received and the ``time.monotonic()`` of its arrival (system-wide on Linux,
so comparable with the test's clock), or nulls when none came. Any failure
before ``ready`` prints ``{"error": "..."}`` and exits 1.

A separate process, so that a thousand clients neither share the test's event
loop or CPU time nor its file descriptors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Close, Frame, Opcode

# Handshakes in flight at once: well under the server's accept backlog (asyncio's
# default is 100), so no SYN is dropped and retried a second later.
CONCURRENT_HANDSHAKES = 50
# A handshake or join on a busy two-core machine; the app answers in milliseconds.
OPEN_TIMEOUT = 20


class Watched(ClientConnection):
    """A client connection that notes when the server's close frame arrives."""

    frame_code: int | None
    frame_time: float | None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.frame_code = None
        self.frame_time = None

    def process_event(self, event) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
            self.frame_time = time.monotonic()
            self.frame_code = Close.parse(event.data).code
        super().process_event(event)


async def open_one(
    url: str, room: str | None, handshakes: asyncio.Semaphore
) -> Watched:
    async with handshakes:
        ws = await connect(
            url,
            create_connection=Watched,
            open_timeout=OPEN_TIMEOUT,
            # The server's Pings keep the connection alive; these clients send none.
            ping_interval=None,
            compression=None,
            proxy=None,
        )
        token = os.environ.get("LOAD_TOKEN")
        if token:
            await request(ws, {"type": "auth", "token": token}, "authed")
        if room is not None:
            await request(ws, {"type": "join", "room": room}, "joined")
        assert isinstance(ws, Watched)  # create_connection=Watched above
        return ws


async def request(ws: ClientConnection, frame: dict, expected: str) -> None:
    await ws.send(json.dumps(frame))
    async with asyncio.timeout(OPEN_TIMEOUT):
        reply = json.loads(await ws.recv())
    if reply.get("type") != expected:
        raise RuntimeError(f"{frame['type']}: {reply}")


def say(line: dict) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    await reader.read()  # everything, up to the end


async def main(url: str, count: int, rooms: list[str]) -> int:
    handshakes = asyncio.Semaphore(CONCURRENT_HANDSHAKES)
    started = time.monotonic()
    members = [
        rooms[(index // 2) % len(rooms)] if rooms and index % 2 == 0 else None
        for index in range(count)
    ]
    try:
        connections = await asyncio.gather(
            *(open_one(url, room, handshakes) for room in members)
        )
    except Exception as error:
        say({"error": f"{type(error).__name__}: {error}"})
        return 1
    say({"ready": count, "seconds": time.monotonic() - started})

    closed = asyncio.gather(*(ws.wait_closed() for ws in connections))
    gave_up = asyncio.ensure_future(stdin_closed())
    either: list[asyncio.Future[Any]] = [closed, gave_up]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    say({"closes": [[ws.frame_code, ws.frame_time] for ws in connections]})
    gave_up.cancel()
    if not closed.done():
        closed.cancel()
        for ws in connections:
            ws.transport.abort()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])))
