"""A Redis restart under two app processes: degrade, keep clients, report the gap,
resume, and never leak Redis connections."""

import json
import signal
import time

import pytest
import redis

SLUG = "{{ cookiecutter.project_slug }}"
# Each process: one subscriber connection and at most three for publishing.
MAX_REDIS_CONNECTIONS_PER_PROCESS = 4


def app_connections(client) -> list[dict]:
    return [c for c in client.client_list() if c.get("name") != "pytest"]


@pytest.mark.slow
def test_redis_restart(
    make_redis, start_app, ws_client, new_room, wait_until, assert_quiet
):
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

    for app in apps:

        def degraded(app=app):
            status, body = app.healthz()
            return status == 503 and body["status"] == "degraded"

        wait_until(degraded, 10, f"/healthz of the app on port {app.port} to degrade")
    reply = a.request({"type": "publish", "room": both, "data": "lost", "ref": "p"}, 10)
    assert reply["type"] == "error" and reply["code"] == "broker_unavailable", reply
    assert reply["ref"] == "p"
    for client in (a, b, idle):
        client.assert_alive()

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
    connections = app_connections(probes)
    assert len(connections) <= MAX_REDIS_CONNECTIONS_PER_PROCESS * len(apps), (
        connections
    )
    subscribers = [c for c in connections if "P" in c["flags"]]
    assert len(subscribers) == len(apps), connections
    assert_quiet(a, b, idle)
    probes.close()


def probe_frame(room: str, number: int) -> dict:
    return {"type": "message", "room": room, "data": {"probe": number}}


@pytest.mark.slow
def test_redis_that_stops_answering_is_detected(
    make_redis, start_app, ws_client, new_room, wait_until
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
    try:
        wait_until(
            lambda: app.healthz()[0] == 503,
            2 * 5 + 2,
            "the app to notice that Redis stopped answering",
        )
    finally:
        server.process.send_signal(signal.SIGCONT)

    assert member.gap(timeout=15) == {"type": "gap", "rooms": [room]}
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
