"""The benchmark harness: its search and its result files (default lane), and its
quick lane (issue 5, slow lane): it runs end to end, and the order that holds by a
wide margin even at N = 300 on a busy 2-core machine holds.

No timing thresholds: the figures themselves belong in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path

import harness
import pytest
import report
from results import (
    E2E,
    E2E_PRECISION,
    Auth,
    Change,
    Config,
    Machine,
    Meta,
    Results,
    Search,
    ServerResults,
    Size,
    Slow,
    Step,
    Storm,
    dump,
    load,
)
from support import AVAILABLE, ROOT, require_redis, run_ok

SERVERS = [*AVAILABLE, *report.REFERENCES]


def step(rate: float, sustained: bool = True, receivers: int = 100) -> Step:
    """A steady-rate step at this rate, sustained or not (p99 of 2 s)."""
    sent = round(rate)
    return Step(
        publish_rate=rate,
        sent=sent,
        publish_seconds=1.0,
        expected=sent * receivers,
        delivered=sent * receivers,
        delivered_per_second=rate * receivers,
        p50=0.01,
        p99=0.02 if sustained else 2.0,
        load=0.5,
        client_cpu_max=0.3,
        server_cpu=0.4,
        server_cpu_seconds=sent * receivers * 30e-6,
        seconds=1.25,
    )


def searched(start: float, factor: float, steps: int, limit: float) -> Search:
    """harness.search against a server that sustains every rate up to limit."""

    async def measure(rate: float) -> Step:
        return step(rate, sustained=rate <= limit)

    return asyncio.run(harness.search(measure, start, factor, steps))


@pytest.mark.parametrize("start", [20, 1000], ids=["up", "down"])
def test_search_ends_within_the_precision_of_the_limit(start):
    found = searched(start, factor=2, steps=20, limit=137)
    assert found.best is not None
    best = found.best.publish_rate
    failed = min(s.publish_rate for s in found.steps if not s.sustained)
    assert best <= 137 < failed <= best * (1 + E2E_PRECISION) * (1 + 1e-9)
    # Bisection, not a sweep in steps of the precision.
    assert len(found.steps) <= 9, [s.publish_rate for s in found.steps]


def test_search_from_a_good_start_takes_few_steps():
    """A repeat starts at the rate the previous one found, in precision steps."""
    found = searched(130, factor=1 + E2E_PRECISION, steps=20, limit=137)
    assert [s.publish_rate for s in found.steps] == [130, 143]


def test_search_gives_up_when_nothing_is_sustained():
    found = searched(20, factor=2, steps=20, limit=0.1)
    assert found.best is None
    assert found.steps[-1].publish_rate >= harness.E2E_MIN_RATE


def test_search_stops_at_its_step_budget():
    assert len(searched(20, factor=2, steps=3, limit=1e9).steps) == 3


def sample() -> Results:
    """A small run of every phase, with two repeats that disagree."""
    size = Size(
        completions=[0.02, 0.03],
        lost=0,
        n=300,
        authenticated=True,
        client_processes=2,
        connect_seconds=0.1,
        connect_server_cpu=0.09,
        join_seconds=0.05,
        connect_client_cpu_max=0.2,
        rss_before=10_000_000,
        rss_idle=15_000_000,
        rss_after_rounds=15_500_000,
        server_cpu=0.3,
        client_cpu_max=0.1,
        client_cpu_total=0.2,
        load=0.5,
    )
    e2e = E2E(
        receivers=100,
        processes=2,
        searches=[
            Search([step(20), step(40), step(80, sustained=False), step(56.6)]),
            Search([step(56.6), step(62.2, sustained=False)]),
        ],
        idle_cpu=[0.001, 0.0016],
        at_fixed_rate=[
            step(5),
            dataclasses.replace(step(5), server_cpu_seconds=2.5e-3),
        ],
    )
    slow = Slow(
        receivers=20,
        pad=60000,
        rcvbuf=4096,
        sent_to_slow=8_400_000,
        p50_without=0.004,
        p50_with=0.005,
        lost=0,
        rss_start=20_000_000,
        rss_series=[20_500_000, 21_000_000],
        slow_closed=True,
        slow_close_code=1013,
        slow_bytes_received=1_000_000,
    )
    meta = Meta(
        command="python3 bench/run.py --quick",
        date="2026-12-01 00:00 UTC",
        machine=Machine("CPU", 2, 2**34, "6.1", "3.11.7", "7.0.15"),
        config=harness.QUICK,
        load_before=0.5,
        per_client_process=3000,
        connect_window=64,
        round_pause=0.05,
        fast={"WS_RATE_LIMIT": "1000000"},
        seconds=90.0,
        load_after=0.6,
        auth=Auth(secret_bytes=43, token_bytes=230, token_ttl=3600),
    )
    # Anonymous: connecting faster, on less CPU (60 µs less a connection) and
    # memory (1,500 bytes less), completing sooner.
    anonymous = dataclasses.replace(
        size,
        authenticated=False,
        connect_seconds=0.08,
        connect_server_cpu=0.072,
        rss_idle=size.rss_idle - 300 * 1500,
        completions=[0.016, 0.02],
    )
    # History off: completing a little sooner, and delivering more end to end.
    history_off = dataclasses.replace(size, completions=[0.018, 0.025])
    e2e_history_off = dataclasses.replace(
        e2e,
        searches=[Search([step(80)]), Search([step(100)])],
    )
    storms = [
        Storm(
            clients=300,
            missed=missed,
            connect_seconds=0.4,
            joined_seconds=0.5,
            recovered_seconds=0.5 + missed / 100,
            recovered=300,
            delivered=300 * missed,
            duplicates=0,
            out_of_order=0,
            redis_reads=1,
            server_cpu=0.45,
        )
        for missed in (10, 50)
    ]
    entry = ServerResults("websockets 17.4", 0.5, {"300": size}, e2e, slow, 0.01)
    results = {
        name: dataclasses.replace(
            entry,
            identity=True,
            anonymous={"300": anonymous},
            history=True,
            history_off={"300": history_off},
            e2e_history_off=e2e_history_off,
            storms=storms,
        )
        for name in AVAILABLE
    }
    results.update({name: entry for name in report.REFERENCES})
    return Results(meta, results)


def test_results_load_as_they_were_written(tmp_path):
    written = sample()
    dump(written, tmp_path / "results.json")
    loaded = load(Results, tmp_path / "results.json")
    assert loaded == written
    assert isinstance(loaded.meta.config, Config)
    assert isinstance(loaded.meta.config.sizes, tuple)


def test_report_shows_the_repeats_and_cpu_per_delivery():
    doc = report.markdown(sample())
    rates = doc.split("### The highest sustained rate", 1)[1].split("\n##")[0]
    # Highest sustained rate per repeat: 56.6 both times; 4 steps, then 2.
    row = "| websockets | 2 | 100 | 57 | 5,660 | 1.00× | 1.00× | 1.00× | 40% | 30% "
    assert f"{row}| 4 + 2 |" in rates, rates
    fixed = doc.split("### At 5 publishes/s", 1)[1].split("\n##")[0]
    # 500 deliveries of 30 µs each, then 2.5 ms of CPU for as many: 5 µs each;
    # less 1.25 s idle at 0.1 % and 0.16 % of a core: 27.5 and 1 µs.
    row = "| websockets | 10.0 | 20.0 | 0.1%–0.2% | 5.0–30.0 | 1.0–27.5 | 30% |"
    assert row in fixed, fixed


def test_report_shows_what_authentication_costs():
    doc = report.markdown(sample())
    section = doc.split("## What authentication costs", 1)[1].split("\n## ")[0]
    # 0.072 s and 0.09 s of CPU for 300 connections: 240 and 300 µs each.
    row = (
        "| websockets | 300 | 3,750 → 3,000 | 0.80× | 240 → 300 | +60 "
        "| 14.8 → 16.3 | +1,500 | 16.0 → 20.0 | 1.25× |"
    )
    assert row in section, section
    assert "authentication costs +60 µs of server CPU and +1,500 bytes" in section
    settings = doc.split("| server | what it is |", 1)[0]
    assert "AUTH_SECRET is a fixed 43-byte bench key" in settings, settings
    assert "WS_MAX_CONNECTIONS_PER_CLIENT" in settings, settings


def test_report_shows_what_history_costs_and_the_storm():
    data = sample()
    doc = report.markdown(data)
    section = doc.split("## What history costs", 1)[1].split("\n## ")[0]
    # p50 18 ms off, 20 ms on (the lower of two rounds); p99 25 and 30 ms.
    row = "| websockets | 300 | 18.0 → 20.0 | 1.11× | 25.0 → 30.0 | 3,000 → 3,000 |"
    assert row in section, section
    # End to end: 8,000 and 10,000 deliveries a second off (mean 9,000), and
    # 5,660 on (both repeats at 56.6/s): 0.63×, under the 0.7× target.
    assert "| websockets | 9,000 → 5,660 | 0.63× |" in section, section
    storm = doc.split("## A reconnect storm after a deploy", 1)[1].split("\n## ")[0]
    assert (
        "| websockets | 50 | 0.40 | 0.50 | 1.00 | 300 of 300 | 15,000 | 0, 0 | 1 |"
        in storm
    )
    assert "(recovery.png)" in storm
    targets = doc.split("## Targets", 1)[1].split("\n## ")[0]
    assert "| websockets: completion with history within 1.1× of without | " in targets
    # The sample's storm: 1 s and complete; its end-to-end ratio misses.
    assert (
        "each 50 behind recovered within 10 s | 1.00 s, 1 Redis reads | yes |"
        in targets
    )
    assert "≥ 0.7× of without | 0.63× | **no** |" in targets, targets
    # A client that missed a message, or got one twice, is not recovered.
    for name in AVAILABLE:
        data.results[name].storms[1].duplicates = 1
    doc = report.markdown(data)
    assert "| **300 of 300** |" in doc
    assert "1 Redis reads, **not every message** | **no** |" in doc


def test_report_of_a_template_before_history_says_nothing_of_it():
    data = sample()
    for name in AVAILABLE:
        data.results[name] = dataclasses.replace(
            data.results[name],
            history=False,
            history_off={},
            e2e_history_off=None,
            storms=[],
        )
    doc = report.markdown(data)
    assert "## What history costs" not in doc and "reconnect storm" not in doc


def test_report_of_a_template_before_identity_says_so():
    data = sample()
    data.meta.auth = None
    for name in AVAILABLE:
        data.results[name].identity = False
        data.results[name].anonymous = {}
    doc = report.markdown(data)
    assert "## What authentication costs" not in doc
    assert "the template measured has none" in doc


def test_tokens_are_what_the_apps_verify():
    """HS256 over the header and claims with AUTH_SECRET, as PyJWT checks it."""
    import base64
    import hashlib
    import hmac

    token = harness.token("3f2b", "Bench user 1")
    header, body, signature = token.split(".")

    def decoded(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert json.loads(decoded(header)) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(decoded(body))
    assert claims["sub"] == "3f2b" and claims["name"] == "Bench user 1"
    assert claims["exp"] - claims["iat"] == harness.TOKEN_TTL
    key = harness.AUTH_SECRET.encode()
    assert len(key) >= 32  # the apps refuse a shorter AUTH_SECRET
    expected = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    assert decoded(signature) == expected
    # One user per connection.
    users = harness.Users()
    subs = {json.loads(decoded(t.split(".")[1]))["sub"] for t in users.tokens(50)}
    assert len(subs) == 50


@pytest.mark.parametrize(
    "path", sorted((ROOT / "bench" / "changes").glob("*.json")), ids=lambda p: p.stem
)
def test_recorded_changes_load_whole_and_render(path: Path):
    change = load(Change, path)
    written = json.loads(path.read_text())
    # Records from before the connect rate, or the machine, was kept load it
    # as None.
    written.setdefault("machine", None)
    for sizes in written["results"].values():
        for figures in sizes.values():
            figures.setdefault("connect_rate", None)
    assert dataclasses.asdict(change) == written
    rows = [row for row in report.changes() if row.startswith(f"| {path.stem} |")]
    assert len(rows) == 1 and rows[0].count(" / ") == len(AVAILABLE), rows


def test_recorded_changes_are_in_the_order_of_their_numbers():
    rows = [
        row for row in report.changes() if row.startswith("| ") and "commit" not in row
    ]
    numbers = [int(row.split("|")[1].strip().split("-")[0]) for row in rows]
    assert numbers == sorted(numbers) and len(numbers) >= 10, numbers


@pytest.fixture(scope="module")
def quick() -> tuple[Results, Path]:
    """One quick run for the module: its results and its output folder."""
    require_redis()
    out = ROOT / "build" / "bench" / "quick"
    raw = ROOT / "build" / "bench" / "quick.json"
    raw.unlink(missing_ok=True)
    # About 5 min on this 2-core machine; the first run also builds the servers' venvs.
    run_ok(sys.executable, "bench/run.py", "--quick", cwd=ROOT, timeout=1500)
    return load(Results, raw), out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_lane_measures_every_server(quick):
    """Every server connected all its clients, delivered every round, sustained
    the first rate of each repeat's search and the fixed rate, and got through
    the slow-client phase; doc and chart exist."""
    data, out = quick
    cfg = data.meta.config
    assert sorted(data.results) == sorted(SERVERS)
    for name, entry in data.results.items():
        (size,) = entry.sizes.values()
        assert size.lost == 0 and len(size.completions) == cfg.rounds, name
        assert size.rss_per_connection > 0, name
        e2e = entry.e2e
        assert e2e and len(e2e.searches) == len(e2e.at_fixed_rate) == cfg.e2e_repeats
        first, again = e2e.searches[:2]
        assert first.steps[0].sustained, (name, first.steps[0])
        # The second repeat starts where the first ended.
        assert first.best and again.steps[0].publish_rate == first.best.publish_rate
        for fixed in e2e.at_fixed_rate:
            assert fixed.sustained and (fixed.cpu_us_per_delivery or 0) > 0, fixed
        assert entry.slow and entry.slow.lost == 0, name
    for name in AVAILABLE:
        # The variants' clients authenticated, and the anonymous run beside.
        entry = data.results[name]
        assert entry.identity, name
        ((n, size),) = entry.sizes.items()
        assert size.authenticated and size.connect_server_cpu > 0, name
        anonymous = entry.anonymous[n]
        assert not anonymous.authenticated and anonymous.lost == 0, name
        assert len(anonymous.completions) == cfg.rounds, name
        # History: the run with it off beside, end to end too; and the storm,
        # every client recovering every message it missed, once, in order, from
        # fewer Redis reads than clients (a read shared by a storm's joins).
        assert entry.history, name
        off = entry.history_off[n]
        assert off.lost == 0 and len(off.completions) == cfg.rounds, name
        assert entry.e2e_history_off and entry.e2e_history_off.searches, name
        assert [s.missed for s in entry.storms] == list(cfg.storm_missed), name
        for storm in entry.storms:
            assert storm.complete, (name, storm)
            assert 1 <= storm.redis_reads < storm.clients, (name, storm)
    doc = (out / "benchmarks.md").read_text()
    assert all(f"| {name} |" in doc for name in SERVERS)
    assert "| above idle (µs) |" in doc
    assert "## What authentication costs" in doc
    assert "## What history costs" in doc and "## A reconnect storm" in doc
    assert (out / "benchmarks.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "recovery.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_lane_keeps_the_robust_order(quick):
    """PEER-DJANGO (channel layer, a send per member through Redis) is several
    times slower than the websockets and django variants (one subscription per
    process), even at N = 300; and every variant closes the client that reads
    nothing with 1013, while its memory stays bounded."""
    results: dict[str, ServerResults] = quick[0].results

    def p50(name: str) -> float | None:
        (size,) = results[name].sizes.values()
        return size.p50

    assert (p50("PEER-DJANGO") or 0) > (p50("websockets") or 0)
    assert (p50("PEER-DJANGO") or 0) > (p50("django") or 0)
    for name in AVAILABLE:
        slow = results[name].slow
        assert slow and slow.slow_closed and slow.slow_close_code == 1013, (name, slow)
        # Bounded: far less than the stream the slow client left unread (LIMIT,
        # which buffers it all, grows by about two thirds of it).
        assert (slow.rss_growth or 0) < slow.sent_to_slow / 3, (name, slow)
