"""The device daemon as a child process, for benchmarks and fault injection.

``python -m bench.device_proc CONFIG.json [--modem PTY] [--clock-offset S]`` runs
:class:`device.daemon.DeviceDaemon` on gpiozero MockFactory pins (and, with ``--modem``, the
AT driver on the given pty — the modem simulator lives in the parent), exactly as the
product runs it on the Pi. ``CONFIG.json`` holds a dict for ``DeviceConfig.from_dict``.

Commands on stdin, one per line:

* ``alarm [KIND]`` — :meth:`DeviceDaemon.raise_event` (default ``panic``); answers
  ``{"step": "raised", "id": …}`` once the event is on disk;
* ``hold SECONDS`` — hold the button like a finger (``drive_low``, sleep, ``drive_high``);
* ``quit`` — stop cleanly and exit 0.

Every observer step is written to stdout as one JSON line (``{"step": …, "t": monotonic s,
…}``), flushed at once, so the parent sees ``queued`` before it decides to kill -9.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

from bench.launch import skew_clock

_out_lock = threading.Lock()


def emit(step: str, fields: dict[str, Any]) -> None:
    """Write one observer step as a JSON line on stdout."""
    line = json.dumps({"step": step, "t": time.monotonic(), **fields}, default=str)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="bench.device_proc")
    ap.add_argument("config")
    ap.add_argument("--modem", default=None)
    ap.add_argument("--clock-offset", type=float, default=0.0)
    args = ap.parse_args(argv)
    skew_clock(args.clock_offset)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")

    from gpiozero.pins.mock import MockFactory

    from device.config import DeviceConfig
    from device.daemon import DeviceDaemon

    with open(args.config, encoding="utf-8") as fh:
        cfg = DeviceConfig.from_dict(json.load(fh))
    modem = None
    if args.modem:
        from modem.at import Modem

        modem = Modem(args.modem, flavour=cfg.modem.flavour)
    factory = MockFactory()
    accel = None
    if cfg.mandown.enabled:  # man-down: the simulated accelerometer on the same MockFactory (issue 10)
        from device.mandown_watch import open_accelerometer

        accel = open_accelerometer(cfg.mandown, pin_factory=factory)
    daemon = DeviceDaemon(cfg, pin_factory=factory, modem=modem, observer=emit, accel=accel)
    daemon.start()
    emit("started", {"pid": __import__("os").getpid(), "queue_depth": daemon.queue.depth()})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "alarm":
            ev = daemon.raise_event(cmd[1] if len(cmd) > 1 else "panic")
            emit("raised", {"id": ev.id, "kind": ev.kind, "ts": ev.ts})
        elif cmd[0] == "hold":
            pin = factory.pin(cfg.gpio.button_pin)
            pin.drive_low()
            time.sleep(float(cmd[1]))
            pin.drive_high()
            emit("released", {})
        elif cmd[0] == "quit":
            break
    daemon.stop()
    emit("stopped", {})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
