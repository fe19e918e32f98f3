"""The benchmark harness's quick lane (issue 5): it runs end to end, and the order
that holds by a wide margin even at N = 300 on a busy 2-core machine holds.

No timing thresholds: the figures themselves belong in docs/benchmarks.md.
"""

import json
import sys

import pytest
from support import ROOT, require_redis, run_ok

SERVERS = ["websockets", "fastapi", "aiohttp", "django", "LIMIT", "PEER", "PEER-DJANGO"]
FRAMEWORKS = SERVERS[:4]


@pytest.fixture(scope="module")
def quick():
    """One quick run for the module: its results and its output folder."""
    require_redis()
    out = ROOT / "build" / "bench" / "quick"
    raw = ROOT / "build" / "bench" / "quick.json"
    raw.unlink(missing_ok=True)
    # About 1.5 min on 2 cores; the first run also builds the servers' venvs.
    run_ok(sys.executable, "bench/run.py", "--quick", cwd=ROOT, timeout=840)
    return json.loads(raw.read_text()), out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_lane_measures_every_server(quick):
    """Every server connected all its clients, delivered every round, and got
    through the end-to-end sweep and the slow-client phase; doc and chart exist."""
    data, out = quick
    results = data["results"]
    assert sorted(results) == sorted(SERVERS)
    for name, entry in results.items():
        (size,) = entry["sizes"].values()
        rounds = data["meta"]["config"]["rounds"]
        assert size["lost"] == 0 and len(size["completions"]) == rounds, name
        assert size["rss_per_connection"] > 0, name
        first = entry["e2e"]["steps"][0]
        assert first["delivered"] == first["expected"], (name, first)
        assert entry["slow"]["lost"] == 0, name
    doc = (out / "benchmarks.md").read_text()
    assert all(f"| {name} |" in doc for name in SERVERS)
    assert (out / "benchmarks.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_lane_keeps_the_robust_order(quick):
    """PEER-DJANGO (channel layer, a send per member through Redis) is several
    times slower than the websockets and django variants (one subscription per
    process), even at N = 300; and every variant closes the client that reads
    nothing with 1013, while its memory stays bounded."""
    results = quick[0]["results"]

    def p50(name):
        (size,) = results[name]["sizes"].values()
        return size["p50"]

    assert p50("PEER-DJANGO") > p50("websockets")
    assert p50("PEER-DJANGO") > p50("django")
    for name in FRAMEWORKS:
        slow = results[name]["slow"]
        assert slow["slow_closed"] and slow["slow_close_code"] == 1013, (name, slow)
        # Bounded: far less than the stream the slow client left unread (LIMIT,
        # which buffers it all, grows by about two thirds of it).
        assert slow["rss_growth"] < slow["sent_to_slow"] / 3, (name, slow)
