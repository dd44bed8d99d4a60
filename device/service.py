"""Running the device daemon as a systemd service (``lonewatch device run``; SPEC §2: "Runs as
a systemd ``Type=notify`` service with a watchdog").

* ``READY=1`` once the daemon has started (queue opened, pins claimed, threads running);
* ``WATCHDOG=1`` every half ``WatchdogSec`` — but only while :meth:`DeviceDaemon.health`
  reports the main loops, paho's network thread and the queue healthy; a stalled daemon stops
  pinging and systemd restarts it (queued events are on disk, nothing is lost);
* ``STOPPING=1`` on SIGTERM/SIGINT, then a clean stop: events being written finish, queued
  events stay in the queue and are sent after the next start.

Environment used: ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ``WATCHDOG_PID`` (:mod:`device.sdnotify`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from protocol.errors import LonewatchError

from . import sdnotify
from device.config import DeviceConfig
from .daemon import DeviceDaemon

log = logging.getLogger(__name__)

__all__ = ["run_forever", "serve"]


def serve(daemon: DeviceDaemon, stop: threading.Event, *, env: dict[str, str] | None = None,
          notify: Callable[[str], Any] | None = None) -> None:
    """Start ``daemon``, tell systemd, ping the watchdog while healthy, and stop cleanly once
    ``stop`` is set. ``notify`` defaults to :func:`device.sdnotify.notify` with ``env``."""
    send = notify or (lambda state: sdnotify.notify(state, env))
    daemon.start()
    send(f"READY=1\nSTATUS=device {daemon.device_id} running, {daemon.queue.depth()} event(s) queued")
    interval = sdnotify.watchdog_interval_s(env)
    tick = min(interval, 5.0) if interval else 5.0
    last_problems: list[str] = []
    while not stop.wait(tick):
        problems = daemon.health()
        if not problems:
            if interval:
                send("WATCHDOG=1")
        elif problems != last_problems:
            log.error("unhealthy, not pinging the watchdog: %s", "; ".join(problems))
            send("STATUS=unhealthy: " + "; ".join(problems)[:200])
        last_problems = problems
    send("STOPPING=1")
    log.info("stopping: %d event(s) stay queued on disk", daemon.queue.depth())
    daemon.stop()


def run_forever(cfg: DeviceConfig) -> None:
    """Run until SIGTERM/SIGINT with gpiozero's default pin factory and the configured modem."""
    modem = None
    if cfg.modem.enabled:
        from modem.at import Modem

        modem = Modem(cfg.modem.port, cfg.modem.baudrate, flavour=cfg.modem.flavour,
                      sms_timeout_s=cfg.modem.sms_timeout_s)
    accel = None
    if cfg.mandown.enabled:  # the accelerometer edge is made here and handed in (issue 10)
        from .mandown_watch import open_accelerometer

        try:
            accel = open_accelerometer(cfg.mandown)
        except LonewatchError as exc:
            log.error("man-down sensor unavailable, falls are NOT watched: %s", exc)
    daemon = DeviceDaemon(cfg, modem=modem, accel=accel)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    serve(daemon, done)
