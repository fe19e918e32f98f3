"""The cycle collector, tuned for a process that holds thousands of connections.

CPython collects its youngest objects after every 700 new ones, and every object
it has after 70,000, once the heap has grown by a quarter. Each connection is a
few hundred objects, so a burst of connections (a deploy: every client comes back
at once) ran a full collection every few hundred connections, each longer as the
heap grew: a third of the server's CPU while 5,000 clients connected (bench/,
websockets variant), for collections that found almost nothing, since a live
connection's objects are all in use. Objects freed by their reference count,
nearly all of them, never wait for a collection; only reference cycles do.
"""

from __future__ import annotations

import gc

# Young objects every 20,000 new ones instead of 700: the garbage cycles waiting
# are a few megabytes at most. The older generations keep their defaults, so a
# full collection still comes after 2,000,000 new objects and frees the cycles a
# closed connection leaves; a heap that stops growing is not scanned at all.
THRESHOLDS = (20_000, 10, 10)


def tune() -> None:
    """Once a process has loaded its modules and built its app: what exists now
    lives as long as the process, so the collector stops scanning it (freeze),
    and collects less often from here on."""
    gc.collect()  # garbage from start-up is freed, not frozen
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
