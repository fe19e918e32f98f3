"""A client that stops reading must cost the others nothing: the same flood is
timed without it and with it, on one app, and the app's memory is watched."""

import json
import threading
import time
from pathlib import Path

import pytest

CLOSE, TEXT = 0x8, 0x1
# Four readers, as a small room; each gets every message of a FLOOD_MESSAGES flood
# of PAD-sized messages (4.8 MB each): many times WS_MAX_PENDING_BYTES (1 MiB).
READERS = 4
FLOOD_MESSAGES = 300
PAD = "x" * 16_000
# Published WINDOW at a time, each window acknowledged before the next: a steady
# stream at the app's pace rather than one burst that only measures queueing.
WINDOW = 10
# Below this, latency differences on a shared 2-core machine are scheduler noise.
LATENCY_FLOOR = 0.01
# What a slow consumer may add to the app's peak memory: its own pending bytes
# (WS_MAX_PENDING_BYTES, the default 1 MiB), twice for the frames being encoded,
# plus allocator slack.
SLOW_CONSUMER_MEMORY = 2 * 1048576 + 8 * 1048576


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (uvicorn's workers)."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        proc = Path(f"/proc/{current}")
        try:
            status = (proc / "status").read_text()
            for task in (proc / "task").iterdir():
                pids += map(int, (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited meanwhile
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


class MemoryWatch:
    """The peak RSS of an app's processes, sampled in a thread until stopped."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = rss_bytes(pid)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(0.02):  # sampling interval
            self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak


def flood(publisher, readers, room: str) -> dict:
    """Publish FLOOD_MESSAGES stamped with their send time; every reader must
    receive every one, in order. Returns latency figures over all deliveries."""
    # Per reader: (arrival time, message frame) for each message.
    arrivals: list[list[tuple[float, dict]]] = [[] for _ in readers]

    def read(client, into):
        while len(into) < FLOOD_MESSAGES:
            frame = json.loads(client.ws.recv(timeout=30))
            into.append((time.monotonic(), frame))

    threads = [
        threading.Thread(target=read, args=(client, into), daemon=True)
        for client, into in zip(readers, arrivals, strict=True)
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    for first in range(0, FLOOD_MESSAGES, WINDOW):
        for seq in range(first, first + WINDOW):
            data = [seq, time.monotonic(), PAD]
            publisher.send({"type": "publish", "room": room, "data": data})
        for _ in range(WINDOW):
            assert publisher.reply() == {"type": "published", "room": room}
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a reader did not get the whole flood"
    latencies = []
    for into in arrivals:
        assert [frame["data"][0] for _, frame in into] == list(range(FLOOD_MESSAGES))
        latencies += [at - frame["data"][1] for at, frame in into]
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "completion": max(at for into in arrivals for at, _ in into) - started,
    }


@pytest.mark.slow
def test_slow_consumer_costs_the_others_nothing(
    start_app, redis_server, ws_client, raw_ws, new_room, record_property
):
    """The same flood to four readers, without and then beside a client that never
    reads: the readers get every message, in order, with p99 latency and completion
    within 2x; the app's peak memory grows by at most the slow client's share; the
    slow client gets an in-order prefix, then 1013."""
    app = start_app(
        redis_server,
        # The publisher floods on purpose; the rate limit is not under test.
        WS_RATE_LIMIT="100000",
        WS_RATE_BURST="100000",
    )
    room = new_room()
    readers = [ws_client(app) for _ in range(READERS)]
    for reader in readers:
        reader.join(room)
    publisher = ws_client(app)
    flood(publisher, readers, room)  # warm-up: buffers and caches at full size

    watch = MemoryWatch(app.process.pid)
    alone = flood(publisher, readers, room)
    peak_alone = watch.stop()

    # A tiny receive window, so the kernel cannot absorb the flood for it.
    _, _, slow = raw_ws(app, rcvbuf=4096)
    slow.send_text(json.dumps({"type": "join", "room": room}))
    assert slow.recv_json() == {"type": "joined", "room": room}
    watch = MemoryWatch(app.process.pid)
    beside = flood(publisher, readers, room)
    peak_beside = watch.stop()

    for name in ("p50", "p99", "completion"):
        record_property(f"{name} without the slow client (ms)", ms(alone[name]))
        record_property(f"{name} with the slow client (ms)", ms(beside[name]))
    record_property("peak RSS without the slow client (MiB)", mib(peak_alone))
    record_property("peak RSS with the slow client (MiB)", mib(peak_beside))
    assert beside["p99"] <= 2 * max(alone["p99"], LATENCY_FLOOR), (alone, beside)
    assert beside["completion"] <= 2 * max(alone["completion"], LATENCY_FLOOR)
    assert peak_beside - peak_alone <= SLOW_CONSUMER_MEMORY, (
        f"a slow client added {mib(peak_beside - peak_alone)} MiB"
    )

    # The slow client reads at last: an in-order prefix of the flood, then 1013.
    seen = 0
    while True:
        opcode, payload = slow.recv_frame(timeout=10)
        if opcode == CLOSE:
            assert int.from_bytes(payload[:2], "big") == 1013
            break
        assert opcode == TEXT, f"unexpected frame {opcode:#x}"
        assert json.loads(payload)["data"][0] == seen
        seen += 1
    assert seen < FLOOD_MESSAGES, "the slow consumer was never cut off"
    record_property("messages the slow client got before 1013", seen)
    publisher.assert_alive()


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def mib(size: int) -> float:
    return round(size / 1048576, 1)
