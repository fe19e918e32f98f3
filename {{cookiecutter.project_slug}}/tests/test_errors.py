"""Bad input gets an error frame with the contract's code; the connection lives on."""

import json

import pytest

LONG_REF = "x" * 65


def assert_error(frame: dict, code: str, ref: str | None = None) -> None:
    expected_keys = {"type", "code", "message"} | (
        {"ref"} if ref is not None else set()
    )
    assert frame.keys() == expected_keys, frame
    assert frame["type"] == "error"
    assert frame["code"] == code, frame
    assert isinstance(frame["message"], str) and frame["message"].strip()
    if ref is not None:
        assert frame["ref"] == ref


@pytest.mark.parametrize(
    "text",
    ["not json", "{", "", "[]", '[{"type": "ping"}]', '"ping"', "42", "null", "true"],
)
def test_invalid_json(memory_app, ws_client, text):
    client = ws_client(memory_app)
    assert_error(client.request(text), "invalid_json")
    client.assert_alive()


@pytest.mark.parametrize(
    "frame",
    [
        {"room": "lobby"},
        {"type": 7},
        {"type": None},
        {"type": ["join"]},
        {"type": "join"},
        {"type": "join", "room": 5},
        {"type": "join", "room": None},
        {"type": "leave"},
        {"type": "leave", "room": ["lobby"]},
        {"type": "publish", "room": "lobby"},
        {"type": "publish", "data": 1},
        {"type": "ping", "ref": 5},
        {"type": "ping", "ref": LONG_REF},
        {"type": "ping", "ref": "é" * 65},
        {"type": "join", "room": "lobby", "ref": LONG_REF},
    ],
    ids=lambda frame: json.dumps(frame)[:40],
)
def test_invalid_message(memory_app, ws_client, frame):
    client = ws_client(memory_app)
    assert client.request(frame)["code"] == "invalid_message"
    client.assert_alive()


def test_invalid_message_keeps_a_valid_ref(memory_app, ws_client):
    client = ws_client(memory_app)
    reply = client.request({"type": "join", "ref": "j1"})
    assert_error(reply, "invalid_message", ref="j1")


def test_over_long_ref_is_refused_and_nothing_is_done(memory_app, ws_client, new_room):
    room = new_room()
    client = ws_client(memory_app)
    reply = client.request({"type": "join", "room": room, "ref": LONG_REF})
    assert reply["type"] == "error" and reply["code"] == "invalid_message"
    assert reply.get("ref") is None or len(reply["ref"]) <= 64
    ws_client(memory_app).publish(room, "not for you")
    client.assert_quiet(0.3)


def test_ref_of_64_characters_is_accepted(memory_app, ws_client):
    client = ws_client(memory_app)
    for ref in ["x" * 64, "é" * 64]:
        assert client.request({"type": "ping", "ref": ref}) == {
            "type": "pong",
            "ref": ref,
        }


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "subscribe", "room": "lobby"},
        {"type": "JOIN", "room": "lobby"},
        {"type": ""},
        {"type": "message", "room": "lobby", "data": 1},
        {"type": "pong"},
    ],
    ids=lambda frame: repr(frame["type"]),
)
def test_unknown_type(memory_app, ws_client, frame):
    client = ws_client(memory_app)
    assert_error(client.request(frame), "unknown_type")
    assert_error(client.request({**frame, "ref": "u1"}), "unknown_type", ref="u1")
    client.assert_alive()


BAD_ROOMS = [
    "",
    "x" * 65,
    "a b",
    "room/1",
    "é",
    "lobby!",
    "a*",
    "lobby\n",
    "\nlobby",
    "lo\x00bby",
]


@pytest.mark.parametrize("room", BAD_ROOMS, ids=repr)
@pytest.mark.parametrize("kind", ["join", "leave", "publish"])
def test_invalid_room(memory_app, ws_client, kind, room):
    client = ws_client(memory_app)
    frame = {"type": kind, "room": room, "ref": "bad-room"}
    if kind == "publish":
        frame["data"] = "x"
    assert_error(client.request(frame), "invalid_room", ref="bad-room")
    client.assert_alive()


@pytest.mark.parametrize(
    "room", ["x" * 64, "a", "Az09_.:-", "chat:room-1.v2", "-", "..."], ids=repr
)
def test_valid_room_names(memory_app, ws_client, room):
    client = ws_client(memory_app)
    client.join(room)
    client.publish(room, room)
    assert client.message() == client.sent(room, room)
    client.leave(room)


def test_deeply_nested_data_is_published_or_refused_never_a_crash(
    memory_app, ws_client, new_room
):
    """Around the depth where Python's JSON reader or writer gives up (about
    1,000): each publish is done, or refused as invalid_json; never a 1011."""
    room = new_room()
    client, member = ws_client(memory_app), ws_client(memory_app)
    member.join(room)
    outcomes = set()
    for depth in range(900, 1040, 7):
        data = "[" * depth + "]" * depth
        # Built as text: json.dumps itself cannot write the deepest of these.
        fields = f'"room": "{room}", "data": {data}' + "}"
        # What members receive: the same, with the publisher as from.
        sent = fields[:-1] + f', "from": {json.dumps(client.user)}' + "}"
        reply = client.request('{"type": "publish", ' + fields)
        if reply["type"] == "error":
            assert reply["code"] == "invalid_json", reply
        else:
            assert reply == {"type": "published", "room": room}
            # Read as text: this process cannot parse JSON as deep as the app can.
            assert member.ws.recv(timeout=5) == '{"type": "message", ' + sent
        outcomes.add(reply["type"])
    client.assert_alive()
    assert outcomes == {"published", "error"}, "the depths missed the limit"


def test_error_leaves_other_clients_unaffected(memory_app, ws_client, new_room):
    room = new_room()
    faulty, member = ws_client(memory_app), ws_client(memory_app)
    member.join(room)
    faulty.join(room)
    for text in ["nope", '{"type": "dance"}', '{"type": "join", "room": "a b"}']:
        assert faulty.request(text)["type"] == "error"
    faulty.publish(room, "still works")
    for client in (member, faulty):
        assert client.message()["data"] == "still works"


def test_too_many_rooms(shared_app, ws_client, new_room):
    app = shared_app(WS_MAX_ROOMS="2")
    first, second, third = new_room(), new_room(), new_room()
    client = ws_client(app)
    client.join(first)
    client.join(second)
    reply = client.request({"type": "join", "room": third, "ref": "3rd"})
    assert_error(reply, "too_many_rooms", ref="3rd")
    # The refused join did nothing: the third room's messages do not come.
    other = ws_client(app)
    other.join(third)
    other.publish(third, "not for client")
    assert other.message()["data"] == "not for client"
    client.assert_quiet(0.3)
    # Joining a room it is already in does not pass the limit.
    client.join(first)
    # Leaving makes room for another.
    client.leave(first)
    client.join(third)
    other.publish(third, "now for client")
    assert client.message() == other.sent(third, "now for client")
    # The limit is per connection.
    fresh = ws_client(app)
    fresh.join(first)
    fresh.join(second)


def test_rate_limited_requests_are_dropped(shared_app, ws_client, new_room, wait_until):
    # One token every 2 s: the flood below takes far less. The flooder's auth
    # frame takes one of the six, which leaves a bucket of five for the flood.
    app = shared_app(WS_RATE_LIMIT="0.5", WS_RATE_BURST="6")
    room = new_room()
    member = ws_client(app)
    member.join(room)
    flooder = ws_client(app)
    sent = 10
    for index in range(sent):
        flooder.send(
            {"type": "publish", "room": room, "data": index, "ref": f"r{index}"}
        )
    replies = [flooder.reply() for _ in range(sent)]
    by_ref = {reply.get("ref"): reply for reply in replies}
    assert sorted(by_ref, key=str) == sorted(f"r{index}" for index in range(sent))
    accepted = []
    for index in range(sent):
        reply = by_ref[f"r{index}"]
        if reply["type"] == "published":
            assert reply == {"type": "published", "room": room, "ref": f"r{index}"}
            accepted.append(index)
        else:
            assert_error(reply, "rate_limited", ref=f"r{index}")
    # The full bucket, plus at most one token refilled while the frames arrived.
    assert accepted[:5] == [0, 1, 2, 3, 4] and len(accepted) <= 6, replies
    # Dropped requests were not done: members receive only the accepted ones.
    assert [member.message()["data"] for _ in accepted] == accepted
    member.assert_quiet(0.3)
    # Other connections have their own bucket.
    ws_client(app).assert_alive()

    # The bucket refills at WS_RATE_LIMIT tokens a second.
    def pong_again():
        return flooder.request({"type": "ping"})["type"] == "pong"

    wait_until(pong_again, 5, "the token bucket to refill", interval=0.2)
