"""The benchmark's results as types: what harness.py measures and writes, what
report.py renders and tests/test_bench.py checks (standard library only).

On disk they are the JSON of ``dataclasses.asdict``: build/bench/results.json
and quick.json (`Results`), bench/changes/*.json (`Change`); ``load`` reads them
back. What a property derives from the measured fields is not stored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# p99 end-to-end latency past which a rate counts as not sustained (the 1 s).
E2E_P99_LIMIT = 1.0
# The search for the highest sustained rate ends when the highest rate sustained
# is within this of the lowest one not sustained.
E2E_PRECISION = 0.1


@dataclass
class Config:
    """A lane's sizes, counts and durations."""

    sizes: tuple[int, ...]
    # Of those, the sizes at which each variant with identity runs a second time
    # anonymously: authentication's cost, measured next to it.
    anonymous_sizes: tuple[int, ...]
    rounds: int
    e2e_receivers: int
    # The first search starts here and moves by this factor until it has a rate
    # that is sustained and one that is not; then it bisects.
    e2e_start_rate: float
    e2e_factor: float
    e2e_steps: int  # at most, per search
    e2e_step_seconds: float
    e2e_repeats: int
    slow_receivers: int
    slow_pad: int
    slow_rounds_before: int
    slow_rounds: int
    # Of the sizes, those at which each variant with history runs a second time
    # with HISTORY_SIZE=0 (and its end-to-end phase too): history's cost, measured
    # next to it. Defaults: runs from before history had none.
    history_off_sizes: tuple[int, ...] = ()
    # The reconnect storm: this many clients of one process, each this many
    # messages behind, per point of the recovery chart.
    storm_clients: int = 0
    storm_missed: tuple[int, ...] = ()


@dataclass
class Machine:
    cpu: str
    cores: int | None
    memory: int
    kernel: str
    python: str
    redis: str


@dataclass
class Auth:
    """How the clients of a variant with identity authenticate."""

    secret_bytes: int  # AUTH_SECRET: a fixed bench key this long
    token_bytes: int  # a token's length (they differ by a byte or two)
    token_ttl: float  # its exp - iat, seconds


@dataclass
class Meta:
    command: str
    date: str
    machine: Machine
    config: Config
    load_before: float
    per_client_process: int
    connect_window: int
    round_pause: float
    fast: dict[str, str]
    seconds: float = 0.0
    load_after: float = 0.0
    auth: Auth | None = None  # None: no variant measured had identity


@dataclass
class Rounds:
    """Broadcasts one at a time: publish -> the last receipt, each."""

    completions: list[float]
    lost: int  # by the first round not complete, which ends them

    @property
    def p50(self) -> float | None:
        return percentile(self.completions, 0.5)

    @property
    def p99(self) -> float | None:
        return percentile(self.completions, 0.99)


@dataclass
class Size(Rounds):
    """N idle connections, then broadcasts to them: one server, one process."""

    n: int
    # Whether the clients authenticated (a variant with identity) or not (an
    # anonymous run of one, a template before identity, a reference).
    authenticated: bool
    client_processes: int
    # From the first handshake to the last 101, or to the last authed.
    connect_seconds: float
    # The server's CPU seconds meanwhile, all its processes.
    connect_server_cpu: float
    join_seconds: float
    connect_client_cpu_max: float
    rss_before: int
    rss_idle: int
    rss_after_rounds: int
    server_cpu: float  # share of a core during the rounds
    client_cpu_max: float
    client_cpu_total: float
    load: float

    @property
    def connect_rate(self) -> float:
        return self.n / self.connect_seconds

    @property
    def rss_per_connection(self) -> float:
        return (self.rss_idle - self.rss_before) / self.n

    @property
    def cpu_us_per_connection(self) -> float:
        """The server's CPU per connection while connecting (authenticating)."""
        return self.connect_server_cpu / self.n * 1e6


@dataclass
class Step:
    """Publishing at one steady rate for a while, and what the receivers got."""

    publish_rate: float
    sent: int
    publish_seconds: float
    expected: int
    delivered: int
    delivered_per_second: float
    p50: float | None
    p99: float
    load: float
    client_cpu_max: float
    server_cpu: float  # the receiving process's share of a core
    # Every process of the server, from the first publish until the last receipt
    # was seen: this many seconds.
    server_cpu_seconds: float
    seconds: float

    @property
    def sustained(self) -> bool:
        """Every message delivered, with p99 within the limit."""
        return self.delivered == self.expected and self.p99 <= E2E_P99_LIMIT

    @property
    def cpu_us_per_delivery(self) -> float | None:
        if not self.delivered:
            return None
        return self.server_cpu_seconds / self.delivered * 1e6


@dataclass
class Search:
    """One search for the highest sustained rate: its steps, in order."""

    steps: list[Step]

    @property
    def best(self) -> Step | None:
        """The step at the highest sustained rate."""
        sustained = [step for step in self.steps if step.sustained]
        return max(sustained, key=lambda step: step.publish_rate, default=None)


@dataclass
class E2E:
    """Publisher and receivers on two processes sharing the Redis. Per repeat: a
    search for the highest sustained rate, the server's CPU (every process, share
    of a core) while nothing is published, then a step at one fixed rate."""

    receivers: int
    processes: int
    searches: list[Search]
    idle_cpu: list[float]
    at_fixed_rate: list[Step]

    @property
    def cpu_us_above_idle(self) -> list[float | None]:
        """Per repeat, the fixed-rate step's CPU per delivery beyond what the
        server spends idle in as long."""
        return [
            (step.server_cpu_seconds - idle * step.seconds) / step.delivered * 1e6
            if step.delivered
            else None
            for step, idle in zip(self.at_fixed_rate, self.idle_cpu, strict=True)
        ]


@dataclass
class Slow:
    """Broadcasts while one more client reads nothing."""

    receivers: int
    pad: int
    rcvbuf: int
    sent_to_slow: int
    p50_without: float | None
    p50_with: float | None
    lost: int
    rss_start: int
    rss_series: list[int]
    slow_closed: bool
    slow_close_code: int | None
    slow_bytes_received: int

    @property
    def ratio(self) -> float | None:
        if not self.p50_with or not self.p50_without:
            return None
        return self.p50_with / self.p50_without

    @property
    def rss_growth(self) -> int | None:
        return max(self.rss_series) - self.rss_start if self.rss_series else None


@dataclass
class Storm:
    """A deploy's reconnect storm on one process: ``clients`` connections, each
    ``missed`` messages behind, all reconnecting at once with ``since``."""

    clients: int
    missed: int
    # From the first handshake to the last authed, to the last joined, and to
    # the last missed message received: seconds.
    connect_seconds: float
    joined_seconds: float
    recovered_seconds: float
    recovered: int  # joined with "recovered": true
    delivered: int  # missed messages received, all clients
    duplicates: int  # a message received again
    out_of_order: int  # a message received before an earlier one
    # Script calls (EVALSHA) on Redis during the storm: nothing was published
    # then, so every one is a history read.
    redis_reads: int
    server_cpu: float  # the process's CPU seconds during the storm

    @property
    def complete(self) -> bool:
        """Every client recovered every message it missed, once, in order."""
        return (
            self.recovered == self.clients
            and self.delivered == self.clients * self.missed
            and not self.duplicates
            and not self.out_of_order
        )


@dataclass
class ServerResults:
    versions: str
    load_at_start: float
    sizes: dict[str, Size] = field(default_factory=dict)  # by str(n), as in JSON
    e2e: E2E | None = None
    slow: Slow | None = None
    other_work_cores: float = 0.0
    identity: bool = False  # a variant whose clients authenticate
    # The anonymous runs (AUTH_ANONYMOUS=true, no auth frame), by str(n).
    anonymous: dict[str, Size] = field(default_factory=dict)
    history: bool = False  # a variant with history (on, at its default size)
    # The runs with HISTORY_SIZE=0: by str(n), and the end-to-end phase.
    history_off: dict[str, Size] = field(default_factory=dict)
    e2e_history_off: E2E | None = None
    storms: list[Storm] = field(default_factory=list)  # by missed, ascending


@dataclass
class Results:
    """One run of the harness: results.json, or quick.json."""

    meta: Meta
    results: dict[str, ServerResults]


@dataclass
class Figures:
    """What the changes table keeps of one size."""

    p50: float | None
    p99: float | None
    rss_per_connection: float
    # Recorded since identity, whose target compares it with the runs before:
    # None in the files from before.
    connect_rate: float | None = None


@dataclass
class Change:
    """One --record run: the commit measured, per server and size its figures."""

    command: str
    date: str
    commit: str
    results: dict[str, dict[str, Figures]]
    # The CPU and cores it ran on (recorded since history; None before): rows of
    # different machines do not compare.
    machine: str | None = None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


T = TypeVar("T")


def dump(value: Results | Change, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(value), indent=1) + "\n")


def load(kind: type[T], path: Path) -> T:
    loaded: T = convert(kind, json.loads(path.read_text()))
    return loaded


def convert(kind: Any, value: Any) -> Any:
    """The JSON value ``value`` as the annotated type ``kind`` (a dataclass, a
    list, tuple or dict of one, an optional one, or a plain JSON type)."""
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(
            **{
                each.name: convert(hints[each.name], value[each.name])
                for each in dataclasses.fields(kind)
                if each.name in value  # else the field's default
            }
        )
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list:
        return [convert(args[0], item) for item in value]
    if origin is tuple:
        return tuple(convert(args[0], item) for item in value)
    if origin is dict:
        return {key: convert(args[1], item) for key, item in value.items()}
    if origin is types.UnionType:  # X | None
        (other,) = [arg for arg in args if arg is not type(None)]
        return None if value is None else convert(other, value)
    return value
