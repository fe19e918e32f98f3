"""The request/reply protocol and room fan-out, on both brokers."""

import pytest

DATA_VALUES = [
    {"text": "hello"},
    [1, 2, {"nested": None}],
    'é ☃ 😀 \u2028 "quoted" \\ </script>',
    0,
    -1.5,
    True,
    None,
    {},
    "",
]


def test_join_replies_joined(broker_app, ws_client, new_room):
    client = ws_client(broker_app)
    room = new_room()
    assert client.request({"type": "join", "room": room}) == {
        "type": "joined",
        "room": room,
    }


def test_every_reply_carries_the_request_ref(broker_app, ws_client, new_room):
    client = ws_client(broker_app)
    room = new_room()
    ref = "r" * 64
    assert client.request({"type": "join", "room": room, "ref": "1"}) == {
        "type": "joined",
        "room": room,
        "ref": "1",
    }
    assert client.request(
        {"type": "publish", "room": room, "data": 1, "ref": "é-2"}
    ) == {"type": "published", "room": room, "ref": "é-2"}
    assert client.request({"type": "ping", "ref": ref}) == {"type": "pong", "ref": ref}
    assert client.request({"type": "ping", "ref": ""}) == {"type": "pong", "ref": ""}
    assert client.request({"type": "leave", "room": room, "ref": "3"}) == {
        "type": "left",
        "room": room,
        "ref": "3",
    }
    assert client.message() == client.sent(room, 1)
    client.assert_quiet()


def test_ping_replies_pong(broker_app, ws_client):
    client = ws_client(broker_app)
    assert client.request({"type": "ping"}) == {"type": "pong"}


def test_leave_replies_left(broker_app, ws_client, new_room):
    client = ws_client(broker_app)
    room = new_room()
    client.join(room)
    assert client.request({"type": "leave", "room": room}) == {
        "type": "left",
        "room": room,
    }


def test_message_reaches_members_only(broker_app, ws_client, new_room, assert_quiet):
    room, other_room = new_room(), new_room()
    members = [ws_client(broker_app), ws_client(broker_app)]
    for member in members:
        member.join(room)
    bystander = ws_client(broker_app)
    bystander.join(other_room)
    publisher = ws_client(broker_app)
    for data in DATA_VALUES:
        publisher.publish(room, data)
    for member in members:
        assert [member.message() for _ in DATA_VALUES] == [
            publisher.sent(room, data) for data in DATA_VALUES
        ]
    assert_quiet(*members, bystander, publisher)


def test_sender_receives_its_own_message_when_member(broker_app, ws_client, new_room):
    room = new_room()
    sender = ws_client(broker_app)
    sender.join(room)
    sender.send({"type": "publish", "room": room, "data": {"n": 1}})
    frames = [sender.next(), sender.next()]
    assert {"type": "published", "room": room} in frames
    assert sender.sent(room, {"n": 1}) in frames
    sender.assert_quiet()


def test_publish_without_joining(broker_app, ws_client, new_room):
    room = new_room()
    member = ws_client(broker_app)
    member.join(room)
    outsider = ws_client(broker_app)
    outsider.publish(room, "from outside")
    assert member.message() == outsider.sent(room, "from outside")
    outsider.assert_quiet()


def test_no_message_after_leave(broker_app, ws_client, new_room):
    room = new_room()
    leaver, stayer = ws_client(broker_app), ws_client(broker_app)
    leaver.join(room)
    stayer.join(room)
    leaver.leave(room)
    stayer.publish(room, "after leave")
    assert stayer.message() == stayer.sent(room, "after leave")
    leaver.assert_quiet()


def test_joining_twice_still_delivers_once(broker_app, ws_client, new_room):
    room = new_room()
    client = ws_client(broker_app)
    client.join(room)
    client.join(room)
    publisher = ws_client(broker_app)
    publisher.publish(room, "once")
    assert client.message() == publisher.sent(room, "once")
    client.assert_quiet()


def test_rejoin_after_leave(broker_app, ws_client, new_room):
    room = new_room()
    client = ws_client(broker_app)
    client.join(room)
    client.leave(room)
    client.join(room)
    publisher = ws_client(broker_app)
    publisher.publish(room, "back")
    assert client.message() == publisher.sent(room, "back")
    client.assert_quiet()


def test_closing_one_member_leaves_the_others_receiving(
    broker_app, ws_client, new_room
):
    room = new_room()
    gone, stays = ws_client(broker_app), ws_client(broker_app)
    gone.join(room)
    stays.join(room)
    gone.close()
    publisher = ws_client(broker_app)
    publisher.publish(room, "still here")
    assert stays.message() == publisher.sent(room, "still here")


def test_publish_order_per_publisher_exactly_once(
    broker_app, ws_client, new_room, assert_quiet
):
    """Two pipelining publishers (one of them a member): every member receives each
    publisher's messages in its order, each exactly once."""
    room = new_room()
    count = 25  # under the default burst of 40 with the join
    receivers = [ws_client(broker_app), ws_client(broker_app)]
    for receiver in receivers:
        receiver.join(room)
    member_publisher, outside_publisher = ws_client(broker_app), ws_client(broker_app)
    member_publisher.join(room)
    publishers = {"member": member_publisher, "outside": outside_publisher}
    for index in range(count):
        for name, publisher in publishers.items():
            publisher.send(
                {"type": "publish", "room": room, "data": {"from": name, "n": index}}
            )
    for publisher in publishers.values():
        replies = [publisher.reply() for _ in range(count)]
        assert replies == [{"type": "published", "room": room}] * count
    expected = {name: list(range(count)) for name in publishers}
    for client in [*receivers, member_publisher]:
        got = [client.message() for _ in range(2 * count)]
        for frame in got:  # each from its publisher
            assert frame == publishers[frame["data"]["from"]].sent(room, frame["data"])
        for name in publishers:
            numbers = [f["data"]["n"] for f in got if f["data"]["from"] == name]
            assert numbers == expected[name]
    assert_quiet(*receivers, member_publisher, outside_publisher)


def test_pipelined_requests_are_answered_in_order(broker_app, ws_client, new_room):
    """A client need not wait: join then publish sent back to back are done in
    that order, so the client is a member when its message goes out."""
    room = new_room()
    client = ws_client(broker_app)
    client.send({"type": "join", "room": room, "ref": "1"})
    client.send({"type": "publish", "room": room, "data": "mine", "ref": "2"})
    client.send({"type": "ping", "ref": "3"})
    assert [client.reply() for _ in range(3)] == [
        {"type": "joined", "room": room, "ref": "1"},
        {"type": "published", "room": room, "ref": "2"},
        {"type": "pong", "ref": "3"},
    ]
    assert client.message() == client.sent(room, "mine")
    client.assert_quiet(0.3)


def test_join_leave_churn_keeps_membership_right(broker_app, ws_client, new_room):
    """Quick join/leave sequences from two connections end with exactly the
    memberships the replies announced."""
    room = new_room()
    first, second = ws_client(broker_app), ws_client(broker_app)
    for _ in range(8):
        first.join(room)
        first.leave(room)
        second.join(room)
        second.leave(room)
    first.join(room)
    second.join(room)
    second.leave(room)
    publisher = ws_client(broker_app)
    publisher.publish(room, "after churn")
    assert first.message() == publisher.sent(room, "after churn")
    first.assert_quiet(0.3)
    second.assert_quiet(0.001)


@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_out_of_range_numbers_never_reach_members_as_non_json(
    broker_app, ws_client, new_room, number
):
    """1e400 parses, but no double holds it: it must not come out as Infinity,
    which JSON.parse (the demo page, any browser client) rejects."""
    room = new_room()
    member = ws_client(broker_app)
    member.join(room)
    publisher = ws_client(broker_app)
    publisher.send(
        '{"type": "publish", "room": "' + room + '", "data": ' + number + "}"
    )
    reply = publisher.reply()  # parsed strictly, as every frame
    if reply["type"] == "published":
        member.message()  # parsed strictly
    else:
        assert reply["type"] == "error"
        assert reply["code"] in ("invalid_json", "invalid_message")
        member.assert_quiet(0.3)
    publisher.assert_alive()
