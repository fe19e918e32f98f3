"""POST /api/publish: a backend publishes to a room with API_KEY."""

import http.client
import json

import pytest

API_KEY = "backend-api-key-" + "0123456789abcdef" * 2
BEARER = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
# Small, so that a body over it is quick to send.
MAX_BYTES = 1000


@pytest.fixture
def api_app(shared_app):
    return shared_app(API_KEY=API_KEY, WS_MAX_MESSAGE_BYTES=str(MAX_BYTES))


def publish(app, body, headers=BEARER, method="POST"):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    status, response_headers, answer = app.http(method, "/api/publish", headers, raw)
    return status, response_headers, answer


def test_a_publish_reaches_members_without_from(api_app, ws_client, new_room):
    room = new_room()
    member = ws_client(api_app)
    member.join(room)
    status, headers, body = publish(api_app, {"room": room, "data": {"n": 1}})
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert json.loads(body) == {"type": "published", "room": room}
    assert member.message_text() == json.dumps(
        {"type": "message", "room": room, "data": {"n": 1}}
    )


def test_publishes_cross_processes(start_app, redis_server, ws_client, new_room):
    room = new_room()
    backend_side = start_app(redis_server, API_KEY=API_KEY)
    other = start_app(redis_server)
    member = ws_client(other)
    member.join(room)
    assert publish(backend_side, {"room": room, "data": "via redis"})[0] == 200
    assert member.message() == {"type": "message", "room": room, "data": "via redis"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Bearer {API_KEY}x"},
        {"Authorization": f"Bearer {API_KEY[:-1]}"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": API_KEY},
    ],
    ids=["none", "wrong", "longer", "shorter", "basic", "no-scheme"],
)
def test_a_missing_or_wrong_key_gets_401(api_app, ws_client, new_room, headers):
    room = new_room()
    member = ws_client(api_app)
    member.join(room)
    status, response_headers, body = publish(
        api_app, {"room": room, "data": 1}, headers
    )
    assert status == 401
    assert response_headers["www-authenticate"] == "Bearer"
    assert json.loads(body)["code"] == "unauthenticated"
    member.assert_quiet()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not json", "invalid_json"),
        ("[1]", "invalid_json"),
        ('{"room": "lobby", "data": NaN}', "invalid_json"),
        ({"data": 1}, "invalid_message"),
        ({"room": 5, "data": 1}, "invalid_message"),
        ({"room": "lobby"}, "invalid_message"),
        ({"room": "no spaces", "data": 1}, "invalid_room"),
        ({"room": "x" * 65, "data": 1}, "invalid_room"),
    ],
    ids=[
        "not-json",
        "array",
        "nan",
        "no-room",
        "int-room",
        "no-data",
        "bad-room",
        "long-room",
    ],
)
def test_a_bad_body_gets_400_with_the_error_object(api_app, body, code):
    status, headers, answer = publish(api_app, body)
    assert status == 400
    assert headers["content-type"] == "application/json"
    fields = json.loads(answer)
    assert fields == {"type": "error", "code": code, "message": fields["message"]}


def test_a_body_over_ws_max_message_bytes_gets_413(api_app):
    exactly = json.dumps({"room": "lobby", "data": ""})
    exactly = json.dumps({"room": "lobby", "data": "d" * (MAX_BYTES - len(exactly))})
    assert len(exactly) == MAX_BYTES
    assert publish(api_app, exactly)[0] == 200
    over = exactly[:-2] + 'd"}'
    assert publish(api_app, over)[0] == 413


def test_a_chunked_body_over_the_limit_gets_413(api_app):
    """No Content-Length to go by: the app counts as it reads."""
    conn = http.client.HTTPConnection("127.0.0.1", api_app.port, timeout=10)
    try:
        body = json.dumps({"room": "lobby", "data": "d" * (2 * MAX_BYTES)}).encode()
        chunks = [body[i : i + 100] for i in range(0, len(body), 100)]
        conn.request(
            "POST",
            "/api/publish",
            body=iter(chunks),
            headers=BEARER,
            encode_chunked=True,
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 413
    finally:
        conn.close()


def test_the_checks_run_in_the_contracts_order(shared_app, api_app):
    """404 (no API_KEY), then 401, then 413, then 400."""
    big_bad = "not json " * 200  # over the limit and not JSON
    no_key_app = shared_app()
    assert publish(no_key_app, big_bad)[0] == 404
    assert publish(api_app, big_bad, {"Authorization": "Bearer wrong"})[0] == 401
    assert publish(api_app, big_bad)[0] == 413
    assert publish(api_app, "not json")[0] == 400


def test_without_api_key_the_endpoint_is_404(memory_app):
    assert publish(memory_app, {"room": "lobby", "data": 1})[0] == 404


def test_another_method_gets_405(api_app):
    status, headers, _ = publish(api_app, "", method="GET")
    assert status == 405
    assert headers["allow"] == "POST"


def test_redis_unreachable_gets_503(start_app, make_redis, wait_until):
    redis_server = make_redis()
    app = start_app(redis_server, API_KEY=API_KEY)
    assert publish(app, {"room": "lobby", "data": "up"})[0] == 200
    redis_server.stop()
    status, _, body = publish(app, {"room": "lobby", "data": "down"})
    assert status == 503
    assert json.loads(body)["code"] == "broker_unavailable"
    redis_server.start()
    wait_until(
        lambda: publish(app, {"room": "lobby", "data": "back"})[0] == 200,
        10,
        "publishes to succeed once Redis is back",
    )
