"""History and recovery (README, History): offsets and epochs, joins with history
and since, the memory broker's bounds, and, on Redis, recovery across a process's
SIGTERM, Redis restarts and a subscriber's reconnect, with two app processes."""

import json
import threading

import pytest
from conftest import publish_command, strict_json
from websockets.exceptions import ConnectionClosed

from {{ cookiecutter.package_name }} import history

SLUG = "{{ cookiecutter.project_slug }}"
# The app's own settings: HISTORY_SIZE unset (100), HISTORY_TTL unset (3600).
DEFAULTS = {"HISTORY_SIZE": None}
API_KEY = "backend-api-key-" + "0123456789abcdef" * 2


def joined(client, room, **asked) -> dict:
    reply = client.request({"type": "join", "room": room, **asked})
    assert reply["type"] == "joined" and reply["room"] == room, reply
    return reply


def since(frame: dict) -> dict:
    """The since of a join that follows this message or joined frame."""
    return {"offset": frame["offset"], "epoch": frame["epoch"]}


def datas(frames: list[dict]) -> list:
    return [frame["data"] for frame in frames]


def messages(client, count: int, timeout: float = 5.0) -> list[dict]:
    return [client.message(timeout) for _ in range(count)]


@pytest.fixture
def history_app(shared_app):
    """A memory-broker app with history as it comes (HISTORY_SIZE 100)."""
    return shared_app(**DEFAULTS)


@pytest.fixture
def history_apps(make_redis, start_app):
    """A Redis of the test's own and two app processes on it, history on."""
    server = make_redis()
    # A test's publisher publishes faster than a person: no rate limit.
    fast = {**DEFAULTS, "WS_RATE_LIMIT": "1000", "WS_RATE_BURST": "1000"}
    return server, start_app(server, **fast), start_app(server, **fast)


@pytest.fixture(params=["memory", "redis"])
def any_history_app(request, shared_app, redis_server, start_app):
    if request.param == "memory":
        return shared_app(**DEFAULTS)
    return start_app(redis_server, **DEFAULTS)


# ------------------------------------------------------------ offsets and epochs


def test_messages_carry_consecutive_offsets_and_the_epoch(
    any_history_app, ws_client, new_room
):
    room = new_room()
    member = ws_client(any_history_app)
    first = joined(member, room)
    assert first["offset"] == 0  # a room without messages
    epoch = first["epoch"]
    assert isinstance(epoch, str) and epoch
    for n in range(1, 4):
        member.publish(room, n)
    texts = [member.message_text() for _ in range(3)]
    for offset, text in enumerate(texts, start=1):
        # The fields go last, exactly as the history keeps and replays them.
        assert text.endswith(f', "offset": {offset}, "epoch": "{epoch}"}}'), text
        assert strict_json(text) == {
            **member.sent(room, offset),
            "offset": offset,
            "epoch": epoch,
        }
    assert joined(ws_client(any_history_app), room)["offset"] == 3


def test_join_with_history_gets_the_last_messages_then_live_ones(
    any_history_app, ws_client, new_room
):
    room = new_room()
    publisher = ws_client(any_history_app)
    for n in range(1, 6):
        publisher.publish(room, n)
    member = ws_client(any_history_app)
    reply = joined(member, room, history=3)
    assert reply["offset"] == 5 and "recovered" not in reply
    replay = messages(member, 3)
    assert datas(replay) == [3, 4, 5]
    assert [frame["offset"] for frame in replay] == [3, 4, 5]
    publisher.publish(room, 6)
    assert member.message()["data"] == 6
    # More than the room has: all of it, oldest first.
    other = ws_client(any_history_app)
    joined(other, room, history=50)
    assert datas(messages(other, 6)) == [1, 2, 3, 4, 5, 6]
    other.assert_quiet()


def test_join_with_since_recovers_exactly_what_was_missed(
    any_history_app, ws_client, new_room, assert_quiet
):
    room = new_room()
    publisher = ws_client(any_history_app)
    member = ws_client(any_history_app)
    joined(member, room)
    for n in range(1, 4):
        publisher.publish(room, n)
    last = messages(member, 3)[-1]
    member.close()
    for n in range(4, 7):
        publisher.publish(room, n)
    back = ws_client(any_history_app)
    reply = joined(back, room, since=since(last))
    assert reply["recovered"] is True and reply["offset"] == 6
    assert datas(messages(back, 3)) == [4, 5, 6]
    publisher.publish(room, 7)
    assert back.message()["data"] == 7
    assert_quiet(back)


def test_since_at_the_latest_recovers_nothing_to_replay(
    any_history_app, ws_client, new_room
):
    room = new_room()
    member = ws_client(any_history_app)
    joined(member, room)
    member.publish(room, "only")
    latest = member.message()
    back = ws_client(any_history_app)
    reply = joined(back, room, since=since(latest))
    assert reply["recovered"] is True and reply["offset"] == latest["offset"]
    back.assert_quiet()


@pytest.mark.parametrize(
    "wrong",
    [
        lambda position: {"offset": position["offset"], "epoch": "0123456789abcdef"},
        lambda position: {"offset": position["offset"] + 1, "epoch": position["epoch"]},
    ],
    ids=["another epoch", "offset above the latest"],
)
def test_since_that_cannot_be_recovered_says_so_and_replays_nothing(
    any_history_app, ws_client, new_room, wrong
):
    room = new_room()
    member = ws_client(any_history_app)
    joined(member, room)
    member.publish(room, 1)
    latest = member.message()
    back = ws_client(any_history_app)
    reply = joined(back, room, since=wrong(since(latest)))
    assert reply["recovered"] is False and reply["offset"] == latest["offset"]
    member.publish(room, 2)
    assert back.message()["data"] == 2  # live ones follow, and nothing else
    back.assert_quiet()


def test_more_than_history_size_behind_is_not_recovered(
    shared_app, ws_client, new_room
):
    app = shared_app(HISTORY_SIZE="5")
    room = new_room()
    publisher = ws_client(app)
    for n in range(1, 9):
        publisher.publish(room, n)
    epoch = joined(publisher, room)["epoch"]
    far = ws_client(app)
    assert joined(far, room, since={"offset": 2, "epoch": epoch})["recovered"] is False
    far.assert_quiet()
    near = ws_client(app)
    reply = joined(near, room, since={"offset": 3, "epoch": epoch})
    assert reply["recovered"] is True
    assert datas(messages(near, 5)) == [4, 5, 6, 7, 8]
    # history asks for at most HISTORY_SIZE.
    last = ws_client(app)
    joined(last, room, history=100)
    assert datas(messages(last, 5)) == [4, 5, 6, 7, 8]
    last.assert_quiet()


@pytest.mark.parametrize(
    "asked",
    [
        {"history": "3"},
        {"history": 0},
        {"history": -1},
        {"history": True},
        {"history": 1.5},
        {"since": 3},
        {"since": {"offset": -1, "epoch": "e"}},
        {"since": {"offset": "1", "epoch": "e"}},
        {"since": {"offset": 1}},
        {"since": {"offset": 1, "epoch": 7}},
        {"since": {"offset": 1, "epoch": ""}},
        {"since": {"offset": 1, "epoch": "e" * 65}},
        {"history": 2, "since": {"offset": 0, "epoch": "e"}},
    ],
    ids=json.dumps,
)
def test_bad_history_or_since_is_invalid_message(
    history_app, ws_client, new_room, asked
):
    member = ws_client(history_app)
    room = new_room()
    reply = member.request({"type": "join", "room": room, "ref": "r", **asked})
    assert reply["type"] == "error" and reply["code"] == "invalid_message", reply
    assert reply["ref"] == "r"
    member.assert_alive()
    assert joined(member, room)["offset"] == 0  # not joined by the bad request


def test_history_off_has_no_offsets_and_refuses_history_and_since(
    shared_app, ws_client, new_room
):
    app = shared_app(HISTORY_SIZE="0")
    room = new_room()
    member = ws_client(app)
    assert member.request({"type": "join", "room": room}) == {
        "type": "joined",
        "room": room,
    }
    member.publish(room, 1)
    assert member.message() == member.sent(room, 1)
    for asked in ({"history": 5}, {"since": {"offset": 0, "epoch": "e"}}):
        reply = member.request({"type": "join", "room": room, **asked})
        assert reply["code"] == "invalid_message", reply
        assert "HISTORY_SIZE=0" in reply["message"]
    member.assert_alive()


def test_a_quiet_room_loses_its_history_after_history_ttl(
    shared_app, ws_client, new_room, wait_until
):
    app = shared_app(HISTORY_SIZE=None, HISTORY_TTL="1")
    room = new_room()
    member = ws_client(app)
    first = joined(member, room)
    member.publish(room, "soon gone")
    kept = member.message()
    member.leave(room)  # no member left: the next join reads the history

    def new_epoch() -> bool:
        reply = joined(member, room, since=since(kept))
        member.leave(room)
        return reply["recovered"] is False and reply["offset"] == 0

    wait_until(new_epoch, 10, "the room's history to expire")
    assert joined(member, room)["epoch"] != first["epoch"]


def test_memory_history_forgets_expired_rooms_so_memory_stays_bounded(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    kept = history.MemoryHistory(size=3, ttl=60)
    for index in range(1000):
        for n in range(5):
            kept.append(f"room-{index}", json.dumps({"type": "message", "data": n}))
    assert len(kept) == 1000
    window = kept.read("room-7", None, 10)
    assert [strict_json(p.text)["data"] for p in window.payloads] == [2, 3, 4]
    clock[0] += 61
    kept.append("fresh", json.dumps({"type": "message", "data": 0}))
    assert len(kept) == 1  # every other room expired


# --------------------------------------------------------------------- on Redis


@pytest.fixture
def on_redis(make_redis, start_app, ws_client, new_room):
    """A Redis of the test's own, an app on it (history on, the publish API on)
    and a member of a new room: server, app, room, member."""
    server = make_redis()
    app = start_app(server, API_KEY=API_KEY, **DEFAULTS)
    room = new_room()
    member = ws_client(app)
    joined(member, room)
    return server, app, room, member


def test_the_api_and_the_publish_helper_keep_history(on_redis, ws_client):
    server, app, room, member = on_redis
    status, _, _ = app.http(
        "POST",
        "/api/publish",
        {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        json.dumps({"room": room, "data": "api"}),
    )
    assert status == 200
    result = publish_command(server.url, room, '"cli"')  # history as it comes
    assert result.returncode == 0, result.stderr
    live = messages(member, 2)
    assert [(m["data"], m["offset"]) for m in live] == [("api", 1), ("cli", 2)]
    later = ws_client(app)
    joined(later, room, history=10)
    assert datas(messages(later, 2)) == ["api", "cli"]


def test_a_plain_publish_is_delivered_live_but_not_kept(on_redis, ws_client):
    server, app, room, member = on_redis
    text = json.dumps({"type": "message", "room": room, "data": "plain"})
    with server.client() as probe:
        assert probe.publish(f"{SLUG}:{room}", text) == 1
    assert member.message_text() == text
    later = ws_client(app)
    assert joined(later, room, history=10)["offset"] == 0
    later.assert_quiet()


def test_the_room_keys_use_the_room_as_a_hash_tag(on_redis):
    server, app, room, member = on_redis
    member.publish(room, 1)
    member.message()
    tagged = f"{SLUG}:" + "{" + room + "}"  # the room as a hash tag
    with server.client() as probe:
        meta, stream = f"{tagged}:meta", f"{tagged}:messages"
        assert sorted(probe.keys(f"{tagged}:*")) == sorted([meta, stream])
        assert probe.hget(meta, "offset") == "1"
        assert probe.xlen(stream) == 1
        assert 0 < probe.ttl(stream) <= 3600 and 0 < probe.ttl(meta) <= 3600


def test_a_redis_that_refuses_writes_makes_publish_broker_unavailable(on_redis):
    server, app, room, member = on_redis
    with server.client() as probe:
        probe.config_set("maxmemory-policy", "noeviction")
        probe.config_set("maxmemory", "1")  # every write is refused: OOM
        try:
            reply = member.request({"type": "publish", "room": room, "data": 1})
            assert reply["code"] == "broker_unavailable", reply
            member.assert_alive()
        finally:
            probe.config_set("maxmemory", "0")
    member.publish(room, 2)
    assert member.message()["offset"] == 1  # the refused one was never numbered


def test_a_reconnect_storm_reads_each_room_and_since_once(
    make_redis, start_app, ws_client, new_room
):
    """Every client of a room comes back with the same since, as after a deploy:
    one read of the history (one XRANGE) serves them all."""
    server = make_redis()
    app = start_app(server, **DEFAULTS)
    room = new_room()
    publisher = ws_client(app)
    for n in range(1, 11):
        publisher.publish(room, n)
    epoch = joined(publisher, room)["epoch"]
    publisher.leave(room)
    with server.client() as probe:
        before = probe.info("commandstats").get("cmdstat_xrange", {}).get("calls", 0)
        clients = [ws_client(app) for _ in range(30)]
        for client in clients:
            client.send(
                {"type": "join", "room": room, "since": {"offset": 2, "epoch": epoch}}
            )
        for client in clients:
            reply = client.reply()
            assert reply["recovered"] is True, reply
            assert datas(messages(client, 8)) == list(range(3, 11))
        after = probe.info("commandstats")["cmdstat_xrange"]["calls"]
    assert after - before == 1


# ------------------------------------------------------------------- recoveries


class Publisher(threading.Thread):
    """Publishes 1, 2, 3, ... to a room from its own client until stopped."""

    def __init__(self, client, room: str, interval: float = 0.05):
        super().__init__(daemon=True)
        self.client, self.room, self.interval = client, room, interval
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.sent += 1
            self.client.send({"type": "publish", "room": self.room, "data": self.sent})
            self.stop.wait(self.interval)

    def finish(self) -> int:
        self.stop.set()
        self.join(5)
        return self.sent


def received_until_closed(client) -> list[dict]:
    frames = []
    try:
        while True:
            frame = strict_json(client.ws.recv(timeout=10))
            if frame["type"] == "message":
                frames.append(frame)
    except ConnectionClosed:
        return frames


@pytest.mark.slow
def test_recovery_across_a_sigterm_of_the_clients_process(
    history_apps, ws_client, new_room, record_property
):
    """The member's process stops (a deploy); it reconnects to the other process
    with since and gets exactly what it missed, in order, while a publisher on
    the other process keeps publishing."""
    _, first, second = history_apps
    room = new_room()
    member = ws_client(first)
    joined(member, room)
    publisher = Publisher(ws_client(second), room)
    publisher.start()
    before = [member.message() for _ in range(10)]
    first.sigterm()
    before += received_until_closed(member)
    back = ws_client(second)
    reply = joined(back, room, since=since(before[-1]))
    assert reply["recovered"] is True, reply
    after = [back.message() for _ in range(10)]
    total = publisher.finish()
    while after[-1]["data"] != total:
        after.append(back.message(10))
    got = datas(before + after)
    assert got == list(range(1, total + 1))
    offsets = [frame["offset"] for frame in before + after]
    assert offsets == list(range(1, total + 1))
    replayed = reply["offset"] - before[-1]["offset"]
    record_property("messages published, replayed", f"{total}, {replayed}")


@pytest.mark.slow
def test_a_subscriber_reconnect_heals_from_the_history_without_a_gap(
    history_apps, ws_client, new_room, wait_until
):
    """Redis drops every subscriber (CLIENT KILL TYPE pubsub) three times while a
    publisher keeps going: every member, on both processes, gets every message
    exactly once and in order, and no gap."""
    server, first, second = history_apps
    room = new_room()
    members = [ws_client(first), ws_client(second)]
    for member in members:
        joined(member, room)
    publisher = Publisher(ws_client(second), room, interval=0.01)
    publisher.start()
    with server.client() as probe:
        channel = f"{SLUG}:{room}"
        for cut in range(3):
            # Traffic flows before each cut.
            wanted = 20 * (cut + 1)
            wait_until(lambda: publisher.sent > wanted, 5, "publishing")  # noqa: B023
            assert probe.client_kill_filter(_type="pubsub") == 2
            wait_until(
                lambda: probe.pubsub_numsub(channel) == [(channel, 2)],
                5,
                "both processes to resubscribe",
            )
    wait_until(lambda: publisher.sent > 80, 5, "publishing after the last cut")
    total = publisher.finish()
    for member in members:
        frames = [member.next(lambda f: f["type"] in ("message", "gap"))]
        while frames[-1].get("data") != total:
            frames.append(member.next(lambda f: f["type"] in ("message", "gap")))
        assert [frame.get("data") for frame in frames] == list(range(1, total + 1))


@pytest.fixture
def restart_redis(make_redis, start_app, ws_client, new_room):
    """``restart_redis(persistent)``: an app on a Redis of its own, a member of a
    new room that has received message 1, then Redis stopped and started again:
    app, room, member and that message."""

    def restart(persistent: bool):
        server = make_redis(persistent=persistent)
        app = start_app(server, **DEFAULTS)
        room = new_room()
        member = ws_client(app)
        joined(member, room)
        member.publish(room, 1)
        kept = member.message()
        server.stop()
        server.start()
        return app, room, member, kept

    return restart


@pytest.mark.slow
def test_a_redis_restart_with_persistence_is_recovered(
    restart_redis, ws_client, wait_until
):
    app, room, member, kept = restart_redis(persistent=True)
    wait_until(lambda: app.healthz()[0] == 200, 10, "the app to reconnect")
    member.publish(room, 2)
    assert member.message() == {**kept, "data": 2, "offset": 2}
    back = ws_client(app)
    reply = joined(back, room, since=since(kept))
    assert reply["recovered"] is True
    assert datas(messages(back, 1)) == [2]
    member.assert_quiet()  # no gap: nothing was lost


@pytest.mark.slow
def test_a_redis_restart_without_persistence_is_a_new_epoch_and_a_gap(
    restart_redis, ws_client
):
    app, room, member, kept = restart_redis(persistent=False)
    assert member.gap(timeout=15) == {"type": "gap", "rooms": [room]}
    member.publish(room, 2)
    fresh = member.message()
    assert fresh["epoch"] != kept["epoch"] and fresh["offset"] == 1
    back = ws_client(app)
    reply = joined(back, room, since=since(kept))
    assert reply["recovered"] is False and reply["epoch"] == fresh["epoch"]
    back.assert_quiet()
