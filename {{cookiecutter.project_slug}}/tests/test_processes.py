"""Several processes per dyno: Heroku sets WEB_CONCURRENCY (2 on 512 MB dynos).

Servers that can run several worker processes on one port do, and Redis makes
them one app: every member gets every message exactly once, whichever process
holds it. The others run one process whatever WEB_CONCURRENCY says.
"""

from test_shutdown import shut_down

SLUG = "{{ cookiecutter.project_slug }}"

# The processes this variant runs for WEB_CONCURRENCY=2.
PROCESSES = {% if cookiecutter.framework in ["fastapi", "django"] %}2{% else %}1{% endif %}
# Connections the workers accept are spread at random: enough clients that every
# process almost surely holds some (the chance that 40 all land on one of two is
# about 2 in a trillion), once every process is up.
CLIENTS = 40
# The port opens with the first worker; on a busy machine the second may take
# seconds more to boot, and until then the first accepts every connection.
BOOT_SECONDS = 20


def test_web_concurrency_processes_act_as_one(
    start_app, redis_server, ws_client, new_room, assert_quiet, wait_until
):
    # Every client is on 127.0.0.1, one client address, and a late worker can
    # make the test open many more than CLIENTS.
    app = start_app(
        redis_server, WEB_CONCURRENCY="2", WS_MAX_CONNECTIONS_PER_CLIENT="1000"
    )
    room = new_room()
    redis = redis_server.client()

    def subscribers() -> int:
        [(_, count)] = redis.pubsub_numsub(f"{SLUG}:{room}")
        return count

    clients = [ws_client(app) for _ in range(CLIENTS)]
    for client in clients:
        client.join(room)

    def every_process_holds_members() -> bool:
        if subscribers() >= PROCESSES:
            return True
        clients.append(ws_client(app))  # one more, while a late worker boots
        clients[-1].join(room)
        return False

    # Each process that holds members subscribes the room once.
    wait_until(every_process_holds_members, BOOT_SECONDS, "members on every process")
    assert subscribers() == PROCESSES
    redis.close()

    # A message from a client on one process, and one from each end of the list
    # (on whichever processes they are), reach every member exactly once.
    for sender in (clients[0], clients[-1]):
        sender.publish(room, {"from": clients.index(sender)})
    for client in clients:
        received = [client.message()["data"]["from"] for _ in range(2)]
        assert sorted(received) == [0, len(clients) - 1]
    assert_quiet(*clients)

    # SIGTERM to the dyno closes every connection, on every process, and exits 0.
    codes, status = shut_down(app, clients)
    assert set(codes) <= {1001, 1012}, codes
    assert status == 0
