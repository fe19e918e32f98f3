"""Guest tokens, POST /token: a display name in, a connection token out."""

import json
import time

import jwt
import pytest
from conftest import AUTH_SECRET, ON_A_DYNO, make_token

# The contract: more than 60 in any 60 s from one client address is refused.
GUESTS_PER_WINDOW = 60
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def guest_app(shared_app):
    """An app of this module's own (fewer than 60 requests in all, so none is
    refused by the address limit that the tests below cross on purpose)."""
    return shared_app(AUTH_GUEST="true")


def ask(app, name="Ann", headers=None, body=None):
    """POST /token; the status, the headers and the JSON body (or the raw one)."""
    payload = json.dumps({"name": name}) if body is None else body
    status, response_headers, raw = app.http(
        "POST", "/token", {**JSON, **(headers or {})}, payload
    )
    try:
        fields = json.loads(raw)
    except ValueError:
        fields = raw
    return status, response_headers, fields


def test_a_guest_token_for_a_name(shared_app, ws_client):
    app = shared_app(AUTH_GUEST_ROOMS="lobby,demo:*", AUTH_GUEST_TTL="600")
    status, headers, fields = ask(app, "  Ann Example  ")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert set(fields) == {"token", "user", "expires_in"}
    user = fields["user"]
    assert user["name"] == "Ann Example"  # kept trimmed
    assert user["id"].startswith("guest-") and len(user["id"]) > len("guest-")
    assert 595 <= fields["expires_in"] <= 600
    claims = jwt.decode(fields["token"], AUTH_SECRET, algorithms=["HS256"])
    assert claims["sub"] == user["id"]
    assert claims["name"] == "Ann Example"
    assert claims["rooms"] == ["lobby", "demo:*"]

    # The token is a connection token like any other, limited to the guest rooms.
    client = ws_client(app, auth=False)
    reply = client.request({"type": "auth", "token": fields["token"]})
    assert reply["user"] == user
    client.join("lobby")
    client.join("demo:one")
    assert client.request({"type": "join", "room": "private"})["code"] == "forbidden"


def test_each_new_guest_is_a_new_user(guest_app):
    ids = {ask(guest_app, "Same Name")[2]["user"]["id"] for _ in range(3)}
    assert len(ids) == 3


def test_a_returning_guest_keeps_their_id(guest_app):
    first = ask(guest_app, "Ann")[2]
    status, _, again = ask(
        guest_app, "Ann Renamed", {"Authorization": f"Bearer {first['token']}"}
    )
    assert status == 200
    assert again["user"] == {"id": first["user"]["id"], "name": "Ann Renamed"}
    assert again["token"] != first["token"]


OTHER_BEARERS = {
    "garbage": lambda: "garbage",
    "three-parts": lambda: "a.b.c",
    # Signed with the app's key, but not a guest's id.
    "user-token": lambda: make_token("alice"),
    # A guest's id, but signed with another key.
    "other-key": lambda: make_token("guest-0123", secret="x" * 40),
}


@pytest.mark.parametrize("bearer", list(OTHER_BEARERS))
def test_any_other_bearer_gets_a_new_id(guest_app, bearer):
    presented = OTHER_BEARERS[bearer]()
    status, _, fields = ask(guest_app, "Ann", {"Authorization": f"Bearer {presented}"})
    assert status == 200
    assert fields["user"]["id"].startswith("guest-")
    assert fields["user"]["id"] not in ("guest-0123", "alice")


def test_a_guest_returning_after_expiry_keeps_their_id(shared_app, wait_until):
    """A guest token expired less than AUTH_GUEST_TTL ago still names its guest,
    as the demo page presents it after its socket was closed with 4401."""
    app = shared_app(AUTH_GUEST_TTL="1")
    first = ask(app, "Sleepy")[2]
    exp = jwt.decode(first["token"], options={"verify_signature": False})["exp"]
    wait_until(lambda: time.time() > exp + 0.2, 5, "the guest token to expire")
    again = ask(app, "Sleepy", {"Authorization": f"Bearer {first['token']}"})[2]
    assert again["user"]["id"] == first["user"]["id"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"name": NaN}', "invalid_json"),
        ("{}", "invalid_message"),
        ('{"name": ""}', "invalid_message"),
        ('{"name": "   "}', "invalid_message"),
        ('{"name": 42}', "invalid_message"),
        ('{"name": null}', "invalid_message"),
        (json.dumps({"name": "n" * 65}), "invalid_message"),
        (json.dumps({"name": "bell\x07"}), "invalid_message"),
        (json.dumps({"name": "line\nbreak"}), "invalid_message"),
    ],
    ids=[
        "not-json",
        "array",
        "nan",
        "no-name",
        "empty",
        "blank",
        "number",
        "null",
        "65-chars",
        "bell",
        "newline",
    ],
)
def test_a_bad_body_gets_400_with_the_error_object(guest_app, body, code):
    status, headers, fields = ask(guest_app, body=body)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert fields == {"type": "error", "code": code, "message": fields["message"]}
    if code == "invalid_message":
        assert "name" in fields["message"]


def test_a_name_of_64_characters_is_taken(guest_app):
    name = "é" * 64
    assert ask(guest_app, name)[2]["user"]["name"] == name


def test_more_than_60_in_60_s_from_one_address_gets_429(start_app):
    app = start_app()
    statuses = [ask(app, f"n{i}")[0] for i in range(GUESTS_PER_WINDOW)]
    assert statuses == [200] * GUESTS_PER_WINDOW
    status, headers, _ = ask(app, "one too many")
    assert status == 429
    assert 1 <= int(headers["retry-after"]) <= 60
    # A bad body counts too, and is refused the same.
    assert ask(app, body="not json")[0] == 429


def test_on_a_dyno_the_limit_is_per_forwarded_address(start_app):
    """Heroku's router appends the address it saw to X-Forwarded-For: that last
    entry is the client, whatever the client sent ahead of it."""
    app = start_app(**ON_A_DYNO)
    router_says = {"X-Forwarded-For": "198.51.100.7, 203.0.113.1"}
    for _ in range(GUESTS_PER_WINDOW):
        assert ask(app, "a", router_says)[0] == 200
    assert ask(app, "a", router_says)[0] == 429
    # Another client behind the router; the same spoofed first entry won't help.
    other = {"X-Forwarded-For": "198.51.100.7, 203.0.113.2"}
    assert ask(app, "b", other)[0] == 200


def test_off_a_dyno_x_forwarded_for_is_not_believed(start_app):
    app = start_app()
    for i in range(GUESTS_PER_WINDOW):
        spoofed = {"X-Forwarded-For": f"192.0.2.{i}"}
        assert ask(app, "a", spoofed)[0] == 200
    assert ask(app, "a", {"X-Forwarded-For": "192.0.2.250"})[0] == 429


def test_guest_tokens_off_answer_404(shared_app):
    app = shared_app(AUTH_GUEST="false")
    assert ask(app)[0] == 404


def test_another_method_gets_405(guest_app):
    status, headers, _ = guest_app.http("GET", "/token")
    assert status == 405
    assert headers["allow"] == "POST"


def test_a_body_over_the_limit_gets_413(guest_app):
    name = "n" * 2000  # a name far past 64 characters, in a body past 1 KiB
    status, _, _ = ask(guest_app, body=json.dumps({"name": name}))
    assert status == 413
