"""Logs: one line per event on stdout, and never a secret."""

from conftest import WRAP_ASGI_SEND

PASSWORD = "s3cret"


def test_redis_password_never_logged(
    make_redis, start_app, ws_client, new_room, wait_until
):
    """Through start, traffic, an outage with its reconnect attempts, and shutdown."""
    server = make_redis(password=PASSWORD)
    app = start_app(REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{server.port}")
    room = new_room()
    client = ws_client(app)
    client.join(room)
    client.publish(room, "hi")
    assert client.message()["data"] == "hi"
    assert app.healthz()[1]["broker"] == "redis"

    server.stop()
    wait_until(lambda: app.healthz()[0] == 503, 10, "/healthz to degrade")
    assert (
        client.request({"type": "publish", "room": room, "data": 1})["type"] == "error"
    )
    server.start()
    wait_until(lambda: app.healthz()[0] == 200, 10, "/healthz to recover")

    app.stop()
    log = app.log()
    assert log.strip(), "the app logged nothing"
    assert PASSWORD not in log, log


def test_logs_go_to_stdout_one_line_per_event(start_app, raw_ws, ws_client):
    app = start_app(split_stderr=True)
    status, _, refused = raw_ws(app, headers={"Origin": "https://evil.example"})
    assert status == 403
    refused.close()
    ws_client(app).assert_alive()
    app.stop()
    assert app.process.returncode == 0
    assert app.stderr_path.read_text() == ""
    lines = app.log().splitlines()
    assert lines, "the app logged nothing"
    assert all(line.strip() for line in lines), "blank log lines"
    assert "Traceback" not in app.log()


def test_the_way_out_is_logged_once(start_app, ws_client):
    """Each process names, once, how frames leave for its clients: a fast path
    on a library's internals, or the public fallback (TEST_WRAP_ASGI_SEND=1)."""
    app = start_app()
    for _ in range(3):
        ws_client(app).assert_alive()
    app.stop()
    lines = [line for line in app.log().splitlines() if "frames to clients:" in line]
    assert len(lines) == 1, lines
    if WRAP_ASGI_SEND:
        assert "ASGI send, through a writer task" in lines[0], lines
    else:
        assert "writer task" not in lines[0], lines
