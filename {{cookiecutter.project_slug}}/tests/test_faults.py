"""An unexpected error inside one connection: close 1011, a traceback in the log,
and the process and every other connection go on.

A black-box test cannot make correct code fail, so the fault is injected: the app
is started with a ``sitecustomize`` module on PYTHONPATH that makes the core
Connection raise on one magic frame. Every server variant goes through it, so
the test says nothing about which framework runs the app.
"""

import textwrap

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
