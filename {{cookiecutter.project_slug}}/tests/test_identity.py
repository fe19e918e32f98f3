"""Identity: connection tokens, their life cycle on the socket, room permissions.

Tokens are minted here as any team's backend would, with PyJWT and the shared
key; the app is a black box behind a real socket.
"""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from conftest import AUTH_SECRET, make_token, new_user

# The contract: a token expires at exp plus 5 s of leeway, and the server closes
# the connection within 1 s after that.
LEEWAY = 5
CLOSE_WITHIN = 1
# Timer and scheduling slack on a busy two-core machine, on top of CLOSE_WITHIN.
SLACK = 0.5
UNAUTHORIZED = 4401

# The HS512 case signs with a key PyJWT finds short for SHA-512, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict, claims: dict, key: str = AUTH_SECRET) -> str:
    """A JWT put together by hand, HMAC-SHA256 signed whatever the header says:
    for headers PyJWT would not write (RS256 with a shared key, none)."""
    signing_input = (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    )
    digest = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(digest)}"


def auth(client, token, ref=None) -> dict:
    frame = {"type": "auth", "token": token}
    if ref is not None:
        frame["ref"] = ref
    return client.request(frame)


def error(code: str):
    return lambda reply: reply["type"] == "error" and reply["code"] == code


# ------------------------------------------------------------------ the life cycle


def test_auth_answers_authed_with_the_user(memory_app, ws_client):
    client = ws_client(memory_app, auth=False)
    reply = auth(client, make_token("alice", name="Alice", ttl=120), ref="a1")
    assert reply == {
        "type": "authed",
        "user": {"id": "alice", "name": "Alice"},
        "expires_in": reply["expires_in"],
        "ref": "a1",
    }
    # Whole seconds left until exp.
    assert isinstance(reply["expires_in"], int)
    assert 115 <= reply["expires_in"] <= 120


def test_the_name_defaults_to_the_sub(memory_app, ws_client):
    client = ws_client(memory_app, auth=False)
    assert auth(client, make_token("bob"))["user"] == {"id": "bob", "name": "bob"}


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "join", "room": "lobby"},
        {"type": "leave", "room": "lobby"},
        {"type": "publish", "room": "lobby", "data": 1},
        {"type": "refresh", "token": "x.y.z"},
    ],
    ids=lambda frame: frame["type"],
)
def test_requests_before_auth_are_unauthenticated(memory_app, ws_client, frame):
    client = ws_client(memory_app, auth=False)
    reply = client.request({**frame, "ref": "r"})
    assert reply == {
        "type": "error",
        "code": "unauthenticated",
        "message": reply["message"],
        "ref": "r",
    }
    assert "auth" in reply["message"]
    client.assert_alive()  # ping needs no token


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "join"}, "invalid_message"),
        ({"type": "join", "room": "no spaces"}, "invalid_room"),
        ({"type": "auth"}, "invalid_message"),
        ({"type": "auth", "token": 42}, "invalid_message"),
    ],
    ids=["not-json", "unknown-type", "no-room", "bad-room", "no-token", "int-token"],
)
def test_a_malformed_frame_gets_its_own_error_before_auth(
    memory_app, ws_client, frame, code
):
    client = ws_client(memory_app, auth=False)
    assert client.request(frame)["code"] == code


def test_a_second_auth_is_refused_use_refresh(memory_app, ws_client):
    client = ws_client(memory_app)
    reply = auth(client, make_token("someone-else"))
    assert reply["code"] == "invalid_message"
    assert "refresh" in reply["message"]
    client.assert_alive()


def test_refresh_moves_the_expiry_and_keeps_the_user(memory_app, ws_client):
    user = new_user()
    client = ws_client(memory_app, auth=False)
    assert auth(client, make_token(user, ttl=60))["expires_in"] <= 60
    reply = client.request(
        {"type": "refresh", "token": make_token(user, ttl=600), "ref": "f"}
    )
    assert reply == {
        "type": "refreshed",
        "expires_in": reply["expires_in"],
        "ref": "f",
    }
    assert 595 <= reply["expires_in"] <= 600


def test_a_refresh_for_another_sub_is_invalid_and_the_old_expiry_stands(
    memory_app, ws_client
):
    client = ws_client(memory_app, auth=False)
    token = make_token("carol", ttl=1)
    exp = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
    auth(client, token)
    reply = client.request({"type": "refresh", "token": make_token("mallory")})
    assert reply["code"] == "invalid_token"
    assert "sub" in reply["message"]
    assert client.close_code(
        timeout=exp + LEEWAY + CLOSE_WITHIN + SLACK - time.time()
    ) == (UNAUTHORIZED)


def test_refresh_applies_new_rooms_to_later_requests(memory_app, ws_client, new_room):
    user = new_user()
    kept, other = f"a:{new_room()}", f"b:{new_room()}"
    client = ws_client(memory_app, auth=False)
    auth(client, make_token(user, rooms=["a:*", "b:*"]))
    client.join(kept)
    client.request({"type": "refresh", "token": make_token(user, rooms=["a:*"])})
    assert client.request({"type": "join", "room": other})["code"] == "forbidden"
    # Rooms already joined stay joined.
    client.publish(kept, "still a member")
    assert client.message()["data"] == "still a member"


def test_refresh_applies_a_new_name(memory_app, ws_client, new_room):
    """After a refresh, the token's name is the sender's name on later messages."""
    user, room = new_user(), new_room()
    client = ws_client(memory_app, auth=False)
    auth(client, make_token(user, name="Before"))
    client.join(room)
    client.request({"type": "refresh", "token": make_token(user, name="After")})
    client.publish(room, "renamed")
    assert client.message()["from"] == {"id": user, "name": "After"}


def test_no_auth_within_auth_timeout_closes_with_4401(shared_app, ws_client):
    app = shared_app(AUTH_TIMEOUT="0.5")
    client = ws_client(app, auth=False)
    opened = time.monotonic()
    client.assert_alive()  # a ping does not count as authenticating
    assert client.close_code(timeout=0.5 + CLOSE_WITHIN + SLACK) == UNAUTHORIZED
    assert time.monotonic() - opened >= 0.5
    assert client.ws.close_reason == "authentication timed out"


def test_authenticating_in_time_cancels_the_timeout(
    shared_app, ws_client, assert_quiet
):
    app = shared_app(AUTH_TIMEOUT="0.5")
    client = ws_client(app)
    assert_quiet(client, seconds=1.0)  # twice the timeout: still open
    client.assert_alive()


def test_an_expired_token_closes_with_4401_within_1_s_after_exp_plus_leeway(
    memory_app, ws_client
):
    client = ws_client(memory_app, auth=False)
    exp = time.time() + 1
    auth(client, make_token(new_user(), exp=exp))
    code = client.close_code(timeout=exp + LEEWAY + CLOSE_WITHIN + SLACK - time.time())
    closed_at = time.time()
    assert code == UNAUTHORIZED
    # The timer may fire a clock tick early.
    assert closed_at >= exp + LEEWAY - 0.05, "closed before the leeway was over"
    assert client.ws.close_reason == "token expired"


def test_a_refresh_before_expiry_keeps_the_connection(memory_app, ws_client):
    user = new_user()
    client = ws_client(memory_app, auth=False)
    first_exp = time.time() + 1
    auth(client, make_token(user, exp=first_exp))
    client.request({"type": "refresh", "token": make_token(user, ttl=60)})
    # Past the first token's end and the close that would have followed it: no
    # frame and no close (a fixed wait, since it proves an absence).
    client.assert_quiet(first_exp + LEEWAY + CLOSE_WITHIN + SLACK - time.time())
    client.assert_alive()


def test_a_token_within_the_leeway_is_still_accepted(memory_app, ws_client):
    client = ws_client(memory_app, auth=False)
    reply = auth(client, make_token(new_user(), exp=time.time() - 2))
    assert reply["type"] == "authed"
    assert reply["expires_in"] == 0


# ------------------------------------------------------------------ invalid tokens


def _now() -> int:
    return int(time.time())


INVALID_TOKENS = {
    "wrong signature": (
        lambda: make_token("x", secret="another-key-" + "0" * 32),
        "signature",
    ),
    "alg none": (
        lambda: (
            b64(b'{"alg":"none","typ":"JWT"}')
            + "."
            + b64(json.dumps({"sub": "x", "exp": _now() + 60}).encode())
            + "."
        ),
        "algorithm",
    ),
    "HS512 header": (
        lambda: jwt.encode(
            {"sub": "x", "exp": _now() + 60}, AUTH_SECRET, algorithm="HS512"
        ),
        "algorithm",
    ),
    "RS256 header": (
        lambda: hand_signed(
            {"alg": "RS256", "typ": "JWT"}, {"sub": "x", "exp": _now() + 60}
        ),
        "algorithm",
    ),
    "expired": (lambda: make_token("x", exp=_now() - 60), "expired"),
    "missing sub": (
        lambda: hand_signed({"alg": "HS256", "typ": "JWT"}, {"exp": _now() + 60}),
        "sub",
    ),
    "missing exp": (
        lambda: hand_signed({"alg": "HS256", "typ": "JWT"}, {"sub": "x"}),
        "exp",
    ),
    "sub over 64 characters": (lambda: make_token("x" * 65), "sub"),
    "sub with a control character": (lambda: make_token("bad\nsub"), "sub"),
    "empty sub": (lambda: make_token(""), "sub"),
    "name over 64 characters": (lambda: make_token("x", name="n" * 65), "name"),
    "name with a control character": (lambda: make_token("x", name="a\x07b"), "name"),
    "rooms not a list": (lambda: make_token("x", rooms="lobby"), "rooms"),
    "rooms with a number": (lambda: make_token("x", rooms=["lobby", 7]), "rooms"),
    "publish not a list": (lambda: make_token("x", publish={"lobby": True}), "publish"),
    "over 4096 bytes": (lambda: make_token("x", padding="p" * 4100), "4096"),
    "one part": (lambda: "abcdef", "JWT"),
    "two parts": (lambda: "abc.def", "JWT"),
    "not base64": (lambda: "@@@.###.$$$", "encoding"),
}


@pytest.mark.parametrize("case", list(INVALID_TOKENS), ids=list(INVALID_TOKENS))
def test_an_invalid_token_gets_invalid_token_and_the_connection_lives_on(
    memory_app, ws_client, case
):
    build, says = INVALID_TOKENS[case]
    client = ws_client(memory_app, auth=False)
    reply = auth(client, build(), ref="bad")
    assert reply["type"] == "error", reply
    assert reply["code"] == "invalid_token"
    assert reply["ref"] == "bad"
    assert says.lower() in reply["message"].lower(), reply["message"]
    # Still open, still unauthenticated, and a good token works next.
    client.assert_alive()
    assert (
        client.request({"type": "join", "room": "lobby"})["code"] == "unauthenticated"
    )
    assert auth(client, make_token("x"))["type"] == "authed"


def test_an_invalid_refresh_keeps_the_connection_and_its_user(memory_app, ws_client):
    client = ws_client(memory_app)
    reply = client.request(
        {"type": "refresh", "token": make_token("x", exp=_now() - 60)}
    )
    assert reply["code"] == "invalid_token"
    assert "expired" in reply["message"]
    client.assert_alive()
    client.join("lobby")  # still authenticated


# ------------------------------------------------------------------- room patterns


def test_rooms_patterns_decide_joins(memory_app, ws_client, new_room):
    team = new_room()
    client = ws_client(memory_app, auth=False)
    auth(client, make_token(new_user(), rooms=[f"{team}:*", "user:alice"]))
    client.join(f"{team}:general")
    client.join(f"{team}:")  # * stands for any run, the empty one too
    client.join("user:alice")
    for room in (f"{team}x:general", "user:alice2", "user:bob", "lobby"):
        reply = client.request({"type": "join", "room": room, "ref": room})
        assert reply["code"] == "forbidden", reply
        assert reply["ref"] == room
        assert room in reply["message"]
    # Leaving is always allowed.
    client.leave("user:alice")
    client.leave("lobby")


def test_publish_defaults_to_the_rooms_claim(memory_app, ws_client, new_room):
    allowed, other = new_room(), new_room()
    client = ws_client(memory_app, auth=False)
    auth(client, make_token(new_user(), rooms=[allowed]))
    client.publish(allowed, 1)
    assert client.request({"type": "publish", "room": other, "data": 1})["code"] == (
        "forbidden"
    )


def test_the_publish_claim_narrows_publishing(memory_app, ws_client, new_room):
    base = new_room()
    reader = ws_client(memory_app)
    reader.join(f"{base}:general")
    client = ws_client(memory_app, auth=False)
    auth(client, make_token(new_user(), rooms=[f"{base}:*"], publish=[f"{base}:chat"]))
    client.join(f"{base}:general")  # may read it
    reply = client.request({"type": "publish", "room": f"{base}:general", "data": "no"})
    assert reply["code"] == "forbidden"
    client.publish(f"{base}:chat", "yes")
    reader.assert_quiet()  # the refused publish reached nobody


def test_empty_rooms_allow_nothing(memory_app, ws_client):
    client = ws_client(memory_app, auth=False)
    auth(client, make_token(new_user(), rooms=[]))
    assert client.request({"type": "join", "room": "lobby"})["code"] == "forbidden"
    assert client.request({"type": "publish", "room": "lobby", "data": 1})["code"] == (
        "forbidden"
    )


# --------------------------------------------------------------------------- from


def test_from_is_the_senders_user_and_cannot_be_forged(memory_app, ws_client, new_room):
    room = new_room()
    alice = ws_client(memory_app, auth=False)
    auth(alice, make_token("alice-1", name="Alice"))
    bob = ws_client(memory_app)
    bob.join(room)
    reply = alice.request(
        {"type": "publish", "room": room, "data": "hi", "from": {"id": "bob"}}
    )
    assert reply == {"type": "published", "room": room}
    assert bob.message_text() == json.dumps(
        {
            "type": "message",
            "room": room,
            "data": "hi",
            "from": {"id": "alice-1", "name": "Alice"},
        }
    )


def test_from_crosses_processes_through_redis(redis_apps, ws_client, new_room):
    first, second = redis_apps
    room = new_room()
    alice = ws_client(first, auth=False)
    auth(alice, make_token("alice-2", name="Alice"))
    bob = ws_client(second, auth=False)
    auth(bob, make_token("bob-2", name="Bob"))
    alice.join(room)
    bob.join(room)
    alice.publish(room, "from A")
    bob.publish(room, "from B")
    for member in (alice, bob):
        got = {member.message()["data"]: None for _ in range(2)}
        assert len(got) == 2
    alice.publish(room, "again")
    assert bob.message() == {
        "type": "message",
        "room": room,
        "data": "again",
        "from": {"id": "alice-2", "name": "Alice"},
    }


# ------------------------------------------------------------------ AUTH_ANONYMOUS


def test_anonymous_connections_join_and_publish_without_from(
    shared_app, ws_client, new_room, assert_quiet
):
    app = shared_app(AUTH_ANONYMOUS="true", AUTH_TIMEOUT="0.5")
    room = new_room()
    anonymous = ws_client(app, auth=False)
    anonymous.join(room)
    anonymous.publish(room, "who am I")
    assert anonymous.message() == {"type": "message", "room": room, "data": "who am I"}
    # No timeout: still open well after AUTH_TIMEOUT.
    assert_quiet(anonymous, seconds=1.0)
    # It may still authenticate later; from then on its messages carry from.
    assert auth(anonymous, make_token("late", name="Late"))["type"] == "authed"
    anonymous.publish(room, "now I am")
    assert anonymous.message()["from"] == {"id": "late", "name": "Late"}


def test_anonymous_refresh_is_unauthenticated(shared_app, ws_client):
    app = shared_app(AUTH_ANONYMOUS="true")
    client = ws_client(app, auth=False)
    reply = client.request({"type": "refresh", "token": make_token("x")})
    assert reply["code"] == "unauthenticated"


def test_anonymous_apps_still_check_tokens(shared_app, ws_client):
    app = shared_app(AUTH_ANONYMOUS="true")
    client = ws_client(app, auth=False)
    assert auth(client, "a.b.c")["code"] == "invalid_token"
    client.assert_alive()


# -------------------------------------------------------------------- key rotation


NEW_KEY = "rotated-key-" + "1" * 32
THIRD_KEY = "unknown-key-" + "2" * 32


def test_key_rotation_keeps_connections_open(
    start_app, redis_server, ws_client, new_room
):
    """A rolling deploy: the old process knows the old key only, the new one has
    AUTH_SECRET=new and AUTH_SECRET_PREVIOUS=old. Clients with old tokens stay
    connected on both, refresh to new tokens, and every message still flows."""
    room = new_room()
    old = start_app(redis_server)
    new = start_app(redis_server, AUTH_SECRET=NEW_KEY, AUTH_SECRET_PREVIOUS=AUTH_SECRET)
    on_old = ws_client(old, auth=False)
    auth(on_old, make_token("u-old"))
    on_new_old_token = ws_client(new, auth=False)
    auth(on_new_old_token, make_token("u-mid"))
    on_new = ws_client(new, auth=False)
    auth(on_new, make_token("u-new", secret=NEW_KEY))
    for client in (on_old, on_new_old_token, on_new):
        client.join(room)

    # Renewed with the new key where the new key is known; the old token stands.
    reply = on_new_old_token.request(
        {"type": "refresh", "token": make_token("u-mid", secret=NEW_KEY)}
    )
    assert reply["type"] == "refreshed"
    # A key neither process knows is refused, also as the previous one's stand-in.
    stranger = ws_client(new, auth=False)
    assert auth(stranger, make_token("x", secret=THIRD_KEY))["code"] == "invalid_token"
    # The old process does not know the new key yet.
    assert auth(ws_client(old, auth=False), make_token("x", secret=NEW_KEY))[
        "code"
    ] == ("invalid_token")

    on_old.publish(room, "old")
    on_new.publish(room, "new")
    for client in (on_old, on_new_old_token, on_new):
        assert sorted(client.message()["data"] for _ in range(2)) == ["new", "old"]


# ---------------------------------------------------------------------- settings


BAD_IDENTITY_SETTINGS = [
    ({"AUTH_SECRET": "short-secret-of-25-bytes!"}, "AUTH_SECRET", "short-secret"),
    (
        {"AUTH_SECRET_PREVIOUS": "prev-short-secret"},
        "AUTH_SECRET_PREVIOUS",
        "prev-short",
    ),
    ({"AUTH_SECRET": "", "AUTH_SECRET_PREVIOUS": "p" * 40}, "AUTH_SECRET", "ppppp"),
    ({"API_KEY": "api-key-too-short"}, "API_KEY", "api-key-too"),
    ({"AUTH_GUEST_ROOMS": "lobby,bad room"}, "AUTH_GUEST_ROOMS", None),
    ({"AUTH_GUEST_ROOMS": " , "}, "AUTH_GUEST_ROOMS", None),
    ({"AUTH_TIMEOUT": "0"}, "AUTH_TIMEOUT", None),
    ({"AUTH_GUEST_TTL": "a day"}, "AUTH_GUEST_TTL", None),
    ({"AUTH_ANONYMOUS": "sometimes"}, "AUTH_ANONYMOUS", None),
    ({"AUTH_GUEST": "perhaps"}, "AUTH_GUEST", None),
    ({"WS_MAX_CONNECTIONS_PER_CLIENT": "0"}, "WS_MAX_CONNECTIONS_PER_CLIENT", None),
]


@pytest.mark.parametrize(
    ("settings", "variable", "secret"),
    BAD_IDENTITY_SETTINGS,
    ids=[
        ",".join(f"{k}={v[:12]}" for k, v in s.items())
        for s, _, _ in BAD_IDENTITY_SETTINGS
    ],
)
def test_a_bad_identity_setting_stops_the_app_with_one_line(
    run_app, settings, variable, secret
):
    result = run_app(**settings)
    assert result.returncode != 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stdout}"
    assert variable in lines[0]
    if secret is not None:  # a key's value is never shown, not even in part
        assert secret not in result.stdout
    else:  # other values are named, as every setting's
        assert settings[variable].strip() in lines[0]


def test_redis_without_auth_secret_refuses_to_start(run_app, redis_server):
    result = run_app(REDIS_URL=redis_server.url, AUTH_SECRET="")
    assert result.returncode != 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    assert "AUTH_SECRET" in lines[0]
    assert "REDIS_URL" in lines[0]


def test_without_auth_secret_one_process_signs_with_a_random_key(start_app, ws_client):
    """The memory broker's one process makes its own key: guest tokens work,
    tokens made with any other key do not."""
    app = start_app(AUTH_SECRET="")
    status, _, body = app.http("POST", "/token", body=json.dumps({"name": "Solo"}))
    assert status == 200
    guest = ws_client(app, auth=False)
    assert auth(guest, json.loads(body)["token"])["type"] == "authed"
    client = ws_client(app, auth=False)
    assert auth(client, make_token("x"))["code"] == "invalid_token"


# -------------------------------------------------------------------------- logs


def test_tokens_and_keys_never_reach_the_log(start_app, ws_client, new_room):
    api_key = "the-api-key-" + "k" * 32
    app = start_app(API_KEY=api_key, LOG_LEVEL="DEBUG")
    good, bad = make_token("logged-user"), make_token("x", secret=THIRD_KEY)
    client = ws_client(app, auth=False)
    auth(client, bad)
    auth(client, good)
    client.request({"type": "refresh", "token": good})
    body = json.dumps({"room": new_room(), "data": 1})
    for key in (api_key, "wrong-" + api_key):
        app.http("POST", "/api/publish", {"Authorization": f"Bearer {key}"}, body)
    guest = app.http("POST", "/token", body=json.dumps({"name": "Logged"}))
    client.close()
    app.stop()
    log = app.log()
    for secret in (good, bad, api_key, AUTH_SECRET, json.loads(guest[2])["token"]):
        assert secret not in log
        # Nor its signature alone, in case a line cut it short.
        assert secret.rsplit(".", 1)[-1] not in log
