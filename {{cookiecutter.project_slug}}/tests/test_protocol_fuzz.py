"""Property-based fuzz of the protocol parser: whatever a client sends, ``parse``
returns a request or raises the contract's error, never anything else.

Derandomized, so a run is repeatable and a failure reproduces as it is printed;
hypothesis shows the smallest failing input.
"""

import json

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from {{ cookiecutter.package_name }} import protocol

# The ten error codes of the contract (README, Errors).
CONTRACT_CODES = {
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "invalid_room",
    "too_many_rooms",
    "rate_limited",
    "broker_unavailable",
    "unauthenticated",
    "invalid_token",
    "forbidden",
}
TYPES = ("auth", "refresh", "join", "leave", "publish", "ping")
# The requests that carry a token (a string) instead of a room.
TOKEN_TYPES = ("auth", "refresh")
MAX_REF = 64  # the contract's longest ref
MISSING = object()  # a key left out of a generated request

# A few hundred examples a property: the three run in about two seconds, and the
# deadline is off because a loaded CI machine makes single examples slow.
FUZZ = settings(max_examples=300, deadline=None, derandomize=True)

# Any JSON value Python's json module writes (NaN and Infinity are not JSON).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
valid_rooms = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
# Room names that are nearly right: empty, too long, a foreign character.
bad_rooms = st.text(max_size=70).filter(
    lambda room: not protocol.ROOM_RULE.fullmatch(room)
) | st.from_regex(r"[A-Za-z0-9]{65,70}", fullmatch=True)
wrong_types = (
    st.none() | st.booleans() | st.integers() | st.lists(st.text(), max_size=2)
)
# Bits of JSON syntax, so random text is often almost JSON.
json_ish = st.text(
    alphabet='{}[]":,.-+0123456789eEtrufalsn \\ujoinpgyedmhk', max_size=60
)
# A token is any string to the parser (verifying it is the connection's job); some
# are shaped like a JWT.
tokens = st.text() | st.from_regex(
    r"[A-Za-z0-9_-]{1,40}\.[A-Za-z0-9_-]{1,40}\.[A-Za-z0-9_-]{0,40}", fullmatch=True
)


def outcome(text: str) -> protocol.Request | protocol.ProtocolError:
    """Parse ``text``; anything but a request or the contract's error fails."""
    try:
        request = protocol.parse(text)
    except protocol.ProtocolError as error:
        assert error.code in CONTRACT_CODES, error.code
        frame = json.loads(error.reply())
        assert frame["type"] == "error" and frame["code"] == error.code
        assert isinstance(frame["message"], str) and frame["message"].strip()
        assert set(frame) <= {"type", "code", "message", "ref"}
        return error
    assert isinstance(request, protocol.Request)
    assert request.type in TYPES
    return request


def broken_rules(message) -> set[str]:
    """The contract codes this decoded frame deserves; empty when it is valid."""
    if not isinstance(message, dict):
        return {"invalid_json"}
    codes = set()
    ref = message.get("ref")  # null counts as no ref
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF):
        codes.add("invalid_message")
    kind = message.get("type", MISSING)
    if not isinstance(kind, str):
        return codes | {"invalid_message"}
    if kind not in TYPES:
        return codes | {"unknown_type"}
    if kind in TOKEN_TYPES:
        if not isinstance(message.get("token", MISSING), str):
            codes.add("invalid_message")
        return codes
    if kind != "ping":
        room = message.get("room", MISSING)
        if not isinstance(room, str):
            codes.add("invalid_message")
        elif not protocol.ROOM_RULE.fullmatch(room):
            codes.add("invalid_room")
    if kind == "publish" and "data" not in message:
        codes.add("invalid_message")
    return codes


@FUZZ
@given(st.text() | json_ish)
@example("")
@example("NaN")
@example("-Infinity")
@example("1e999")
@example('{"type": "publish", "room": "r", "data": 1e999}')
@example('{"type": "publish", "room": "r", "data": NaN}')
@example("[" * 100_000)  # nesting past the recursion limit
@example("9" * 5_000)  # past Python's limit on digits in an int
@example('{"type": "ping", "ref": "\\ud800"}')  # a lone surrogate, escaped
@example('{"type": "ping", "type": "join", "room": "r"}')  # a key twice
@example('{"type": "auth", "token": "a.b.c", "token": 5}')
@example('{"type": "refresh", "token": "\\udfff"}')
def test_any_text_gets_a_request_or_a_contract_error(text):
    outcome(text)


@FUZZ
@given(json_values)
def test_any_json_value_gets_a_request_or_a_contract_error(value):
    result = outcome(json.dumps(value))
    if not isinstance(value, dict):
        assert isinstance(result, protocol.ProtocolError)
        assert result.code == "invalid_json"


@st.composite
def almost_valid_requests(draw) -> dict:
    """A request of one of the six types, or close to one: each field right,
    missing, out of range or of the wrong type, plus stray keys."""
    message = draw(
        st.dictionaries(st.sampled_from(["extra", "Type", "rooms", "x"]), json_values)
    )
    fields = {  # key: (right, nearly right)
        "type": (
            st.sampled_from(TYPES),
            st.sampled_from(["JOIN", "pong", "authed", "Auth", "", "x"]),
        ),
        "room": (valid_rooms, bad_rooms),
        "data": (json_values, json_values),
        # Nearly right: the token wrapped in a list or an object.
        "token": (
            tokens,
            st.lists(tokens, min_size=1, max_size=1)
            | st.fixed_dictionaries({"token": tokens}),
        ),
        "ref": (st.text(max_size=MAX_REF), st.text(min_size=MAX_REF + 1)),
    }
    for key, (right, nearly) in fields.items():
        # Mostly right, so that a fair share of requests is valid; hypothesis
        # shrinks towards 0, the right value.
        kind = draw(st.integers(0, 9))
        if kind < 7:
            message[key] = draw(right)
        elif kind == 7:
            message[key] = draw(nearly)
        elif kind == 8:
            message[key] = draw(wrong_types)
        # 9: the key is missing
    return message


@FUZZ
@given(almost_valid_requests())
@example({"type": "publish", "room": "r"})
@example({"type": "ping", "ref": None})
@example({"type": "dance", "ref": 5})
@example({"type": "auth"})
@example({"type": "auth", "token": None, "ref": "a"})
@example({"type": "refresh", "token": 5})
@example({"type": "auth", "token": "", "room": "a b"})
@example({"type": "join", "room": "r", "token": 5})
def test_almost_valid_requests_get_the_right_answer(message):
    """Valid: a request with the frame's fields. Not: an error whose code names a
    broken rule, carrying the frame's ref unless the ref was the fault."""
    result = outcome(json.dumps(message))
    codes = broken_rules(message)
    # Shown by --hypothesis-show-statistics: how often each outcome was tried.
    kind = result.code if isinstance(result, protocol.ProtocolError) else result.type
    event(kind if codes else f"valid {kind}")
    ref = message.get("ref")
    if codes:
        assert isinstance(result, protocol.ProtocolError), (message, result)
        assert result.code in codes, (message, result.code, codes)
        ref_is_valid = isinstance(ref, str) and len(ref) <= MAX_REF
        assert result.ref == (ref if ref_is_valid else None)
        return
    assert isinstance(result, protocol.Request), (message, result)
    assert result.type == message["type"]
    assert result.ref == ref
    if result.type == "ping":
        assert (result.room, result.data, result.token) == (None, None, None)
        assert json.loads(protocol.pong(ref)) == _with_ref({"type": "pong"}, ref)
        return
    if result.type in TOKEN_TYPES:
        # The token as it came, and nothing else taken from the frame.
        assert result.token == message["token"]
        assert (result.room, result.data) == (None, None)
        user = {"id": "u-1", "name": "Ann"}
        reply = (
            protocol.authed(user, 60, ref)
            if result.type == "auth"
            else protocol.refreshed(60, ref)
        )
        expected = (
            {"type": "authed", "user": user, "expires_in": 60}
            if result.type == "auth"
            else {"type": "refreshed", "expires_in": 60}
        )
        assert json.loads(reply) == _with_ref(expected, ref)
        return
    assert result.token is None
    assert result.room == message["room"]
    assert result.room is not None  # every other request names its room
    if result.type == "publish":
        # The same JSON value comes out as went in (-0.0 and 0.0 told apart).
        assert json.dumps(result.data) == json.dumps(message["data"])
        # The frame for the members: without a sender (an anonymous connection),
        # and with one, as the last member, set by the server.
        anonymous = protocol.publish_text(result.room, result.data, None, ref)
        assert anonymous == protocol.message(result.room, result.data)
        assert json.loads(anonymous) == {
            "type": "message",
            "room": message["room"],
            "data": message["data"],
        }
        sender = {"id": "u-1", "name": "Ann"}
        signed = protocol.publish_text(result.room, result.data, sender, ref)
        assert signed == protocol.message(result.room, result.data, sender)
        fields = json.loads(signed)
        assert list(fields) == ["type", "room", "data", "from"]
        assert fields == {**json.loads(anonymous), "from": sender}
    reply = {"join": protocol.joined, "leave": protocol.left}.get(
        result.type, protocol.published
    )(result.room, ref)
    past = {"join": "joined", "leave": "left", "publish": "published"}[result.type]
    assert json.loads(reply) == _with_ref({"type": past, "room": result.room}, ref)


def _with_ref(frame: dict, ref: str | None) -> dict:
    return {**frame, "ref": ref} if ref is not None else frame
