"""The device daemon in a process of its own, on MockFactory pins and (optionally) the modem
simulator, for the durability tests (kill -9 at a chosen step) and for trying the daemon by
hand. Test tool: never used on a worn device.

    python -m labstack.device_runner CONFIG.json [--modem-sim] [--freeze-at STEP] [--hold-acks]

* ``CONFIG.json``: a dict for :meth:`device.config.DeviceConfig.from_dict`.
* Every observer step is printed to stdout as one JSON line ``{"step": …, …}``.
* ``--freeze-at STEP``: the first time the daemon reaches observer step ``STEP`` (e.g.
  ``publishing`` = queued but not yet published, ``published`` = handed to MQTT, ``ack_arrived``
  = the relay's ``received`` came but is not yet applied), the runner prints ``{"step":
  "frozen"}`` and blocks every thread that reports a step from then on, so the test can kill -9
  the process exactly there.
* ``--hold-acks``: block the ack handling from the start (so ``published`` is really "published,
  ack not applied").
* stdin, one command a line: ``hold SECONDS`` / ``tap N`` (a finger on the button),
  ``shift start|end``, ``quit``. SIGTERM stops cleanly through :func:`device.service.serve`
  (systemd notifications go to ``$NOTIFY_SOCKET`` when set).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from typing import Any

_out_lock = threading.Lock()
_frozen = threading.Event()


def emit(step: str, fields: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps({"step": step, **fields}, default=str) + "\n")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="labstack.device_runner")
    ap.add_argument("config")
    ap.add_argument("--modem-sim", action="store_true", help="start a modem simulator (pty) in-process")
    ap.add_argument("--freeze-at", default=None, metavar="STEP")
    ap.add_argument("--hold-acks", action="store_true")
    ap.add_argument("--log", default=None, help="log file (default: stderr)")
    args = ap.parse_args(argv)
    where: dict[str, Any] = {"filename": args.log} if args.log else {"stream": sys.stderr}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
                        **where)

    from gpiozero.pins.mock import MockFactory

    from device.config import DeviceConfig
    from device.daemon import DeviceDaemon
    from device.service import serve

    with open(args.config, encoding="utf-8") as fh:
        cfg = DeviceConfig.from_dict(json.load(fh))

    def observer(step: str, fields: dict[str, Any]) -> None:
        if _frozen.is_set() or (args.hold_acks and step == "ack_arrived"):
            if step == "ack_arrived":
                emit("ack_held", fields)
            threading.Event().wait()  # blocked for good: the test kills the process
        emit(step, fields)
        if args.freeze_at and step == args.freeze_at:
            _frozen.set()
            emit("frozen", {"at": step, **fields})
            threading.Event().wait()

    sim = None
    modem = None
    if args.modem_sim:
        from modem.at import Modem
        from modem.simulator import ModemSimulator

        sim = ModemSimulator(flavour="sim7600").start()
        sim.gnss_fix = (55.668571, 12.576131, 1.2)
        modem = Modem(sim.port, flavour="sim7600", default_timeout_s=3.0)
    factory = MockFactory()
    daemon = DeviceDaemon(cfg, pin_factory=factory, modem=modem, observer=observer)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    def commands() -> None:
        pin = factory.pin(cfg.gpio.button_pin)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "hold":
                pin.drive_low()
                time.sleep(float(cmd[1]))
                pin.drive_high()
            elif cmd[0] == "tap":
                for _ in range(int(cmd[1])):
                    pin.drive_low()
                    time.sleep(0.12)
                    pin.drive_high()
                    time.sleep(0.15)
            elif cmd[0] == "shift":
                ev = daemon.shift(cmd[1] == "start")
                emit("shift", {"id": ev.id, "kind": ev.kind})
            elif cmd[0] == "sms":
                emit("sim_sms", {"sent": sim.sent_sms if sim else []})
            elif cmd[0] == "quit":
                break
        done.set()

    threading.Thread(target=commands, name="runner-stdin", daemon=True).start()
    emit("starting", {"pid": __import__("os").getpid(), "modem_port": sim.port if sim else None})
    serve(daemon, done)
    if sim is not None:
        sim.stop()
    emit("stopped", {})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
