"""Run the ``lonewatch`` CLI in this process with a wrong wall clock (a host without NTP).

``python -m bench.launch --clock-offset 300 relay run -c relay.toml`` runs the relay as
``lonewatch relay run`` would, but ``time.time()`` is 300 s fast. Only the wall clock moves:
``time.monotonic`` (timeouts, keepalive) is untouched, as on a host whose clock is merely
set wrong. Test tooling; never used in production.
"""

from __future__ import annotations

import sys
import time


def skew_clock(offset_s: float) -> None:
    """Make ``time.time()`` return the real time plus ``offset_s`` seconds, process-wide."""
    if not offset_s:
        return
    real = time.time
    time.time = lambda: real() + offset_s  # type: ignore[assignment]


def main(argv: list[str]) -> None:
    offset = 0.0
    if argv[:1] == ["--clock-offset"]:
        offset, argv = float(argv[1]), argv[2:]
    skew_clock(offset)
    from cli.main import main as cli

    cli(args=argv, prog_name="lonewatch")


if __name__ == "__main__":
    main(sys.argv[1:])
