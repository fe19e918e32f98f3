"""The Redis broker: fan-out across processes, the wire format, the publish helper."""

import json
import time

import pytest
from conftest import publish_command

SLUG = "{{ cookiecutter.project_slug }}"


def message(room, data):
    return {"type": "message", "room": room, "data": data}


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client()
    yield client
    client.close()


def subscribe(redis_client, channel):
    """A redis-py subscription to ``channel``, confirmed before returning."""
    pubsub = redis_client.pubsub()
    pubsub.subscribe(channel)
    confirmation = pubsub.get_message(timeout=5)
    assert confirmation and confirmation["type"] == "subscribe"
    return pubsub


def next_pubsub_message(pubsub, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = pubsub.get_message(timeout=deadline - time.monotonic())
        if item and item["type"] == "message":
            return item
    pytest.fail(f"nothing published on the Redis channel within {timeout} s")


def test_message_crosses_processes_exactly_once(
    redis_apps, ws_client, new_room, assert_quiet
):
    first, second = redis_apps
    room = new_room()
    here, there = ws_client(first), ws_client(second)
    here.join(room)
    there.join(room)
    for index in range(20):
        here.publish(room, index)
    for client in (here, there):
        assert [client.message() for _ in range(20)] == [
            here.sent(room, index) for index in range(20)
        ]
    there.publish(room, "back")
    for client in (here, there):
        assert client.message() == there.sent(room, "back")
    assert_quiet(here, there)


def test_publishers_on_two_processes_keep_their_order(
    redis_apps, ws_client, new_room, assert_quiet
):
    room = new_room()
    receivers = [ws_client(app) for app in redis_apps]
    for receiver in receivers:
        receiver.join(room)
    publishers = [ws_client(app) for app in redis_apps]
    count = 20
    for index in range(count):
        for number, publisher in enumerate(publishers):
            publisher.send({"type": "publish", "room": room, "data": [number, index]})
    for publisher in publishers:
        assert [publisher.reply() for _ in range(count)] == [
            {"type": "published", "room": room}
        ] * count
    for receiver in receivers:
        got = [receiver.message()["data"] for _ in range(2 * count)]
        for number in range(len(publishers)):
            assert [i for n, i in got if n == number] == list(range(count))
    assert_quiet(*receivers, *publishers)


def test_joined_means_subscribed(redis_apps, ws_client, new_room, redis_client):
    """A message published the moment ``joined`` arrives is delivered, whether
    from the other process or straight into Redis."""
    first, second = redis_apps
    publisher = ws_client(first)
    for _ in range(10):
        member = ws_client(second)
        room = new_room()
        member.join(room)
        publisher.publish(room, "via the other process")
        assert member.message() == publisher.sent(room, "via the other process")
        room = new_room()
        member.join(room)
        text = json.dumps(message(room, "via redis"))
        assert redis_client.publish(f"{SLUG}:{room}", text) == 1
        assert member.message_text() == text
        member.close()


def test_plain_redis_publish_reaches_members_verbatim(
    redis_apps, ws_client, new_room, redis_client, assert_quiet
):
    room = new_room()
    members = [ws_client(app) for app in redis_apps]
    for member in members:
        member.join(room)
    # Unusual but valid JSON: the server must forward the text, not re-encode it.
    text = (
        '{"type":"message",  "room":"ROOM","data":{"z":1.50,"a":"\\u00e9 é","n":[ ]}}'
    )
    text = text.replace("ROOM", room)
    assert redis_client.publish(f"{SLUG}:{room}", text) == len(redis_apps)
    for member in members:
        assert member.message_text() == text
    assert_quiet(*members)


def test_app_publishes_the_message_frame_text_on_the_channel(
    redis_apps, ws_client, new_room, redis_client
):
    room = new_room()
    pubsub = subscribe(redis_client, f"{SLUG}:{room}")
    try:
        member = ws_client(redis_apps[0])
        member.join(room)
        data = {"text": "héllo ☃", "list": [1, 2.5, None], "nested": {"a": True}}
        member.publish(room, data)
        text = member.message_text()
        assert json.loads(text) == member.sent(room, data)
        assert next_pubsub_message(pubsub)["data"] == text
    finally:
        pubsub.close()


def test_channel_prefix_follows_the_setting(
    start_app, redis_server, ws_client, new_room, redis_client
):
    app = start_app(redis_server, REDIS_CHANNEL_PREFIX="custom-prefix")
    room = new_room()
    member = ws_client(app)
    member.join(room)
    assert redis_client.publish(f"{SLUG}:{room}", "{}") == 0
    text = json.dumps(message(room, "prefixed"))
    assert redis_client.publish(f"custom-prefix:{room}", text) == 1
    assert member.message_text() == text
    member.assert_quiet()


def test_rooms_without_members_are_unsubscribed(
    redis_apps, ws_client, new_room, redis_client, wait_until
):
    """Subscriptions follow local membership, so Redis never holds dead channels."""
    app = redis_apps[0]
    left_room, closed_room = new_room(), new_room()
    leaver, closer = ws_client(app), ws_client(app)
    leaver.join(left_room)
    closer.join(closed_room)
    channels = [f"{SLUG}:{left_room}", f"{SLUG}:{closed_room}"]
    assert [n for _, n in redis_client.pubsub_numsub(*channels)] == [1, 1]
    leaver.leave(left_room)
    closer.close()
    wait_until(
        lambda: [n for _, n in redis_client.pubsub_numsub(*channels)] == [0, 0],
        5,
        "the rooms to be unsubscribed",
    )


def test_publish_helper_function(
    redis_apps, redis_server, ws_client, new_room, assert_quiet
):
    from {{ cookiecutter.package_name }}.publish import publish
    from {{ cookiecutter.package_name }}.settings import Settings

    # As the apps here are set: plain pub/sub (test_history.py: with history).
    settings = Settings.from_env({"HISTORY_SIZE": "0"})
    room = new_room()
    members = [ws_client(app) for app in redis_apps]
    for member in members:
        member.join(room)
    data = {"text": "from a worker", "n": [1, 2]}
    publish(room, data, redis_url=redis_server.url, settings=settings)
    for member in members:
        assert member.message() == message(room, data)
    assert_quiet(*members)


def test_publish_command_line(
    redis_apps, redis_server, ws_client, new_room, assert_quiet
):
    room = new_room()
    members = [ws_client(app) for app in redis_apps]
    for member in members:
        member.join(room)
    # As the apps here are set: plain pub/sub (test_history.py: with history).
    data = '{"text": "from the shell"}'
    result = publish_command(redis_server.url, room, data, HISTORY_SIZE="0")
    assert result.returncode == 0, result.stderr
    for member in members:
        assert member.message() == message(room, {"text": "from the shell"})
    assert_quiet(*members)


def test_rediss_with_a_self_signed_certificate(make_redis, start_app, ws_client):
    """Heroku Key-Value Store: rediss:// with a self-signed certificate works
    because verification is off unless REDIS_TLS_VERIFY is true."""
    server = make_redis(tls=True)
    app = start_app(server)
    assert app.healthz() == (200, {"status": "ok", "broker": "redis", "connections": 0})
    client = ws_client(app)
    client.join("lobby")
    client.publish("lobby", "over tls")
    assert client.message() == client.sent("lobby", "over tls")
    # And the message really went through the TLS Redis.
    probe = server.client()
    try:
        text = json.dumps(message("lobby", "from redis"))
        assert probe.publish(f"{SLUG}:lobby", text) == 1
        assert client.message_text() == text
    finally:
        probe.close()


def test_rediss_verification_refuses_a_self_signed_certificate(
    make_redis, start_app, ws_client
):
    server = make_redis(tls=True)
    app = start_app(server, wait=False, REDIS_TLS_VERIFY="true")
    if not app.started():
        assert app.process.returncode != 0
        return
    # Or the app runs without a broker it cannot trust.
    client = ws_client(app)
    reply = client.request({"type": "publish", "room": "lobby", "data": 1}, 10)
    assert reply["type"] == "error" and reply["code"] == "broker_unavailable"
    assert app.healthz()[0] == 503
