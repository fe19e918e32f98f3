#!/usr/bin/env python3
"""Fan-out benchmarks of the four variants next to LIMIT, PEER and PEER-DJANGO.

    python3 bench/run.py            the full run: docs/benchmarks.md and .png
    python3 bench/run.py --quick    the smoke lane (N = 300, a few rounds), into
                                    build/bench/quick/

Standard library only: it builds the harness's own venv (bench/requirements/
tools.txt, cached under .cache/venvs/) and runs bench/harness.py in it, which
bakes each variant and builds every server's venv the same way. Needs
redis-server on PATH (apt-get install -y redis-server).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # tooling.py

from tooling import cached_venv  # noqa: E402


def main() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (ruff assumes 3.11; users may not)
        sys.exit("bench/run.py needs Python >= 3.11")
    python = cached_venv(BENCH / "requirements" / "tools.txt")
    harness = BENCH / "harness.py"
    os.execv(python, [str(python), str(harness), *sys.argv[1:]])


if __name__ == "__main__":
    main()
