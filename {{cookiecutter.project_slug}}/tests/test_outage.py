"""A Redis restart under two app processes: degrade, keep clients, report the gap,
resume, and never leak Redis connections."""

import json
import signal
import statistics
import time

import pytest
import redis

SLUG = "{{ cookiecutter.project_slug }}"
# Each process: one subscriber connection and at most three for publishing.
MAX_REDIS_CONNECTIONS_PER_PROCESS = 4
# How long Redis stays down in the restart test: several health checks and
# reconnect attempts long, as in a managed Redis failover.
OUTAGE_SECONDS = 3
# Forced reconnects in the leak test: enough that one leaked connection each
# would stand out against the 4 a process may hold.
FORCED_RECONNECTS = 50
# Published at once in the output-buffer test: 5 MB, far past the 64 KiB limit.
BURST_MESSAGES = 50


def since(start: float) -> float:
    return round(time.monotonic() - start, 2)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def app_connections(client) -> list[dict]:
    return [c for c in client.client_list() if c.get("name") != "pytest"]


@pytest.mark.slow
def test_redis_restart(
    make_redis,
    start_app,
    ws_client,
    new_room,
    wait_until,
    assert_quiet,
    record_property,
):
    """Redis stopped for 3 s under two app processes: the clients stay connected,
    /healthz says 503, a publish gets broker_unavailable; once Redis is back,
    delivery resumes within 2 s, each member gets one gap frame for its rooms, and
    each process holds one subscription and at most 4 connections."""
    server = make_redis()
    apps = [start_app(server), start_app(server)]
    first, second = apps
    a, b = ws_client(first), ws_client(second)
    idle = ws_client(first)  # a member of nothing: no gap for it
    both, only_a = new_room(), new_room()
    a.join(both)
    a.join(only_a)
    b.join(both)
    a.publish(both, "before")
    for client in (a, b):
        assert client.message()["data"] == "before"

    server.stop()
    stopped = time.monotonic()

    for app in apps:

        def degraded(app=app):
            status, body = app.healthz()
            return status == 503 and body["status"] == "degraded"

        wait_until(degraded, 10, f"/healthz of the app on port {app.port} to degrade")
    reply = a.request({"type": "publish", "room": both, "data": "lost", "ref": "p"}, 10)
    assert reply["type"] == "error" and reply["code"] == "broker_unavailable", reply
    assert reply["ref"] == "p"
    record_property("healthz 503 after Redis stopped (s)", since(stopped))
    # The outage lasts OUTAGE_SECONDS, during which the apps keep serving.
    while time.monotonic() - stopped < OUTAGE_SECONDS:
        for client in (a, b, idle):
            client.assert_alive()
        assert all(app.healthz()[0] == 503 for app in apps)
        time.sleep(0.2)  # poll interval: well inside the clients' rate limit
    assert all(app.process.poll() is None for app in apps), "an app process exited"

    server.start()
    back = time.monotonic()

    # Delivery resumes within 2 s of Redis accepting connections again: probe by
    # publishing straight into Redis until both processes receive.
    probes = server.client()
    channel = f"{SLUG}:{both}"
    sent = 0
    while True:
        try:
            receivers = probes.publish(channel, json.dumps(probe_frame(both, sent)))
        except redis.ConnectionError:
            receivers = 0
        sent += 1
        if receivers == len(apps):
            break
        assert time.monotonic() - back < 10, "the apps never resubscribed"
        time.sleep(0.05)  # polling interval of the probe, not a wait for an event
    resumed = time.monotonic() - back
    record_property("delivery resumed after Redis was back (s)", round(resumed, 2))
    assert resumed < 2.5, f"delivery resumed {resumed:.2f} s after Redis came back"
    last_probe = probe_frame(both, sent - 1)
    for client in (a, b):
        while (frame := client.message()) != last_probe:
            assert frame["data"]["probe"] < sent - 1, frame

    # Every member is told once which of its rooms may have lost messages.
    gap_a = a.gap(timeout=10)
    assert gap_a.keys() == {"type", "rooms"}
    assert sorted(gap_a["rooms"]) == sorted([both, only_a])
    assert b.gap(timeout=10) == {"type": "gap", "rooms": [both]}

    # Delivery through the apps works again, exactly once, and both are healthy.
    b.publish(both, "after")
    for client in (a, b):
        assert client.message()["data"] == "after"
    for app, connections in ((first, 2), (second, 1)):
        wait_until(lambda app=app: app.healthz()[0] == 200, 5, "/healthz to recover")
        assert app.healthz() == (
            200,
            {"status": "ok", "broker": "redis", "connections": connections},
        )

    # One subscription per process and room, and no leaked connections, even after
    # a burst of concurrent publishes.
    assert probes.pubsub_numsub(channel, f"{SLUG}:{only_a}") == [
        (channel, 2),
        (f"{SLUG}:{only_a}", 1),
    ]
    burst = [ws_client(app) for app in apps for _ in range(4)]
    nobody = new_room()
    for client in burst:
        for index in range(5):
            client.send({"type": "publish", "room": nobody, "data": index})
    for client in burst:
        for _ in range(5):
            assert client.reply() == {"type": "published", "room": nobody}
    clients = app_connections(probes)
    assert len(clients) <= MAX_REDIS_CONNECTIONS_PER_PROCESS * len(apps), clients
    subscribers = [c for c in clients if "P" in c["flags"]]
    assert len(subscribers) == len(apps), clients
    record_property("Redis connections of 2 processes after (bound 8)", len(clients))
    assert_quiet(a, b, idle)
    probes.close()


def probe_frame(room: str, number: int) -> dict:
    return {"type": "message", "room": room, "data": {"probe": number}}


@pytest.mark.slow
def test_redis_that_stops_answering_is_detected(
    make_redis, start_app, ws_client, new_room, wait_until, record_property
):
    """A Redis gone without a FIN (here: frozen by SIGSTOP, so its sockets stay
    open and silent) is noticed by the app's own health check within 2 x 5 s."""
    server = make_redis()
    app = start_app(server)
    member, publisher = ws_client(app), ws_client(app)
    room = new_room()
    member.join(room)
    publisher.publish(room, "before")
    assert member.message()["data"] == "before"

    server.process.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        wait_until(
            lambda: app.healthz()[0] == 503,
            2 * 5 + 2,
            "the app to notice that Redis stopped answering",
        )
        record_property("frozen Redis detected after (s, bound 10)", since(frozen))
    finally:
        server.process.send_signal(signal.SIGCONT)
    thawed = time.monotonic()

    assert member.gap(timeout=15) == {"type": "gap", "rooms": [room]}
    record_property("gap after SIGCONT (s)", since(thawed))
    wait_until(lambda: app.healthz()[0] == 200, 10, "/healthz to recover")
    publisher.publish(room, "after")
    assert member.message()["data"] == "after"
    probe = server.client()
    try:
        wait_until(
            lambda: len(app_connections(probe)) <= MAX_REDIS_CONNECTIONS_PER_PROCESS,
            5,
            "the frozen connections to be released",
        )
    finally:
        probe.close()


@pytest.fixture
def lone_member(make_redis, start_app, ws_client, new_room):
    """A Redis of the test's own, an app on it with one member in one room, a
    probe client, and how many connections the app holds once it has published."""
    server = make_redis()
    app = start_app(server)
    member = ws_client(app)
    room = new_room()
    member.join(room)
    member.publish(room, "before")  # opens a publisher connection too
    assert member.message()["data"] == "before"
    probe = server.client()
    baseline = len(app_connections(probe))
    yield server, app, member, room, f"{SLUG}:{room}", probe, baseline
    probe.close()


@pytest.mark.slow
def test_forced_reconnects_leak_no_connections(
    lone_member, wait_until, record_property
):
    """Redis drops the subscriber FORCED_RECONNECTS times (CLIENT KILL TYPE
    pubsub): each time the app resubscribes and reports the gap, and the number
    of connections it holds never grows."""
    server, app, member, room, channel, probe, baseline = lone_member

    counts, resubscribed = [], []

    def subscribers() -> list[str]:
        return [c["id"] for c in probe.client_list(_type="pubsub")]

    for _ in range(FORCED_RECONNECTS):
        killed_ids = subscribers()
        assert len(killed_ids) == 1, killed_ids
        assert probe.client_kill_filter(_type="pubsub") == 1
        killed = time.monotonic()

        def resubscribed_anew(killed_ids=killed_ids):
            # Redis may free the killed client a moment later: a new connection,
            # not the old one's subscription, must be what NUMSUB counts.
            ids = subscribers()
            return (
                len(ids) == 1
                and ids != killed_ids
                and probe.pubsub_numsub(channel) == [(channel, 1)]
            )

        wait_until(resubscribed_anew, 5, "the app to resubscribe", interval=0.01)
        resubscribed.append(time.monotonic() - killed)
        counts.append(len(app_connections(probe)))

    gaps = 0
    member.send({"type": "publish", "room": room, "data": "after", "ref": "end"})
    while (frame := member.next()) != member.sent(room, "after"):
        if frame["type"] == "gap":
            assert frame == {"type": "gap", "rooms": [room]}
            gaps += 1
        else:
            assert frame == {"type": "published", "room": room, "ref": "end"}
    assert gaps == FORCED_RECONNECTS
    assert max(counts) <= baseline, (baseline, counts)
    assert app.process.poll() is None
    record_property("forced reconnects", FORCED_RECONNECTS)
    record_property("gap frames received", gaps)
    record_property("resubscribed after, median (s)", median(resubscribed))
    record_property("resubscribed after, max (s)", round(max(resubscribed), 2))
    record_property(
        "Redis connections before, most during", f"{baseline}, {max(counts)}"
    )


@pytest.mark.slow
def test_subscriber_cut_for_its_output_buffer_recovers(
    lone_member, wait_until, record_property
):
    """Redis closes a subscriber whose unread output passes the pub/sub buffer
    limit (a burst the app cannot drain in time): the app recovers as after a
    restart: gap, resubscribed, delivery resumed, no connection leaked."""
    server, app, member, room, channel, probe, baseline = lone_member
    # Heroku's plans keep Redis's default (32 MB hard); 64 KiB lets one burst of
    # a few MB pass it on loopback.
    probe.config_set("client-output-buffer-limit", "pubsub 65536 0 0")

    pad = "x" * 100_000
    burst = probe.pipeline(transaction=False)
    for seq in range(BURST_MESSAGES):
        burst.publish(channel, json.dumps(probe_frame(room, seq) | {"pad": pad}))
    burst.execute()
    cut = time.monotonic()

    # Some of the burst may arrive before the cut, in order; then the gap.
    seen = 0
    while (frame := member.next(timeout=10))["type"] != "gap":
        assert frame["data"] == {"probe": seen}, frame["data"]
        seen += 1
    assert frame == {"type": "gap", "rooms": [room]}
    record_property("gap after the cut (s)", since(cut))
    assert seen < BURST_MESSAGES, "the subscriber was never cut"
    log = server.log_dir / f"redis-{server.port}-{server.starts}.log"
    assert "output buffer limits" in log.read_text(), log.read_text()

    wait_until(
        lambda: probe.pubsub_numsub(channel) == [(channel, 1)], 5, "a resubscribe"
    )
    member.publish(room, "after")
    assert member.message()["data"] == "after"
    assert app.healthz()[0] == 200
    assert len(app_connections(probe)) <= baseline
    record_property("burst messages delivered before the cut", seen)
