"""docs/benchmarks.md and its chart, from the harness's results (every number)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

from results import (
    E2E,
    E2E_P99_LIMIT,
    E2E_PRECISION,
    Change,
    Results,
    ServerResults,
    Step,
    Storm,
    load,
)

from tooling import FRAMEWORKS

REFERENCES = ("LIMIT", "PEER", "PEER-DJANGO")
KIB, MIB = 1024, 1024 * 1024
# The targets.
DYNO_BYTES = 512 * MIB  # a Standard-1X dyno
WEBSOCKETS_KIB = 16
# One client process's CPU share above which it, not the server, may set the pace.
CLIENT_BOUND = 0.85
# Other processes' average CPU (cores) during a server's runs worth a caveat.
OTHER_WORK = 0.1
# The history issue's targets: completion with history within 1.1× of without,
# the end-to-end maximum at least 0.7× of without, and the storm of 5,000
# clients each 50 messages behind recovered within 10 s.
HISTORY_COMPLETION = 1.1
HISTORY_E2E = 0.7
STORM_MISSED = 50
STORM_SECONDS = 10.0


def write(data: Results, out: Path) -> None:
    (out / "benchmarks.md").write_text(markdown(data))
    chart(data.results, out / "benchmarks.png")
    recovery_chart(data.results, out / "recovery.png")


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:,.1f}"


def cpu(share: float | None, client: bool = False) -> str:
    """A share of one core; a client process's is flagged when it may set the pace."""
    if share is None:
        return "—"
    return f"{share:.0%}" + (" ⚠" if client and share > CLIENT_BOUND else "")


def ratio(value: float | None, reference: float | None) -> str:
    if not value or not reference:
        return "—"
    return f"{value / reference:.2f}×"


def spread(values: list[float | None], show: Callable[[float | None], str]) -> str:
    """The lowest and highest of the repeats' values, or one where they agree."""
    present = [value for value in values if value is not None]
    if not present:
        return show(None)
    low, high = show(min(present)), show(max(present))
    return low if low == high else f"{low}–{high}"


def names(results: dict[str, ServerResults]) -> list[str]:
    return [name for name in FRAMEWORKS + REFERENCES if name in results]


def sizes(results: dict[str, ServerResults]) -> list[str]:
    found = {n for entry in results.values() for n in entry.sizes}
    return sorted(found, key=int)


def p50(results: dict[str, ServerResults], name: str, n: str) -> float | None:
    size = results[name].sizes.get(n) if name in results else None
    return size.p50 if size else None


def rss_per_connection(
    results: dict[str, ServerResults], name: str, n: str
) -> float | None:
    size = results[name].sizes.get(n) if name in results else None
    return size.rss_per_connection if size else None


def size_table(results: dict[str, ServerResults], n: str) -> list[str]:
    rows = [
        f"### N = {int(n):,}",
        "",
        "Connect: N connections from the first handshake to the last 101 or, "
        "where clients authenticate, the last `authed`, per second. "
        "Completion: publish → the last of N clients has the message, over "
        "the rounds. Ratios are this row's p50 completion over the reference's "
        "(below 1: faster). RSS: the server process after N idle connections; per "
        "connection: (RSS then − RSS before connecting) / N. CPU: share of one "
        "core during the rounds (server; busiest client process).",
        "",
        "| server | connect (conn/s) | completion p50 (ms) | p99 (ms) | ×LIMIT "
        "| ×PEER | ×PEER-DJANGO | RSS/conn (KiB) | RSS at N (MB) | server CPU "
        "| client CPU | rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    refs = {ref: p50(results, ref, n) for ref in REFERENCES}
    for name in names(results):
        row = results[name].sizes.get(n)
        if row is None:
            continue
        bound = " ⚠" if row.client_cpu_max > CLIENT_BOUND else ""
        rounds = len(row.completions)
        lost = f" ({row.lost} lost)" if row.lost else ""
        rows.append(
            f"| {name} | {row.connect_rate:,.0f} | {ms(row.p50)} "
            f"| {ms(row.p99)} | {ratio(row.p50, refs['LIMIT'])} "
            f"| {ratio(row.p50, refs['PEER'])} "
            f"| {ratio(row.p50, refs['PEER-DJANGO'])} "
            f"| {row.rss_per_connection / KIB:.1f} "
            f"| {row.rss_idle / MIB:,.0f} | {row.server_cpu:.0%} "
            f"| {row.client_cpu_max:.0%}{bound} | {rounds}{lost} |"
        )
    return rows


def memory_table(results: dict[str, ServerResults]) -> list[str]:
    n = max(sizes(results), key=int)
    rows = [
        f"### Memory per idle connection at N = {int(n):,}, as ratios",
        "",
        "This row's RSS per idle connection over the reference's (below 1: less).",
        "",
        "| server | RSS/conn (KiB) | ×LIMIT | ×PEER | ×PEER-DJANGO |",
        "|---|---:|---:|---:|---:|",
    ]

    refs = {ref: rss_per_connection(results, ref, n) for ref in REFERENCES}
    for name in names(results):
        mine = rss_per_connection(results, name, n)
        if mine is None:
            continue
        rows.append(
            f"| {name} | {mine / KIB:.1f} | {ratio(mine, refs['LIMIT'])} "
            f"| {ratio(mine, refs['PEER'])} | {ratio(mine, refs['PEER-DJANGO'])} |"
        )
    return rows


def signed(value: float) -> str:
    """A difference, with its sign (a true minus, like the tables' ×)."""
    return f"{value:+,.0f}".replace("-", "−")


def between(values: list[float], unit: str) -> str:
    """The lowest and the highest difference, or one where they agree."""
    low, high = signed(min(values)), signed(max(values))
    return f"{low} {unit}" if low == high else f"{low} to {high} {unit}"


def auth_table(results: dict[str, ServerResults]) -> list[str]:
    """Each variant with identity at the same N twice, as its clients
    authenticate and then anonymously: what authentication costs a connection."""
    pairs = [
        (name, n, results[name].anonymous[n], results[name].sizes[n])
        for name in names(results)
        for n in sorted(results[name].anonymous, key=int)
        if n in results[name].sizes
    ]
    if not pairs:
        return []
    cpu = [
        auth.cpu_us_per_connection - anon.cpu_us_per_connection
        for *_, anon, auth in pairs
    ]
    rss = [
        auth.rss_per_connection - anon.rss_per_connection for *_, anon, auth in pairs
    ]
    runs = "one pair of runs" if len(pairs) == 1 else f"{len(pairs)} pairs of runs"
    rows = [
        "## What authentication costs",
        "",
        "Each variant at the same N twice, on fresh processes, one right after "
        "the other: authenticated, as in the tables above (every client sends "
        "its auth frame after the 101 and is connected at `authed`; messages "
        "carry `from`), and "
        "anonymous (AUTH_ANONYMOUS=true, no auth frame, no `from`). In each cell "
        "anonymous → authenticated, then the difference. Connect: connections per "
        "second, to the 101 or to `authed`. Server CPU per connection: the server's "
        "CPU time from the first handshake to the last 101 or `authed`, over N (the "
        "handshake and admission; authenticated, also the auth frame, the token's "
        "HS256 check, the user, its expiry timer and the `authed` reply). RSS per "
        "idle connection and completion as above.",
        "",
        f"Per connection, authentication costs {between(cpu, 'µs')} of server "
        f"CPU and {between(rss, 'bytes')} of RSS ({runs}, one of each per "
        "variant and N: the figures of one run, with its noise).",
        "",
        "| server | N | connect (conn/s) | × | server CPU/conn (µs) | + µs "
        "| RSS/conn (KiB) | + bytes | completion p50 (ms) | × |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n, anon, auth in pairs:
        rows.append(
            f"| {name} | {int(n):,} "
            f"| {anon.connect_rate:,.0f} → {auth.connect_rate:,.0f} "
            f"| {ratio(auth.connect_rate, anon.connect_rate)} "
            f"| {anon.cpu_us_per_connection:,.0f} → "
            f"{auth.cpu_us_per_connection:,.0f} "
            f"| {signed(auth.cpu_us_per_connection - anon.cpu_us_per_connection)} "
            f"| {anon.rss_per_connection / KIB:.1f} → "
            f"{auth.rss_per_connection / KIB:.1f} "
            f"| {signed(auth.rss_per_connection - anon.rss_per_connection)} "
            f"| {ms(anon.p50)} → {ms(auth.p50)} | {ratio(auth.p50, anon.p50)} |"
        )
    return rows


def history_table(results: dict[str, ServerResults]) -> list[str]:
    """Each variant with history at the same N, and end to end, twice: with
    history at its default and with HISTORY_SIZE=0."""
    pairs = [
        (name, n, results[name].history_off[n], results[name].sizes[n])
        for name in names(results)
        for n in sorted(results[name].history_off, key=int)
        if n in results[name].sizes
    ]
    streams = [
        (name, without, within)
        for name in names(results)
        if (without := results[name].e2e_history_off) and (within := results[name].e2e)
    ]
    if not pairs and not streams:
        return []
    rows = [
        "## What history costs",
        "",
        "Each variant twice, on fresh processes, one right after the other: with "
        "history at its default (HISTORY_SIZE=100, as in the tables above: each "
        "publish is one script call on Redis that appends the message to the "
        "room's stream and publishes it, and every message carries `offset` and "
        "`epoch`), and with HISTORY_SIZE=0. In each cell off → on, then the ratio "
        f"(the targets: completion within {HISTORY_COMPLETION}×, the end-to-end "
        f"maximum at least {HISTORY_E2E}×).",
        "",
    ]
    if pairs:
        rows += [
            "| server | N | completion p50 (ms) | × | p99 (ms) | connect (conn/s) "
            "| RSS/conn (KiB) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, n, off, on in pairs:
            rows.append(
                f"| {name} | {int(n):,} | {ms(off.p50)} → {ms(on.p50)} "
                f"| {ratio(on.p50, off.p50)} | {ms(off.p99)} → {ms(on.p99)} "
                f"| {off.connect_rate:,.0f} → {on.connect_rate:,.0f} "
                f"| {off.rss_per_connection / KIB:.1f} → "
                f"{on.rss_per_connection / KIB:.1f} |"
            )
        rows.append("")
    if streams:
        rows += [
            "End to end (two processes, as below): the mean over the repeats of "
            "the deliveries a second at the highest sustained rate, and at the "
            "fixed rate the CPU per delivery of both processes.",
            "",
            "| server | max delivered (msg/s) | × | CPU/delivery (µs) |",
            "|---|---:|---:|---:|",
        ]
        for name, without, within in streams:
            best_off, best_on = mean_best(without), mean_best(within)
            cost_off = [step.cpu_us_per_delivery for step in without.at_fixed_rate]
            cost_on = [step.cpu_us_per_delivery for step in within.at_fixed_rate]
            rows.append(
                f"| {name} | {count(best_off)} → {count(best_on)} "
                f"| {ratio(best_on, best_off)} "
                f"| {spread(cost_off, tenths)} → {spread(cost_on, tenths)} |"
            )
    return rows


def storm_table(results: dict[str, ServerResults]) -> list[str]:
    storms = [(name, results[name].storms) for name in names(results)]
    storms = [(name, found) for name, found in storms if found]
    if not storms:
        return []
    clients = storms[0][1][0].clients
    rows = [
        "## A reconnect storm after a deploy",
        "",
        f"{clients:,} clients (one user each) are joined to one room on one "
        "process. Then, per row, a fresh process starts, the old one gets SIGTERM "
        "(every client closed with 1012, as in a deploy), a publisher on another "
        "process publishes the messages missed, and every client reconnects at "
        "once to the fresh process: handshake and auth (at most "
        "64 in flight, as when connecting above), then at once "
        '`{"type": "join", "room": R, "since": {"offset": N, "epoch": E}}` with '
        "the position it had. Seconds from the first handshake to the last "
        "`authed`, the last `joined`, and the last missed message received. "
        "Recovered: clients whose `joined` said `recovered: true` and that got "
        "every message missed, once each, in order. Redis reads: script calls "
        "on Redis during the storm (nothing is published then: each is a history "
        "read). Server CPU: the fresh process's, during the storm. A row with "
        "1 missed is mostly the reconnect itself (handshakes and auth, at about "
        "the connect rates above); the rows below add the replay.",
        "",
        "![recovery time against messages missed](recovery.png)",
        "",
        "| server | missed | connected (s) | joined (s) | recovered (s) "
        "| recovered clients | messages replayed | duplicates, out of order "
        "| Redis reads | server CPU (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, found in storms:
        for storm in found:
            whole = f"{storm.recovered:,} of {storm.clients:,}"
            rows.append(
                f"| {name} | {storm.missed} | {storm.connect_seconds:.2f} "
                f"| {storm.joined_seconds:.2f} | {storm.recovered_seconds:.2f} "
                f"| {whole if storm.complete else f'**{whole}**'} "
                f"| {storm.delivered:,} | {storm.duplicates}, {storm.out_of_order} "
                f"| {storm.redis_reads:,} | {storm.server_cpu:.2f} |"
            )
    return rows


def the_storm(entry: ServerResults) -> Storm | None:
    """The storm of the issue's target: STORM_MISSED messages behind."""
    return next((s for s in entry.storms if s.missed == STORM_MISSED), None)


def mean_best(e2e: E2E) -> float | None:
    """The mean over the repeats of the deliveries a second at the highest
    sustained rate."""
    found = at_best(e2e, lambda step: step.delivered_per_second)
    present = [value for value in found if value is not None]
    return statistics.fmean(present) if present else None


def at_best(e2e: E2E, figure: Callable[[Step], float]) -> list[float | None]:
    """A figure of each repeat's step at its highest sustained rate."""
    return [figure(search.best) if search.best else None for search in e2e.searches]


def mean_maximum(results: dict[str, ServerResults], name: str) -> float | None:
    """mean_best of the server's end-to-end phase: what the ratios compare."""
    e2e = results[name].e2e if name in results else None
    return mean_best(e2e) if e2e else None


def e2e_table(results: dict[str, ServerResults]) -> list[str]:
    first = next((r.e2e for r in results.values() if r.e2e), None)
    if first is None:
        return []
    fixed = first.at_fixed_rate[0].publish_rate
    rows = [
        "## End-to-end latency through Redis",
        "",
        "A publisher connected to one server process publishes at a steady rate; "
        "the receivers are connected to a second process of the same server "
        "sharing the Redis (LIMIT has no broker: one process). A rate is "
        f"sustained when every message arrives and p99 stays within "
        f"{E2E_P99_LIMIT:g} s. Each of {len(first.searches)} repeats searches for "
        "the highest sustained rate: up or down by a factor until one rate is "
        "sustained and one is not, then bisecting until they are within "
        f"{E2E_PRECISION:.0%} (a repeat starts from the previous one's rate). Then "
        f"it measures the server idle, and at {fixed:g} publishes/s (below). Two "
        "figures in a cell: the lowest and the highest of the repeats.",
        "",
        "### The highest sustained rate",
        "",
        "Max delivered: deliveries to clients per second at that rate; ratios: its "
        "mean over the repeats, this row's over the reference's (above 1: more). "
        "CPU: share of a core at that rate (the receiving server process; the "
        "busiest client process).",
        "",
        "| server | processes | receivers | max publishes/s | max delivered (msg/s) "
        "| ×LIMIT | ×PEER | ×PEER-DJANGO | receiving server CPU | client CPU "
        "| steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    refs = {ref: mean_maximum(results, ref) for ref in REFERENCES}
    for name in names(results):
        e2e = results[name].e2e
        if e2e is None:
            continue
        mean = mean_maximum(results, name)
        rows.append(
            f"| {name} | {e2e.processes} | {e2e.receivers:,} "
            f"| {spread(at_best(e2e, lambda s: s.publish_rate), count)} "
            f"| {spread(at_best(e2e, lambda s: s.delivered_per_second), count)} "
            f"| {ratio(mean, refs['LIMIT'])} | {ratio(mean, refs['PEER'])} "
            f"| {ratio(mean, refs['PEER-DJANGO'])} "
            f"| {spread(at_best(e2e, lambda s: s.server_cpu), cpu)} "
            f"| {spread(at_best(e2e, lambda s: s.client_cpu_max), client_cpu)} "
            f"| {' + '.join(str(len(search.steps)) for search in e2e.searches)} |"
        )
    rows += [
        "",
        f"### At {fixed:g} publishes/s, a rate every server sustains",
        "",
        f"{fixed * first.receivers:,.0f} deliveries a second. Idle: the server's "
        "CPU (all its processes, share of a core) with its clients connected and "
        "nothing published. CPU per delivery: all its processes' CPU time from the "
        "first publish to the last receipt over the deliveries; above idle: less "
        "what it spends idle in as long.",
        "",
        "| server | p50 (ms) | p99 (ms) | idle server CPU | CPU/delivery (µs) "
        "| above idle (µs) | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names(results):
        e2e = results[name].e2e
        if e2e is None:
            continue
        steps = e2e.at_fixed_rate
        rows.append(
            f"| {name} | {spread([s.p50 for s in steps], ms)} "
            f"| {spread([s.p99 for s in steps], ms)} "
            f"| {spread(list(e2e.idle_cpu), idle)} "
            f"| {spread([s.cpu_us_per_delivery for s in steps], tenths)} "
            f"| {spread(e2e.cpu_us_above_idle, tenths)} "
            f"| {spread([s.client_cpu_max for s in steps], client_cpu)} |"
        )
    return rows


def count(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def tenths(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def idle(share: float | None) -> str:
    """A share of one core, to a tenth of a percent: idle servers use little."""
    return "—" if share is None else f"{share:.1%}"


def client_cpu(share: float | None) -> str:
    return cpu(share, client=True)


def slow_table(results: dict[str, ServerResults]) -> list[str]:
    any_slow = next((r.slow for r in results.values() if r.slow), None)
    if any_slow is None:
        return []
    rows = [
        "## A slow client",
        "",
        f"{any_slow.receivers:,} clients read everything; one more joins, sets "
        f"a {any_slow.rcvbuf // KIB} KiB receive buffer and reads nothing while "
        f"{any_slow.sent_to_slow / MIB:.1f} MiB of "
        f"{any_slow.pad // KIB} KiB messages is broadcast. Ratio: the others' "
        "p50 completion with the slow client over without it (the target is 2×). "
        "RSS growth: the most the server's RSS rose above its level when the slow "
        "client joined. Then the slow client reads again: was it closed?",
        "",
        "| server | p50 without (ms) | p50 with (ms) | ratio | RSS growth (MB) "
        "| slow client |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name in names(results):
        slow = results[name].slow
        if slow is None:
            continue
        fate = "still open"
        if slow.slow_closed:
            code = slow.slow_close_code
            fate = f"closed, code {code}" if code else "dropped (no close frame)"
        growth = slow.rss_growth
        growth_mb = "—" if growth is None else f"{growth / MIB:.1f}"
        rows.append(
            f"| {name} | {ms(slow.p50_without)} | {ms(slow.p50_with)} "
            f"| {ratio(slow.p50_with, slow.p50_without)} | {growth_mb} "
            f"| {fate} |"
        )
    return rows


def targets(results: dict[str, ServerResults]) -> list[str]:
    rows = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]

    def add(target: str, measured: str, met: bool | None) -> None:
        mark = "not measured" if met is None else ("yes" if met else "**no**")
        rows.append(f"| {target} | {measured} | {mark} |")

    big = [n for n in ("5000", "9000") if n in sizes(results)]

    def versus(name: str, ref: str, bound: float, label: str) -> None:
        measured, met = [], None if not big else True
        for n in big:
            mine, theirs = p50(results, name, n), p50(results, ref, n)
            if mine is None or theirs is None:
                met = None
                continue
            measured.append(f"N={int(n):,}: {mine / theirs:.3f}×")
            met = met and mine <= bound * theirs
        add(label, "; ".join(measured) or "—", met if measured else None)

    versus("websockets", "LIMIT", 1.2, "websockets: completion within 1.2× LIMIT")
    found = [rss_per_connection(results, "websockets", n) for n in sizes(results)]
    per = [value / KIB for value in found if value is not None]
    memory_met = all(value <= WEBSOCKETS_KIB for value in per) if per else None
    add(
        f"websockets: ≤ {WEBSOCKETS_KIB} KiB RSS per idle connection",
        ", ".join(f"{value:.1f} KiB" for value in per) or "—",
        memory_met,
    )
    versus("aiohttp", "LIMIT", 1.5, "aiohttp: completion within 1.5× LIMIT")
    versus("fastapi", "PEER", 1.0, "fastapi: completion no slower than PEER")
    both = [
        (
            rss_per_connection(results, "fastapi", n),
            rss_per_connection(results, "PEER", n),
        )
        for n in sizes(results)
    ]
    pairs = [(a, b) for a, b in both if a is not None and b is not None]
    add(
        "fastapi: memory per connection ≤ PEER's",
        "; ".join(f"{a / KIB:.1f} vs {b / KIB:.1f} KiB" for a, b in pairs) or "—",
        all(a <= b for a, b in pairs) if pairs else None,
    )
    measured, met = [], None
    for n in big:
        mine, theirs = p50(results, "django", n), p50(results, "PEER-DJANGO", n)
        if mine and theirs:
            measured.append(f"N={int(n):,}: {theirs / mine:.1f}× faster")
            met = (met is not False) and theirs >= 10 * mine
    add("django: ≥ 10× faster than PEER-DJANGO", "; ".join(measured) or "—", met)
    for name in FRAMEWORKS:
        entry = results.get(name)
        if entry is None:
            continue
        at = entry.sizes.get("9000")
        add(
            f"{name}: 9,000 idle connections within 512 MB",
            f"{at.rss_idle / MIB:,.0f} MB" if at else "—",
            at.rss_idle <= DYNO_BYTES if at else None,
        )
        slow = entry.slow
        if slow:
            closed = slow.slow_closed
            within = slow.ratio is not None and slow.ratio <= 2
            add(
                f"{name}: slow client: others within 2×, memory bounded",
                f"{slow.ratio or 0:.2f}×, +{(slow.rss_growth or 0) / MIB:.1f} MB,"
                f" slow client {'closed' if closed else 'still open'}",
                within and closed,
            )
    for name in FRAMEWORKS:
        entry = results.get(name)
        if entry is None or not entry.history:
            continue
        measured, met = [], None
        for n in big:
            off, on = entry.history_off.get(n), entry.sizes.get(n)
            if off and on and off.p50 and on.p50:
                measured.append(f"N={int(n):,}: {on.p50 / off.p50:.2f}×")
                met = (met is not False) and on.p50 <= HISTORY_COMPLETION * off.p50
        add(
            f"{name}: completion with history within {HISTORY_COMPLETION}× of without",
            "; ".join(measured) or "—",
            met,
        )
        stream_off, stream_on = entry.e2e_history_off, entry.e2e
        best_off = mean_best(stream_off) if stream_off else None
        best_on = mean_best(stream_on) if stream_on else None
        add(
            f"{name}: end-to-end maximum with history ≥ {HISTORY_E2E}× of without",
            ratio(best_on, best_off),
            best_on >= HISTORY_E2E * best_off if best_on and best_off else None,
        )
        storm = the_storm(entry)
        add(
            f"{name}: storm of {storm.clients if storm else 5000:,} clients each "
            f"{STORM_MISSED} behind recovered within {STORM_SECONDS:g} s",
            f"{storm.recovered_seconds:.2f} s, {storm.redis_reads} Redis reads"
            + ("" if storm.complete else ", **not every message**")
            if storm
            else "—",
            storm.complete and storm.recovered_seconds <= STORM_SECONDS
            if storm
            else None,
        )
    if memory_met is False:
        rows += ["", WEBSOCKETS_MEMORY]
    return rows


# What stands in the way of the websockets variant's memory target, and what
# would move it (from a tracemalloc count of one idle connection's objects).
WEBSOCKETS_MEMORY = (
    "**What stands in the way of 16 KiB per connection (websockets).** LIMIT's "
    "connections only wait; the variant's have each joined a room. By tracemalloc "
    "(2,000 idle members of one room, after the core lifecycle change), a "
    "connection holds 11.4 KB of Python objects, of which the app's own are about "
    "0.76 KB: the connection (its rooms, rate limit and state in one slotted "
    "object), its sink, its admission slot, its room membership and its coroutine. "
    "The other 10.6 KB is the websockets library's own, which LIMIT holds too "
    "(the handshake's request and response headers alone, 3.1 KB, stay with the "
    "connection). So of the gap in RSS to LIMIT, about 0.8 KiB is the app's "
    "objects and the rest is memory that the join and its reply leave with the "
    "allocator, which RSS counts and tracemalloc does not. What would move it: a "
    "LIMIT whose clients also send one frame, to tell the app's share from the "
    "workload's; and, in the library, headers dropped once the connection is open."
)


def e2e_steps(entry: ServerResults) -> list[Step]:
    """Every steady-rate step of the server's end-to-end phase."""
    if entry.e2e is None:
        return []
    searched = [step for search in entry.e2e.searches for step in search.steps]
    return searched + entry.e2e.at_fixed_rate


def notes(data: Results) -> list[str]:
    results = data.results
    bound = [
        f"{name} at N={int(n):,} ({row.client_cpu_max:.0%} of a core)"
        for name in names(results)
        for n, row in results[name].sizes.items()
        if row.client_cpu_max > CLIENT_BOUND
    ]
    bound += [
        f"{name} connecting N={int(n):,} ({row.connect_client_cpu_max:.0%})"
        for name in names(results)
        for n, row in results[name].sizes.items()
        if row.connect_client_cpu_max > CLIENT_BOUND
    ]
    bound += [
        f"{name} end-to-end at {step.publish_rate:,.1f} publishes/s "
        f"({step.client_cpu_max:.0%})"
        for name in names(results)
        for step in e2e_steps(results[name])
        if step.client_cpu_max > CLIENT_BOUND
    ]
    loaded = [
        f"{name} ({results[name].other_work_cores:.2f})"
        for name in names(results)
        if results[name].other_work_cores >= OTHER_WORK
    ]
    rows = ["## Caveats from this run", ""]
    if bound:
        rows.append(
            f"- Client processes over {CLIENT_BOUND:.0%} of a core (⚠ above; the "
            "clients, not the server, may have set the pace there): "
            + ", ".join(bound)
            + "."
        )
    else:
        rows.append(
            f"- No client process passed {CLIENT_BOUND:.0%} of a core while "
            "connecting, in the rounds or at any end-to-end step: the servers set "
            "the pace."
        )
    if loaded:
        rows.append(
            "- Processes outside this run used the machine's CPU while these "
            f"servers were measured (cores' worth on average, ≥ {OTHER_WORK}), so "
            "their figures may be slower than an idle machine's: "
            + ", ".join(loaded)
            + "."
        )
    else:
        rows.append(
            "- Processes outside this run used less than "
            f"{OTHER_WORK} of a core on average while each server was measured."
        )
    return rows


# The --record runs of the harness, in the order of the numbers their file names
# start with (10-history after 9-identity).
CHANGES = Path(__file__).resolve().parent / "changes"
# The broadcast size the changes table compares: the main target size.
CHANGE_SIZE = "5000"


def change_order(path: Path) -> tuple[float, str]:
    """A record's place in the table: its number, then its name."""
    number, _, rest = path.stem.partition("-")
    return (int(number), rest) if number.isdigit() else (math.inf, path.stem)


def changes() -> list[str]:
    """The generated apps before and after each measured change, from the figures
    the harness kept with --record (each file names the commit it baked)."""
    paths = sorted(CHANGES.glob("*.json"), key=change_order)
    runs = [(path.stem, load(Change, path)) for path in paths]
    if not runs:
        return []
    rows = [
        "## Changes and their effect",
        "",
        "Each row is a run of `python3 bench/run.py --template <checkout> --record "
        "<name>` on the template as of the commit named (broadcast phase, one app "
        f"process). Completion p50 / p99 at N = {int(CHANGE_SIZE):,} in ms, then "
        "RSS per idle connection in KiB, then (recorded since identity) the "
        "connect rate in conn/s. Only rows of one machine compare (—: not "
        "recorded, an earlier one).",
        "",
        "| run | commit | machine | " + " | ".join(FRAMEWORKS) + " |",
        "|---|---|---|" + "---|" * len(FRAMEWORKS),
    ]
    for name, run in runs:
        cells = []
        for framework in FRAMEWORKS:
            size = run.results.get(framework, {}).get(CHANGE_SIZE)
            cells.append(
                "—"
                if size is None
                else f"{ms(size.p50)} / {ms(size.p99)}; "
                f"{size.rss_per_connection / KIB:.1f}"
                + ("" if size.connect_rate is None else f"; {size.connect_rate:,.0f}")
            )
        commit = run.commit.split()[0]  # the hash; the name says what changed
        machine = run.machine or "—"
        rows.append(f"| {name} | {commit} | {machine} | " + " | ".join(cells) + " |")
    return rows


def identity(data: Results) -> list[str]:
    """The settings line of identity: how the variants that have it were run, or
    that the template measured had none."""
    results, auth = data.results, data.meta.auth
    having = [name for name in names(results) if results[name].identity]
    lacking = [name for name in FRAMEWORKS if name in results and name not in having]
    lines = []
    if having and auth is not None:
        anonymous = sorted(
            {n for name in having for n in results[name].anonymous}, key=int
        )
        at = " and ".join(f"{int(n):,}" for n in anonymous)
        lines.append(
            f"- Identity ({', '.join(having)}): AUTH_SECRET is a fixed "
            f"{auth.secret_bytes}-byte bench key; every client (receivers, "
            'publisher, slow client) sends `{"type": "auth", "token": T}` '
            "right after the 101 and is connected once `authed` is back, so the "
            "connect rates include authentication. T is an HS256 JWT of "
            f"{auth.token_bytes} bytes with claims `sub` (a UUID: one user per "
            "connection, as a deployment's are mostly distinct people), `name`, "
            f"`iat` and `exp` {auth.token_ttl / 60:.0f} minutes later. "
            "WS_MAX_CONNECTIONS_PER_CLIENT is WS_MAX_CONNECTIONS's value: every "
            "bench client comes from 127.0.0.1, one client address."
            + (
                f" At N = {at} each also runs with AUTH_ANONYMOUS=true and no auth "
                "frame: What authentication costs, below."
                if anonymous
                else ""
            )
        )
    if lacking:
        lines.append(
            f"- Identity: the template measured has none ({', '.join(lacking)}): "
            "no AUTH_SECRET, and its clients send no auth frame."
        )
    return lines


def markdown(data: Results) -> str:
    meta, results = data.meta, data.results
    box = meta.machine
    cfg = meta.config
    lines = [
        "# Benchmarks: fan-out speed and memory per connection",
        "",
        "Written by the command below; every number here comes from its run. "
        "Rerun it to refresh this page and `benchmarks.png`.",
        "",
        "```sh",
        meta.command,
        "```",
        "",
        f"- Run: {meta.date}, {meta.seconds / 60:.1f} minutes; 1-minute load "
        f"average {meta.load_before:.2f} before, {meta.load_after:.2f} after.",
        f"- Machine: {box.cpu}, {box.cores} cores, "
        f"{box.memory / 1024**3:.0f} GiB, Linux {box.kernel}, "
        f"Python {box.python}, redis-server {box.redis} on loopback.",
        f"- Sizes N: {', '.join(f'{n:,}' for n in cfg.sizes)}; "
        f"{cfg.rounds} broadcast rounds each, one at a time with "
        f"{meta.round_pause * 1000:.0f} ms between them; chat-sized messages (a "
        "sequence number and a timestamp); compression off everywhere; one server "
        "process (WEB_CONCURRENCY=1), started fresh for each server and size; "
        "every other setting at its default.",
        "- Clients: bench/client.py processes (uvloop, WebSocket by hand), at most "
        f"{meta.per_client_process:,} sockets each, at most "
        f"{meta.connect_window} handshakes (with authentication, where clients "
        "authenticate) in flight in all; their CPU is "
        f"measured. They share the {box.cores} cores with the servers and "
        "Redis.",
        "- App settings changed from the defaults: WS_MAX_CONNECTIONS is N + 1 "
        "when N reaches the default (the publisher is one more connection); the "
        "publishing process of the end-to-end and slow-client runs gets "
        + ", ".join(f"{key}={value}" for key, value in meta.fast.items())
        + " (a benchmark publishes faster than a person).",
        *identity(data),
        "",
        "| server | what it is | versions |",
        "|---|---|---|",
    ]
    what = {
        "websockets": "the template's websockets variant, from its Procfile",
        "fastapi": "the template's fastapi variant, from its Procfile",
        "aiohttp": "the template's aiohttp variant, from its Procfile",
        "django": "the template's django variant, from its Procfile",
        "LIMIT": "bare websockets `broadcast()`, no Redis, no JSON",
        "PEER": "Starlette + broadcaster (Redis), its README's chat app, uvicorn",
        "PEER-DJANGO": "Channels + channels_redis RedisPubSubChannelLayer, uvicorn",
    }
    for name in names(results):
        lines.append(f"| {name} | {what[name]} | {results[name].versions} |")
    lines += ["", "![completion and memory](benchmarks.png)", ""]
    lines += ["## Broadcast to N clients on one process", ""]
    for n in sizes(results):
        lines += size_table(results, n) + [""]
    if sizes(results):
        lines += memory_table(results) + [""]
    lines += auth_table(results) + [""]
    lines += e2e_table(results) + [""]
    lines += history_table(results) + [""]
    lines += storm_table(results) + [""]
    lines += slow_table(results) + [""]
    lines += targets(results) + [""]
    lines += changes() + [""]
    lines += notes(data) + [""]
    return "\n".join(lines)


def chart(results: dict[str, ServerResults], path: Path) -> None:
    if not sizes(results):
        return  # a run of other phases only: nothing to draw
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # no display: write the file only
    from matplotlib import pyplot

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    for name in names(results):
        points = [
            (int(n), row.p50 * 1000)
            for n, row in sorted(results[name].sizes.items(), key=lambda i: int(i[0]))
            if row.p50
        ]
        if points:
            style = "--" if name in REFERENCES else "-"
            left.plot(*zip(*points, strict=True), style, marker="o", label=name)
    left.set_xlabel("connections N")
    left.set_ylabel("broadcast completion p50 (ms)")
    left.set_yscale("log")
    left.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    left.set_title("publish → last receipt")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    largest = max(sizes(results), key=int)
    labels = [name for name in names(results) if largest in results[name].sizes]
    values = [results[name].sizes[largest].rss_per_connection / KIB for name in labels]
    colors = ["tab:gray" if name in REFERENCES else "tab:blue" for name in labels]
    right.bar(labels, values, color=colors)
    right.set_ylabel("RSS per idle connection (KiB)")
    right.set_title(f"memory at N = {int(largest):,}")
    right.tick_params(axis="x", rotation=30)
    for index, value in enumerate(values):
        if not math.isnan(value):
            right.annotate(f"{value:.1f}", (index, value), ha="center", va="bottom")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def recovery_chart(results: dict[str, ServerResults], path: Path) -> None:
    """Seconds until every client of the storm has every message it missed,
    against how many it missed, a line per variant."""
    storms = {name: results[name].storms for name in names(results)}
    storms = {name: found for name, found in storms.items() if found}
    if not storms:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
    for name, found in storms.items():
        points = sorted((storm.missed, storm.recovered_seconds) for storm in found)
        axes.plot(*zip(*points, strict=True), marker="o", label=name)
    clients = next(iter(storms.values()))[0].clients
    axes.axhline(STORM_SECONDS, color="tab:gray", linestyle="--", linewidth=1)
    axes.annotate(
        f"target: {STORM_SECONDS:g} s at {STORM_MISSED} missed",
        (0, STORM_SECONDS),
        xytext=(2, 3),
        textcoords="offset points",
        fontsize=8,
        color="tab:gray",
    )
    axes.set_xlabel("messages missed by each client")
    axes.set_ylabel("first handshake → last message recovered (s)")
    axes.set_title(f"reconnect storm: {clients:,} clients, one process")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
