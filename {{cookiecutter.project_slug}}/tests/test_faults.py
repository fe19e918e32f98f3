"""An unexpected error inside one connection: close 1011, a traceback in the log,
and the process and every other connection go on.

A black-box test cannot make correct code fail, so the fault is injected: the app
is started with a ``sitecustomize`` module on PYTHONPATH that makes the core
Connection raise on one magic frame. Every server variant goes through it, so
the test says nothing about which framework runs the app.
"""

import textwrap

import pytest

FAULT = "please fail"

SITECUSTOMIZE = textwrap.dedent(
    f"""
    import os
    import sys

    sys.path.insert(0, os.getcwd())  # the project, as `python -m` would see it

    from {{ cookiecutter.package_name }}.connection import Connection

    handle = Connection.handle


    async def handle_or_fail(self, text):
        if text == {FAULT!r}:
            raise RuntimeError("injected fault")
        return await handle(self, text)


    Connection.handle = handle_or_fail
    """
)


def test_unexpected_error_closes_1011_and_others_go_on(
    start_app, ws_client, new_room, tmp_path
):
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    app = start_app(PYTHONPATH=str(tmp_path))
    room = new_room()
    victim, bystander = ws_client(app), ws_client(app)
    for client in (victim, bystander):
        client.join(room)

    victim.send(FAULT)
    assert victim.close_code() == 1011
    assert "injected fault" in app.log()
    assert "Traceback" in app.log()

    # The other connection and the process are untouched.
    bystander.assert_alive()
    bystander.publish(room, "still here")
    assert bystander.message()["data"] == "still here"
    assert ws_client(app).request({"type": "ping"}) == {"type": "pong"}


DELIVERY_FAULT = "fail while delivering"
VICTIM_ROOM = "victim-marker"

DELIVERY_SITECUSTOMIZE = textwrap.dedent(
    f"""
    import os
    import sys

    sys.path.insert(0, os.getcwd())

    from {{ cookiecutter.package_name }}.connection import Connection

    deliver = Connection.deliver


    def deliver_or_fail(self, payload):
        # Only the connection that joined the marker room, only for this message.
        if {VICTIM_ROOM!r} in self.rooms and {DELIVERY_FAULT!r} in payload.text:
            raise RuntimeError("injected delivery fault")
        deliver(self, payload)


    Connection.deliver = deliver_or_fail
    """
)


@pytest.mark.parametrize("broker", ["memory", "redis"])
def test_one_member_failing_on_delivery_is_closed_alone(
    broker, start_app, ws_client, new_room, tmp_path, request
):
    """The broker hands a message to every member of the room; one member that
    raises is closed with 1011, and the others, the room and the broker's
    subscriber go on (python-socketio's users lost every room to this, #1581)."""
    (tmp_path / "sitecustomize.py").write_text(DELIVERY_SITECUSTOMIZE)
    server = request.getfixturevalue("redis_server") if broker == "redis" else None
    app = start_app(server, PYTHONPATH=str(tmp_path))
    room = new_room()
    victim, bystander, sender = ws_client(app), ws_client(app), ws_client(app)
    victim.join(VICTIM_ROOM)
    for client in (victim, bystander):
        client.join(room)

    sender.publish(room, DELIVERY_FAULT)
    assert victim.close_code() == 1011
    assert bystander.message()["data"] == DELIVERY_FAULT
    assert "injected delivery fault" in app.log()
    assert "Traceback" in app.log()

    # The room and the subscriber go on: no gap, later messages arrive, and a
    # newcomer's join is served.
    newcomer = ws_client(app)
    newcomer.join(room)
    sender.publish(room, "after")
    for client in (bystander, newcomer):
        assert client.message()["data"] == "after"
        assert client.pending == [], f"unexpected frames: {client.pending}"
