"""The benchmark run: servers, clients, measurements, then the document.

Run by bench/run.py inside the harness's venv (bench/requirements/tools.txt).
Every server runs from its own cached venv against one real redis-server started
here; the clients are bench/client.py processes driven over pipes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # tooling.py; bench/ is this script's own

import report  # noqa: E402
from report import REFERENCES  # noqa: E402
from results import (  # noqa: E402
    E2E,
    E2E_PRECISION,
    Auth,
    Change,
    Config,
    Figures,
    Machine,
    Meta,
    Results,
    Rounds,
    Search,
    ServerResults,
    Size,
    Slow,
    Step,
    Storm,
    dump,
)

from tooling import (  # noqa: E402
    FRAMEWORKS,
    ROOT,
    activated,
    cached_venv,
    free_port,
    web_command,
)

BUILD = ROOT / "build" / "bench"
# Figures kept by --record, one file a measured commit: the doc's changes table.
CHANGES = BENCH / "changes"
CLIENT = BENCH / "client.py"
PHASES = ["sizes", "e2e", "slow", "storm"]
# Handshakes in flight across all client processes (each until its 101, or its
# authed where clients authenticate): under every server's listen backlog
# (asyncio's default is 100), so no SYN is dropped and the connect rate measures
# the server rather than TCP's 1 s retransmit.
CONNECT_WINDOW = 64
# No client process holds more than this many sockets (the brief's ~5,000), so
# none nears the 20,000 file limit and several share the client-side work.
PER_CLIENT_PROCESS = 3000
# Between broadcast rounds: the server goes idle, so a round measures one
# fan-out and not the tail of the previous one.
ROUND_PAUSE = 0.05
# In the slow-client phase the point is the bytes piling up, not idle gaps.
SLOW_ROUND_PAUSE = 0.01
# A round not complete by then has lost messages; the size's rounds stop there.
ROUND_TIMEOUT = 60
# Publishes per second below which a search gives up: nothing keeps up.
E2E_MIN_RATE = 1.0
# The rate at which every server's CPU per delivery is measured: one that every
# server sustains. In docs/benchmarks.md's sweep at 1,000 receivers the slowest,
# PEER-DJANGO, sustained 7.5 publishes/s (p99 0.57 s, its receiving process at
# 96 % of a core) and not 11; about half that leaves it room on a busy machine
# (beside other work it sustained only 5.5/s).
E2E_FIXED_RATE = 4.0
# After a steady-rate step, how long the last messages may take to arrive
# before they count as not delivered (well past the 1 s p99 limit).
DRAIN_TIMEOUT = 10
# The slow client's receive buffer: small, so the server's side fills quickly.
SLOW_RCVBUF = 4096
# The benchmark's publisher sends far faster than a person types: the apps'
# per-connection rate limit (20/s) is raised for its process, nothing else.
FAST = {"WS_RATE_LIMIT": "1000000", "WS_RATE_BURST": "1000000"}
# The apps' default WS_MAX_CONNECTIONS, raised to N + 1 past it.
MAX_CONNECTIONS = 9000
# Identity: a variant that has it (its package has tokens.py) refuses to start
# with REDIS_URL and no AUTH_SECRET, and its clients authenticate first. The key
# is fixed and public, a benchmark's, so runs are alike; past the 32-byte minimum.
AUTH_SECRET = "bench-only-key-public-not-secret-0123456789"
# The storm's missed messages are numbered from here, clear of every other phase's.
STORM_SEQ = 10_000_000
# exp - iat of the clients' tokens: past any phase, so none expires mid-run (the
# apps close a connection at its exp with 4401); and each connection holds the
# timer of its expiry, as a real one does.
TOKEN_TTL = 3600


FULL = Config(
    sizes=(1000, 5000, 9000),
    # The size of the identity issue's connect-rate target.
    anonymous_sizes=(5000,),
    rounds=20,  # the minimum for p50/p99
    e2e_receivers=1000,
    e2e_start_rate=20,
    e2e_factor=2,
    # Enough for the widest search seen: from 20 up to 320 and down to within
    # 10 % of 160 is 8 steps; from 20 down to 5 and back up, 6.
    e2e_steps=10,
    e2e_step_seconds=2,
    e2e_repeats=2,
    slow_receivers=100,
    # 60,000-byte messages (under the apps' 64 KiB frame limit) x 160 rounds =
    # 9.6 MB toward the slow client: past the apps' 1 MiB WS_MAX_PENDING_BYTES
    # plus the ~4 MiB the kernel's socket buffers absorb on loopback (tcp_wmem).
    slow_pad=60000,
    slow_rounds_before=20,
    slow_rounds=160,
    # The history issue's sizes for "completion with history within 1.1× of
    # without".
    history_off_sizes=(5000, 9000),
    # The storm: 5,000 clients each 50 behind; around it, the points of
    # the chart, up to the apps' default HISTORY_SIZE (100: still recovered).
    storm_clients=5000,
    storm_missed=(1, 10, 25, 50, 100),
)
QUICK = Config(
    sizes=(300,),
    anonymous_sizes=(300,),
    rounds=10,  # the order check in tests/test_bench.py wants a steady p50
    e2e_receivers=100,
    e2e_start_rate=20,
    e2e_factor=2,
    # The lane runs the search, not to its end: every server sustains 40/s here.
    e2e_steps=2,
    e2e_step_seconds=0.5,
    e2e_repeats=2,
    slow_receivers=20,
    slow_pad=60000,
    slow_rounds_before=10,
    # 8.4 MB: still past the apps' bound and the kernel's buffers.
    slow_rounds=140,
    history_off_sizes=(300,),
    storm_clients=300,
    storm_missed=(10, 50),
)


@dataclass
class Server:
    name: str
    command: str
    cwd: Path
    python: Path
    app: bool  # speaks the template's protocol (join, publish); else raw relay
    env: dict[str, str] = field(default_factory=dict)
    versions: str = ""
    identity: bool = False  # its clients authenticate (the template's, since)
    history: bool = False  # it keeps history, on by default (since history)


# ---------------------------------------------------------------- processes


def tree(pid: int) -> list[int]:
    """pid and its descendants (uvicorn or a shell may stand between)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def rss_bytes(pid: int) -> int:
    total = 0
    for each in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def machine_busy() -> float:
    """CPU seconds all processes of the machine have run (user, nice, system).

    Interrupt time is left out: loopback traffic's softirq work is the run's own
    but is charged to no process.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(value) for value in fields[:3]) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds of this harness and everything it started, ended ones too."""
    total = 0.0
    for each in tree(os.getpid()):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


class OtherWork:
    """How many cores' worth of CPU processes outside this run used meanwhile."""

    def __init__(self) -> None:
        self.began = (time.monotonic(), machine_busy(), own_seconds())

    def cores(self) -> float:
        wall, busy, own = self.began
        other = (machine_busy() - busy) - (own_seconds() - own)
        return max(0.0, other) / (time.monotonic() - wall)


def cpu_seconds(pid: int) -> float:
    """CPU seconds pid and its descendants have run, to the nanosecond: the
    scheduler's count of each thread (/proc/<pid>/stat counts 10 ms ticks)."""
    nanoseconds = 0
    for each in tree(pid):
        with contextlib.suppress(OSError):  # the process ended meanwhile
            for task in Path(f"/proc/{each}/task").iterdir():
                with contextlib.suppress(OSError):  # so did the thread
                    nanoseconds += int((task / "schedstat").read_text().split()[0])
    return nanoseconds / 1e9


async def settled_rss(pid: int) -> int:
    """RSS once it stops moving: two readings 0.5 s apart within 1 %, or 5 s."""
    previous = rss_bytes(pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)  # poll interval
        current = rss_bytes(pid)
        if abs(current - previous) <= previous * 0.01:
            return current
        previous = current
    return previous


class Process:
    """A server started as Heroku would start it: its command under bash."""

    def __init__(self, server: Server, port: int, redis_url: str, log: Path) -> None:
        env = activated(server.python)
        # History is on at the apps' default, or off where a run says so: never
        # what the shell running the bench happens to set.
        env.pop("HISTORY_SIZE", None)
        env.update(server.env, PORT=str(port), REDIS_URL=redis_url)
        self.port = port
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                ["bash", "-c", server.command],
                cwd=server.cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    async def ready(self) -> None:
        """Return once the port accepts connections (Heroku's boot limit: 60 s)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"server exited {self.popen.returncode}: {self.log}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.1)  # poll interval
        raise RuntimeError(f"server not listening within 60 s: {self.log}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(30)  # Heroku's SIGKILL comes 30 s after SIGTERM
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


class Worker:
    """One bench/client.py process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin and proc.stdout, "start() pipes both"
        self.proc, self.stdin, self.stdout = proc, proc.stdin, proc.stdout

    @classmethod
    async def start(cls, python: Path) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            str(python),
            str(CLIENT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        return cls(proc)

    async def call(self, **cmd: Any) -> dict[str, Any]:
        self.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.stdin.drain()
        line = await self.stdout.readline()
        if not line:
            raise RuntimeError(f"client process died during {cmd['cmd']}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"client: {cmd['cmd']}: {answer['error']}")
        return answer

    async def cpu(self) -> float:
        seconds: float = (await self.call(cmd="cpu"))["cpu"]
        return seconds

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call(cmd="close"), 10)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


async def workers(python: Path, count: int) -> list[Worker]:
    return list(await asyncio.gather(*(Worker.start(python) for _ in range(count))))


async def busiest(clients: list[Worker], before: list[float], since: float) -> float:
    """The largest share of a core any of these client processes used since."""
    after = await asyncio.gather(*(w.cpu() for w in clients))
    wall = time.monotonic() - since
    return max((a - b) / wall for a, b in zip(after, before, strict=True))


def shares(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def histogram_percentile(histogram: dict[int, int], q: float) -> float:
    """Seconds at quantile q of client.py's 2 %-wide latency buckets (upper edge)."""
    total = sum(histogram.values())
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= q * total:
            return 1.02 ** (bucket + 1) / 1e6
    return float("nan")


# ---------------------------------------------------------------- identity


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JWT_HEADER = b64url(b'{"alg":"HS256","typ":"JWT"}')


def token(sub: str, name: str) -> str:
    """An HS256 JWT with the claims the template's tokens.mint gives one (sub,
    name, iat, exp), made by hand: hmac and base64 need no package in the venv
    the client processes share with the harness."""
    now = int(time.time())
    claims = {"sub": sub, "name": name, "iat": now, "exp": now + TOKEN_TTL}
    signed = f"{JWT_HEADER}.{b64url(json.dumps(claims).encode())}"
    key = AUTH_SECRET.encode()
    signature = hmac.new(key, signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64url(signature)}"


class Users:
    """The run's users, one per connection: a deployment's connections are
    mostly distinct people, each a token of their own, so the server holds an id
    and a name per connection, not one shared by thousands."""

    def __init__(self) -> None:
        self.count = 0

    def tokens(self, k: int) -> list[str]:
        found = []
        for _ in range(k):
            self.count += 1
            # A random UUID: the kind of id an identity provider issues, as long.
            found.append(token(str(uuid.uuid4()), f"Bench user {self.count}"))
        return found

    def one(self) -> str:
        return self.tokens(1)[0]


def auth_settings() -> Auth:
    return Auth(
        secret_bytes=len(AUTH_SECRET.encode()),
        token_bytes=len(token(str(uuid.uuid4()), "Bench user 1000")),
        token_ttl=TOKEN_TTL,
    )


# ---------------------------------------------------------------- measurements


@dataclass
class Connected:
    """What connecting N clients took: time, then the server's CPU seconds."""

    seconds: float  # the first handshake to the last 101, or authed
    server_cpu: float  # all the server's processes, meanwhile
    join_seconds: float  # then joining the room (an app's), all of them
    # The room's offset and epoch in the last joined (with history; else None).
    position: dict[str, Any] | None = None


class Run:
    def __init__(self, cfg: Config, tools: Path, redis_url: str, logs: Path) -> None:
        self.cfg = cfg
        self.tools = tools
        self.redis_url = redis_url
        self.logs = logs
        self.users = Users()

    def authenticates(self, server: Server, anonymous: bool) -> bool:
        """Whether this server's clients send an auth frame in this run."""
        return server.identity and not anonymous

    async def connect_publisher(
        self, server: Server, process: Process, publisher: Worker, anonymous: bool
    ) -> None:
        authenticated = self.authenticates(server, anonymous)
        await publisher.call(
            cmd="connect",
            publisher=True,
            host="127.0.0.1",
            port=process.port,
            path="/ws",
            token=self.users.one() if authenticated else None,
        )

    async def start(self, server: Server, label: str, **env: str) -> Process:
        log = self.logs / f"{server.name}-{label}.log"
        log.unlink(missing_ok=True)
        with_env = replace(server, env={**server.env, **env})
        process = Process(with_env, free_port(), self.redis_url, log)
        try:
            await process.ready()
        except BaseException:
            process.stop()
            raise
        return process

    async def connect(
        self,
        server: Server,
        process: Process,
        receivers: list[Worker],
        n: int,
        anonymous: bool = False,
    ) -> Connected:
        """Open n connections spread over the receivers (authenticated, for a
        variant with identity unless anonymous), then join them to the room (an
        app's): how long each took, and the server's CPU while connecting."""
        window = max(1, CONNECT_WINDOW // len(receivers))
        counts = shares(n, len(receivers))
        # Minted before the clock starts: a backend's work, not the server's.
        authenticated = self.authenticates(server, anonymous)
        tokens = [
            self.users.tokens(count) if authenticated else None for count in counts
        ]
        cpu = cpu_seconds(process.pid)
        answers = await asyncio.gather(
            *(
                worker.call(
                    cmd="connect",
                    host="127.0.0.1",
                    port=process.port,
                    path="/ws",
                    count=count,
                    window=window,
                    tokens=mine,
                )
                for worker, count, mine in zip(receivers, counts, tokens, strict=True)
            )
        )
        server_cpu = cpu_seconds(process.pid) - cpu
        failed = sum(answer["failed"] for answer in answers)
        if failed:
            failures = [answer["failures"] for answer in answers]
            raise RuntimeError(f"{failed} of {n} connections failed: {failures}")
        started = min(answer["started"] for answer in answers)
        opened = max(answer["opened"] for answer in answers)
        join_seconds = 0.0
        position = None
        if server.app:  # the references relay to every connection: no rooms
            joins = await asyncio.gather(*(w.call(cmd="join") for w in receivers))
            began = min(answer["started"] for answer in joins)
            join_seconds = max(answer["joined"] for answer in joins) - began
            position = joins[-1]["position"]
        return Connected(opened - started, server_cpu, join_seconds, position)

    async def rounds(
        self,
        server: Server,
        publisher: Worker,
        receivers: list[Worker],
        n: int,
        count: int,
        seq0: int,
        pad: str = "",
        pause: float = ROUND_PAUSE,
    ) -> Rounds:
        """``count`` broadcasts, one at a time: publish -> last receipt, each."""
        done = Rounds(completions=[], lost=0)
        for seq in range(seq0, seq0 + count):
            sent = await publisher.call(cmd="publish", app=server.app, seq=seq, pad=pad)
            answers = await asyncio.gather(
                *(
                    w.call(cmd="await", seq=seq, timeout=ROUND_TIMEOUT)
                    for w in receivers
                )
            )
            received = sum(answer["count"] for answer in answers)
            if received < n:
                done.lost = n - received
                break
            last = max(answer["last"] for answer in answers)
            done.completions.append(last - sent["t"])
            await asyncio.sleep(pause)
        return done

    async def size(
        self,
        server: Server,
        n: int,
        anonymous: bool = False,
        history_off: bool = False,
    ) -> Size:
        """Connect rate, RSS per idle connection and broadcast completion at N.

        anonymous: a variant with identity, run with AUTH_ANONYMOUS=true and no
        auth frame, to measure next to the authenticated run what identity costs.
        history_off: a variant with history, run with HISTORY_SIZE=0, for what
        history costs.
        """
        # The publisher is connection N + 1: the apps' limit (9,000 by default)
        # is raised by that one; and so is the per-client limit (every client
        # here is 127.0.0.1: one address, where a deployment's are many).
        most = str(max(MAX_CONNECTIONS, n + 1))
        env = {"WS_MAX_CONNECTIONS": most}
        if server.identity:
            env["WS_MAX_CONNECTIONS_PER_CLIENT"] = most
        if anonymous:
            env["AUTH_ANONYMOUS"] = "true"
        if history_off:
            env["HISTORY_SIZE"] = "0"
        label = f"n{n}" + ("-anonymous" if anonymous else "")
        label += "-history-off" if history_off else ""
        process = await self.start(server, label, **env)
        k = max(2, math.ceil(n / PER_CLIENT_PROCESS))
        publisher, *receivers = await workers(self.tools, 1 + k)
        try:
            await self.connect_publisher(server, process, publisher, anonymous)
            # Warm-up: the first publish imports and allocates what every later one
            # reuses, so it is not counted per connection below.
            await publisher.call(cmd="publish", app=server.app, seq=-1, pad="")
            rss_before = await settled_rss(process.pid)
            cpu = await asyncio.gather(*(w.cpu() for w in receivers))
            began = time.monotonic()
            connected = await self.connect(server, process, receivers, n, anonymous)
            connect_client_cpu_max = await busiest(receivers, cpu, began)
            rss_idle = await settled_rss(process.pid)
            server_cpu = cpu_seconds(process.pid)
            client_cpu = await asyncio.gather(*(w.cpu() for w in receivers))
            began = time.monotonic()
            rounds = await self.rounds(
                server, publisher, receivers, n, self.cfg.rounds, 0
            )
            wall = time.monotonic() - began
            client_cpu = [
                (after - before) / wall
                for before, after in zip(
                    client_cpu,
                    await asyncio.gather(*(w.cpu() for w in receivers)),
                    strict=True,
                )
            ]
            return Size(
                completions=rounds.completions,
                lost=rounds.lost,
                n=n,
                authenticated=self.authenticates(server, anonymous),
                client_processes=k,
                connect_seconds=connected.seconds,
                connect_server_cpu=connected.server_cpu,
                join_seconds=connected.join_seconds,
                connect_client_cpu_max=connect_client_cpu_max,
                rss_before=rss_before,
                rss_idle=rss_idle,
                rss_after_rounds=rss_bytes(process.pid),
                server_cpu=(cpu_seconds(process.pid) - server_cpu) / wall,
                client_cpu_max=max(client_cpu),
                client_cpu_total=sum(client_cpu),
                load=os.getloadavg()[0],
            )
        finally:
            await asyncio.gather(*(w.close() for w in (publisher, *receivers)))
            process.stop()

    async def e2e(self, server: Server, history_off: bool = False) -> E2E:
        """A publisher on one process, receivers on another; per repeat, a search
        for the highest sustained rate, the idle CPU, then a step at E2E_FIXED_RATE.

        LIMIT has no broker, so its publisher and receivers share its one process.
        history_off: both processes with HISTORY_SIZE=0.
        """
        cfg = self.cfg
        off = {"HISTORY_SIZE": "0"} if history_off else {}
        label = "-history-off" if history_off else ""
        origin = await self.start(server, f"e2e-publisher{label}", **FAST, **off)
        target = origin
        if server.name != "LIMIT":
            target = await self.start(server, f"e2e-receivers{label}", **off)
        m = cfg.e2e_receivers
        # Two receiving processes at least: at the top rates one would near a core.
        k = max(2, math.ceil(m / PER_CLIENT_PROCESS))
        publisher, *receivers = await workers(self.tools, 1 + k)
        searches: list[Search] = []
        idle: list[float] = []
        fixed: list[Step] = []
        try:
            await self.connect_publisher(server, origin, publisher, anonymous=False)
            await self.connect(server, target, receivers, m)
            stream = Stream(server, publisher, receivers, m, [origin, target])

            def at(rate: float) -> Awaitable[Step]:
                return stream.step(rate, cfg.e2e_step_seconds)

            start, factor = cfg.e2e_start_rate, cfg.e2e_factor
            for _ in range(cfg.e2e_repeats):
                searches.append(await search(at, start, factor, cfg.e2e_steps))
                idle.append(await stream.idle(cfg.e2e_step_seconds))
                fixed.append(await at(E2E_FIXED_RATE))
                best = searches[-1].best
                if best:  # the next repeat starts there, in steps of the precision
                    start, factor = best.publish_rate, 1 + E2E_PRECISION
        finally:
            await asyncio.gather(*(w.close() for w in (publisher, *receivers)))
            origin.stop()
            if target is not origin:
                target.stop()
        processes = 1 if target is origin else 2
        return E2E(m, processes, searches, idle, fixed)

    async def slow(self, server: Server) -> Slow:
        """Broadcasts with a client that reads nothing: memory, and the others."""
        cfg = self.cfg
        n = cfg.slow_receivers
        pad = "x" * cfg.slow_pad
        process = await self.start(server, "slow", **FAST)
        publisher, receiver, slow = await workers(self.tools, 3)
        try:
            await self.connect_publisher(server, process, publisher, anonymous=False)
            await self.connect(server, process, [receiver], n)
            before = await self.rounds(
                server,
                publisher,
                [receiver],
                n,
                cfg.slow_rounds_before,
                0,
                pad,
                SLOW_ROUND_PAUSE,
            )
            await slow.call(
                cmd="slow",
                host="127.0.0.1",
                port=process.port,
                path="/ws",
                join=server.app,
                rcvbuf=SLOW_RCVBUF,
                token=self.users.one() if server.identity else None,
            )
            rss_start = rss_bytes(process.pid)
            series = []
            during = Rounds(completions=[], lost=0)
            seq = cfg.slow_rounds_before
            chunk = max(1, cfg.slow_rounds // 10)  # ten RSS readings
            while seq < cfg.slow_rounds_before + cfg.slow_rounds:
                part = await self.rounds(
                    server, publisher, [receiver], n, chunk, seq, pad, SLOW_ROUND_PAUSE
                )
                during.completions += part.completions
                during.lost += part.lost
                seq += chunk
                series.append(rss_bytes(process.pid))
                if part.lost:
                    break
            fate = await slow.call(cmd="slow_check")
            return Slow(
                receivers=n,
                pad=cfg.slow_pad,
                rcvbuf=SLOW_RCVBUF,
                sent_to_slow=cfg.slow_rounds * cfg.slow_pad,
                p50_without=before.p50,
                p50_with=during.p50,
                lost=during.lost,
                rss_start=rss_start,
                rss_series=series,
                slow_closed=fate["closed"],
                slow_close_code=fate["code"],
                slow_bytes_received=fate["bytes"],
            )
        finally:
            await asyncio.gather(*(w.close() for w in (publisher, receiver, slow)))
            process.stop()

    async def storms(self, server: Server) -> list[Storm]:
        """A deploy's reconnect storm, once per point of cfg.storm_missed.

        The clients (storm_clients of them, one user each) connect to a process
        and join the room; then, per point, a fresh process starts, the old one
        gets SIGTERM (every client closed with 1012, a deploy), a publisher on a
        process of its own publishes that many messages, and every client
        reconnects at once to the fresh process with the position it had: the
        next point's old process is this one.
        """
        cfg = self.cfg
        n = cfg.storm_clients
        most = str(max(MAX_CONNECTIONS, n + 1))
        env = {"WS_MAX_CONNECTIONS": most, "WS_MAX_CONNECTIONS_PER_CLIENT": most}
        publishing = await self.start(server, "storm-publisher", **FAST)
        current = await self.start(server, "storm-0", **env)
        k = max(2, math.ceil(n / PER_CLIENT_PROCESS))
        publisher, *receivers = await workers(self.tools, 1 + k)
        found: list[Storm] = []
        try:
            await self.connect_publisher(server, publishing, publisher, False)
            position = (await self.connect(server, current, receivers, n)).position
            if position is None or position["offset"] is None:
                raise RuntimeError(f"{server.name}: joined carries no position")
            seq = STORM_SEQ
            for point, missed in enumerate(cfg.storm_missed, 1):
                print(f"bench: {server.name} storm, {missed} missed", flush=True)
                fresh = await self.start(server, f"storm-{point}", **env)
                current.stop()  # SIGTERM: 1012 to every client, as in a deploy
                current = fresh
                await publisher.call(cmd="publish_confirmed", count=missed, seq=seq)
                reads = script_calls(self.redis_url)
                cpu = cpu_seconds(current.pid)
                answers = await asyncio.gather(
                    *(
                        w.call(
                            cmd="storm",
                            host="127.0.0.1",
                            port=current.port,
                            path="/ws",
                            since=position,
                            first=seq,
                            missed=missed,
                            window=max(1, CONNECT_WINDOW // len(receivers)),
                        )
                        for w in receivers
                    )
                )
                found.append(
                    storm_of(
                        answers,
                        n,
                        missed,
                        script_calls(self.redis_url) - reads,
                        cpu_seconds(current.pid) - cpu,
                    )
                )
                seq += missed
                position = {**position, "offset": position["offset"] + missed}
        finally:
            await asyncio.gather(*(w.close() for w in (publisher, *receivers)))
            current.stop()
            publishing.stop()
        return found


def storm_of(
    answers: list[dict[str, Any]],
    clients: int,
    missed: int,
    redis_reads: int,
    server_cpu: float,
) -> Storm:
    """One storm from its client processes' answers: each step's end is the
    last of theirs, from the first handshake of any."""
    started = float(min(answer["started"] for answer in answers))

    def last(key: str) -> float:
        return float(max(answer[key] for answer in answers)) - started

    def total(key: str) -> int:
        return sum(int(answer[key]) for answer in answers)

    return Storm(
        clients=clients,
        missed=missed,
        connect_seconds=last("opened"),
        joined_seconds=last("joined"),
        recovered_seconds=last("recovered_at"),
        recovered=total("recovered"),
        delivered=total("delivered"),
        duplicates=total("duplicates"),
        out_of_order=total("out_of_order"),
        redis_reads=redis_reads,
        server_cpu=server_cpu,
    )


def script_calls(redis_url: str) -> int:
    """EVALSHA and EVAL calls Redis has run so far (INFO commandstats): the
    apps' history reads and appends are scripts."""
    cli = shutil.which("redis-cli")
    if cli is None:
        sys.exit("bench: redis-cli is missing: apt-get install -y redis-tools")
    info = subprocess.run(
        [cli, "-u", redis_url, "INFO", "commandstats"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    calls = 0
    for line in info.splitlines():
        name, _, stats = line.partition(":")
        if name in ("cmdstat_evalsha", "cmdstat_eval"):
            calls += int(stats.split("calls=", 1)[1].split(",", 1)[0])
    return calls


class Stream:
    """One publisher's messages to the receivers at steady rates, a step at a
    time, numbered on from step to step."""

    def __init__(
        self,
        server: Server,
        publisher: Worker,
        receivers: list[Worker],
        m: int,
        processes: list[Process],
    ) -> None:
        self.server = server
        self.publisher = publisher
        self.receivers = receivers
        self.m = m  # receiving connections
        self.pids = sorted({process.pid for process in processes})
        self.target = processes[-1].pid  # the receivers' process
        self.seq = 1_000_000  # clear of the warm-up's and the rounds' numbers

    def server_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    async def idle(self, seconds: float) -> float:
        """The server's CPU, all its processes, as a share of a core, while
        nothing is published (the clients stay connected)."""
        before, began = self.server_cpu(), time.monotonic()
        await asyncio.sleep(seconds)  # the measurement window, not a wait
        return (self.server_cpu() - before) / (time.monotonic() - began)

    async def step(self, rate: float, seconds: float) -> Step:
        """Publish ``rate`` messages a second for ``seconds``; wait until all have
        arrived (or DRAIN_TIMEOUT); what arrived, how late, at what CPU."""
        receivers = self.receivers
        await asyncio.gather(*(w.call(cmd="histogram") for w in receivers))  # reset
        cpu = await asyncio.gather(*(w.cpu() for w in receivers))
        target_cpu = cpu_seconds(self.target)
        server_cpu = self.server_cpu()
        began = time.monotonic()
        sent = await self.publisher.call(
            cmd="rate", app=self.server.app, rate=rate, seconds=seconds, seq=self.seq
        )
        expected = sent["sent"] * self.m
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while True:
            got = await asyncio.gather(
                *(
                    w.call(cmd="received", lo=self.seq, hi=self.seq + sent["sent"])
                    for w in receivers
                )
            )
            count = sum(answer["count"] for answer in got)
            if count >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)  # poll interval
        server_cpu = self.server_cpu() - server_cpu
        wall = time.monotonic() - began
        target_cpu = (cpu_seconds(self.target) - target_cpu) / wall
        histogram: dict[int, int] = {}
        for answer in await asyncio.gather(
            *(w.call(cmd="histogram") for w in receivers)
        ):
            for bucket, hits in answer["histogram"].items():
                histogram[int(bucket)] = histogram.get(int(bucket), 0) + hits
        last = max(answer["last"] for answer in got)
        self.seq += sent["sent"]
        return Step(
            publish_rate=rate,
            sent=sent["sent"],
            publish_seconds=sent["ended"] - sent["started"],
            expected=expected,
            delivered=count,
            delivered_per_second=count / max(last - sent["started"], 1e-9),
            p50=histogram_percentile(histogram, 0.5) if histogram else None,
            p99=histogram_percentile(histogram, 0.99) if histogram else math.inf,
            load=os.getloadavg()[0],
            client_cpu_max=await busiest(receivers, cpu, began),
            server_cpu=target_cpu,
            server_cpu_seconds=server_cpu,
            seconds=wall,
        )


async def search(
    measure: Callable[[float], Awaitable[Step]], start: float, factor: float, steps: int
) -> Search:
    """The highest sustained rate to within E2E_PRECISION, in at most ``steps``.

    From ``start``, up or down by ``factor`` until one rate was sustained and one
    was not; then the geometric mean of the two, until they are close enough.
    """
    found = Search(steps=[])
    sustained: float | None = None  # the highest rate sustained so far
    failed: float | None = None  # the lowest rate not sustained so far
    rate = start
    while len(found.steps) < steps and rate >= E2E_MIN_RATE:
        step = await measure(rate)
        found.steps.append(step)
        if step.sustained:
            sustained = rate
        else:
            failed = rate
        if failed is None:
            rate *= factor
        elif sustained is None:
            rate /= factor
        # The 1e-9: a bracket one factor of exactly the precision wide, in floats.
        elif failed <= sustained * (1 + E2E_PRECISION) * (1 + 1e-9):
            break
        else:
            rate = math.sqrt(sustained * failed)
    return found


# ---------------------------------------------------------------- setup


def bake(framework: str, tools: Path, template: Path = ROOT) -> Server:
    """Bake the variant with the template's defaults and install its venv."""
    out = BUILD / "bakes" / framework
    shutil.rmtree(out, ignore_errors=True)
    cookiecutter = tools.parent / "cookiecutter"
    subprocess.run(
        [
            cookiecutter,
            "--no-input",
            "--default-config",
            "-o",
            out,
            template,
            f"framework={framework}",
        ],
        check=True,
        capture_output=True,
    )
    (project,) = out.iterdir()
    # requirements-dev.txt, as the bake suite installs it: its venv is reused.
    python = cached_venv(project / "requirements-dev.txt")
    command = web_command(project)
    # One app process however the dyno is sized; every other setting default.
    env = {"WEB_CONCURRENCY": "1"}
    # A template before identity has no tokens.py and ignores these settings:
    # --template <an older checkout> runs as it always did, without auth.
    identity = any(project.glob("*/tokens.py"))
    if identity:
        env["AUTH_SECRET"] = AUTH_SECRET
        # All the bench's clients share one address: the per-client limit (100
        # by default) is raised to the process's, as WS_MAX_CONNECTIONS is.
        env["WS_MAX_CONNECTIONS_PER_CLIENT"] = str(MAX_CONNECTIONS)
    # Likewise history (on by default): an older template runs without it.
    history = any(project.glob("*/history.py"))
    return Server(
        framework,
        command,
        project,
        python,
        app=True,
        env=env,
        identity=identity,
        history=history,
    )


def references() -> list[Server]:
    uvicorn = (
        "uvicorn {} --host 127.0.0.1 --port $PORT --ws websockets-sansio "
        "--ws-per-message-deflate false --no-access-log --log-level warning"
    )
    refs = BENCH / "refs"
    req = BENCH / "requirements"
    return [
        Server("LIMIT", "python limit.py", refs, cached_venv(req / "limit.txt"), False),
        Server(
            "PEER",
            uvicorn.format("peer:app"),
            refs,
            cached_venv(req / "peer.txt"),
            False,
        ),
        Server(
            "PEER-DJANGO",
            uvicorn.format("peer_django:application"),
            refs,
            cached_venv(req / "peer-django.txt"),
            False,
        ),
    ]


KEY_PACKAGES = (
    "websockets",
    "fastapi",
    "starlette",
    "uvicorn",
    "aiohttp",
    "django",
    "channels",
    "channels-redis",
    "broadcaster",
    "redis",
    "hiredis",
    "uvloop",
)


def versions(python: Path) -> str:
    code = (
        "import importlib.metadata as m, sys\n"
        f"names = {KEY_PACKAGES!r}\n"
        "found = []\n"
        "for name in names:\n"
        "    try: found.append(f'{name} {m.version(name)}')\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(', '.join(found))\n"
    )
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


@contextlib.contextmanager
def redis_server(logs: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench: redis-server is missing: apt-get install -y redis-server")
    port = free_port()
    command = [binary, "--bind", "127.0.0.1", "--port", str(port)]
    # No persistence: pub/sub keeps nothing, and a fork for a save would skew a run.
    command += ["--save", "", "--appendonly", "no"]
    with open(logs / "redis.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10  # it starts in milliseconds
        while not listening(port):
            if time.monotonic() > deadline or process.poll() is not None:
                sys.exit(f"bench: redis-server did not start: {logs / 'redis.log'}")
            time.sleep(0.05)  # poll interval
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def machine() -> Machine:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    redis = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.split()
    return Machine(
        cpu=cpu,
        cores=os.cpu_count(),
        memory=memory,
        kernel=platform.release(),
        python=platform.python_version(),
        redis=next((w.split("=")[1] for w in redis if w.startswith("v=")), "?"),
    )


async def measure(
    cfg: Config, servers: list[Server], tools: Path, args: argparse.Namespace
) -> dict[str, ServerResults]:
    logs = BUILD / ("quick-logs" if args.quick else "logs")
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, ServerResults] = {}
    with redis_server(logs) as redis_url:
        run = Run(cfg, tools, redis_url, logs)
        for server in servers:
            other = OtherWork()
            entry = results[server.name] = ServerResults(
                versions=server.versions,
                load_at_start=os.getloadavg()[0],
                identity=server.identity,
                history=server.history,
            )
            for n in cfg.sizes if "sizes" in args.phases else ():
                print(f"bench: {server.name} N={n}", flush=True)
                entry.sizes[str(n)] = await run.size(server, n)
                # Each pair right after, on a fresh process: the difference is
                # what authentication or history costs, under the same conditions.
                if server.identity and n in cfg.anonymous_sizes:
                    print(f"bench: {server.name} N={n} anonymous", flush=True)
                    entry.anonymous[str(n)] = await run.size(server, n, anonymous=True)
                if server.history and n in cfg.history_off_sizes:
                    print(f"bench: {server.name} N={n} history off", flush=True)
                    entry.history_off[str(n)] = await run.size(
                        server, n, history_off=True
                    )
            if "e2e" in args.phases:
                print(f"bench: {server.name} end-to-end", flush=True)
                entry.e2e = await run.e2e(server)
                if server.history:
                    print(f"bench: {server.name} end-to-end history off", flush=True)
                    entry.e2e_history_off = await run.e2e(server, history_off=True)
            if "slow" in args.phases:
                print(f"bench: {server.name} slow client", flush=True)
                entry.slow = await run.slow(server)
            if "storm" in args.phases and server.history:
                entry.storms = await run.storms(server)
            entry.other_work_cores = other.cores()
    return results


def record(name: str, template: Path, data: Results) -> None:
    """Keep what the changes table shows of this run: which commit of the template
    was measured, and per server and size the completion and memory figures."""
    commit = subprocess.run(
        ["git", "-C", template, "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    kept = Change(
        command=data.meta.command,
        date=data.meta.date,
        commit=commit,
        results={
            server: {
                n: Figures(
                    size.p50, size.p99, size.rss_per_connection, size.connect_rate
                )
                for n, size in entry.sizes.items()
            }
            for server, entry in data.results.items()
        },
        machine=f"{data.meta.machine.cpu}, {data.meta.machine.cores} cores",
    )
    CHANGES.mkdir(exist_ok=True)
    dump(kept, CHANGES / f"{name}.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the smoke lane")
    parser.add_argument("--out", type=Path, help="where the .md and .png go")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help=f"a subset of {', '.join(FRAMEWORKS + REFERENCES)}",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=PHASES,
        default=PHASES,
        help="a subset of the measurements (for working on the harness)",
    )
    parser.add_argument(
        "--sizes", nargs="+", type=int, help="connection counts instead of the lane's"
    )
    parser.add_argument(
        "--anonymous-sizes",
        nargs="*",
        type=int,
        metavar="N",
        help="sizes at which each variant with identity also runs anonymously, "
        "for what authentication costs (default: the lane's, 5,000 or 300, if "
        "among the sizes; none given: none)",
    )
    parser.add_argument(
        "--template",
        type=Path,
        default=ROOT,
        help="bake the variants from this checkout (e.g. a git worktree of an "
        "earlier commit) instead of this one",
    )
    parser.add_argument(
        "--record",
        metavar="NAME",
        help="also keep the broadcast figures in bench/changes/NAME.json, for the "
        "doc's table of changes and their effect",
    )
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.sizes:
        cfg = replace(cfg, sizes=tuple(args.sizes))
    # An anonymous run is measured next to the authenticated one of its size.
    if args.anonymous_sizes is not None:
        if not set(args.anonymous_sizes) <= set(cfg.sizes):
            parser.error(f"--anonymous-sizes: not among the sizes {cfg.sizes}")
        cfg = replace(cfg, anonymous_sizes=tuple(args.anonymous_sizes))
    else:  # the lane's, those of them --sizes kept
        kept = tuple(n for n in cfg.anonymous_sizes if n in cfg.sizes)
        cfg = replace(cfg, anonymous_sizes=kept)
    # Likewise the runs with history off: the lane's, those among the sizes.
    kept = tuple(n for n in cfg.history_off_sizes if n in cfg.sizes)
    cfg = replace(cfg, history_off_sizes=kept)
    out = args.out or (BUILD / "quick" if args.quick else ROOT / "docs")
    tools = Path(sys.executable)
    started = time.monotonic()
    names = args.only or list(FRAMEWORKS + REFERENCES)
    servers = [bake(name, tools, args.template) for name in FRAMEWORKS if name in names]
    servers += [ref for ref in references() if ref.name in names]
    for server in servers:
        server.versions = versions(server.python)
    command = "python3 bench/run.py" + "".join(f" {arg}" for arg in sys.argv[1:])
    meta = Meta(
        command=command,
        date=time.strftime("%Y-%m-%d %H:%M %Z"),
        machine=machine(),
        config=cfg,
        load_before=os.getloadavg()[0],
        per_client_process=PER_CLIENT_PROCESS,
        connect_window=CONNECT_WINDOW,
        round_pause=ROUND_PAUSE,
        fast=FAST,
        auth=auth_settings() if any(s.identity for s in servers) else None,
    )
    results = asyncio.run(measure(cfg, servers, tools, args))
    meta.seconds = time.monotonic() - started
    meta.load_after = os.getloadavg()[0]
    data = Results(meta, results)
    out.mkdir(parents=True, exist_ok=True)
    raw = BUILD / ("quick.json" if args.quick else "results.json")
    dump(data, raw)
    if args.record:
        record(args.record, args.template, data)
    report.write(data, out)
    print(f"bench: {raw}, {out / 'benchmarks.md'} and .png in {meta.seconds:.0f} s")


if __name__ == "__main__":
    main()
