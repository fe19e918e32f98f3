"""Publish to a room from outside the web process: a worker dyno, a script, a shell.

    from {{ cookiecutter.package_name }}.publish import publish
    publish("lobby", {"text": "hello"})

    python -m {{ cookiecutter.package_name }}.publish lobby '{"text": "hello"}'

Both publish the exact text of the contract's ``message`` frame on the room's Redis
channel, as the web processes do, so every member on every dyno receives it; with
history on (HISTORY_SIZE above 0, as the web processes are set) through the same
script, so the message is kept and numbered too. They need REDIS_URL: the
in-memory broker lives inside one web process.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import redis

from . import history, protocol
from .broker import redis_options
from .settings import Settings, SettingsError


def publish(
    room: str,
    data: Any,
    *,
    redis_url: str | None = None,
    settings: Settings | None = None,
) -> int:
    """Publish ``data`` (any JSON value) to ``room``; returns how many web processes
    received it. Raises ValueError for a bad room or data that is not JSON (NaN,
    infinity) and redis.RedisError when Redis cannot be reached."""
    if not protocol.ROOM_RULE.fullmatch(room):
        raise ValueError(f"room {room!r} breaks the rule {protocol.ROOM_RULE.pattern}")
    settings = settings or Settings.from_env()
    url = redis_url or settings.redis_url
    if url is None:
        raise SettingsError("REDIS_URL is not set: publishing needs the Redis broker")
    options = redis_options(settings, url)
    frame = protocol.message(room, data)
    with redis.Redis.from_url(url, **options) as client:
        channel = f"{settings.channel_prefix}:{room}"
        if not settings.history_size:
            return int(client.publish(channel, frame))
        # The web processes' own script: numbered, kept, published in one step.
        append = client.register_script(history.APPEND)
        keys = history.keys(settings.channel_prefix, room)
        size, ttl = settings.history_size, settings.history_ttl
        return int(append(keys, [channel, frame, size, ttl, history.new_epoch()]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m {{ cookiecutter.package_name }}.publish",
        description="Publish a message to a room through Redis (REDIS_URL).",
    )
    parser.add_argument("room", help="room name, e.g. lobby")
    parser.add_argument(
        "data", help='the message data as JSON, e.g. \'{"text": "hi"}\''
    )
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.data)
    except ValueError as error:
        parser.error(f"data is not valid JSON: {error}")
    try:
        receivers = publish(args.room, data)
    except (ValueError, redis.RedisError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"published to {args.room} ({receivers} web processes subscribed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
