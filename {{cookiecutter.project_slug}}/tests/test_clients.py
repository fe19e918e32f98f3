"""WS_MAX_CONNECTIONS_PER_CLIENT: one client address cannot take the process.

Off a dyno the client is the socket's peer; on a dyno (DYNO set) it is the last
X-Forwarded-For entry, the one Heroku's router appends. HAProxy plays the router
in the slow lane (test_router.py has the same stand-in for keep-alive).
"""

import pytest
from conftest import ON_A_DYNO

PER_CLIENT = 3


def upgrade(raw_ws, app, forwarded_for=None):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    status, response_headers, ws = raw_ws(app, headers=headers)
    return status, response_headers, ws


def test_past_the_limit_a_handshake_gets_429(start_app, raw_ws):
    app = start_app(WS_MAX_CONNECTIONS_PER_CLIENT=str(PER_CLIENT))
    held = [upgrade(raw_ws, app)[0] for _ in range(PER_CLIENT)]
    assert held == [101] * PER_CLIENT
    status, headers, _ = upgrade(raw_ws, app)
    assert status == 429
    assert "sec-websocket-accept" not in headers
    # Off a dyno, X-Forwarded-For is anyone's to write: it changes nothing.
    assert upgrade(raw_ws, app, "192.0.2.10")[0] == 429


def test_a_closed_connection_gives_its_place_back(
    start_app, ws_client, raw_ws, wait_until
):
    app = start_app(WS_MAX_CONNECTIONS_PER_CLIENT=str(PER_CLIENT))
    clients = [ws_client(app) for _ in range(PER_CLIENT)]
    assert upgrade(raw_ws, app)[0] == 429
    clients[0].close()
    wait_until(lambda: app.connections() < PER_CLIENT, 5, "the app to see the close")
    replacement = ws_client(app)
    replacement.assert_alive()


def test_plain_requests_do_not_count(start_app, ws_client):
    app = start_app(WS_MAX_CONNECTIONS_PER_CLIENT="1")
    client = ws_client(app)
    for _ in range(5):
        assert app.healthz()[0] == 200
    client.assert_alive()


def test_on_a_dyno_each_forwarded_address_has_its_own_limit(start_app, raw_ws):
    app = start_app(WS_MAX_CONNECTIONS_PER_CLIENT=str(PER_CLIENT), **ON_A_DYNO)
    # What Heroku's router sends: the client's own header, then the address it saw.
    first = "10.0.0.1, 203.0.113.5"
    for _ in range(PER_CLIENT):
        assert upgrade(raw_ws, app, first)[0] == 101
    assert upgrade(raw_ws, app, first)[0] == 429
    # A forged first entry does not make a new client ...
    assert upgrade(raw_ws, app, "198.51.100.99, 203.0.113.5")[0] == 429
    # ... another address the router saw does.
    assert upgrade(raw_ws, app, "203.0.113.6")[0] == 101


# Far longer than the test: the router's idle cut is not under test here.
TUNNEL = 30


@pytest.mark.slow
def test_behind_the_router_the_limit_follows_the_address_it_appends(
    start_app, router, raw_ws
):
    """HAProxy, as Heroku's router, appends the address it saw to
    X-Forwarded-For. A client's own X-Forwarded-For comes first and does not
    buy it more connections; the app counts by the last entry."""
    app = start_app(WS_MAX_CONNECTIONS_PER_CLIENT="2", **ON_A_DYNO)
    proxy = router(app, TUNNEL)
    assert [upgrade(raw_ws, proxy)[0] for _ in range(2)] == [101, 101]
    assert upgrade(raw_ws, proxy)[0] == 429
    # A forged header: the router's own line still comes after it.
    assert upgrade(raw_ws, proxy, "10.9.9.9")[0] == 429
    # The count is by address, not by socket peer: another address the router
    # would have seen (sent here straight to the app) is another client.
    assert upgrade(raw_ws, app, "203.0.113.9")[0] == 101
