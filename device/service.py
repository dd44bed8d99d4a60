"""Running the device daemon as a service on the Pi (``lonewatch device run``): real GPIO
pins, the real modem port, clean shutdown on SIGTERM (queued events stay on disk)."""

from __future__ import annotations

import logging
import signal
import threading

from .config import DeviceConfig
from .daemon import DeviceDaemon

log = logging.getLogger(__name__)


def run_forever(cfg: DeviceConfig) -> None:
    """Run until SIGTERM/SIGINT with gpiozero's default pin factory and the configured modem."""
    modem = None
    if cfg.modem.enabled:
        from .modem.at import Modem

        modem = Modem(cfg.modem.port, cfg.modem.baudrate)
    daemon = DeviceDaemon(cfg, modem=modem)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    daemon.start()
    done.wait()
    log.info("stopping: %d event(s) stay queued on disk", daemon.queue.depth())
    daemon.stop()
