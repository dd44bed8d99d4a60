"""``python -m device -c /etc/lonewatch/device.toml``: the device daemon as systemd runs it.

Needs only the device's runtime dependencies (gpiozero, pyserial, paho-mqtt, the standard
library; smbus2 for an I2C fuel gauge) — not click, which the installer CLI (`lonewatch`)
uses. Exit status 2 on a configuration error (every problem printed as file:line).
"""

from __future__ import annotations

import argparse
import logging
import sys

from protocol.errors import LonewatchError


def main(argv: list[str] | None = None) -> int:
    """Parse ``-c PATH``, validate the config, run until SIGTERM; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m device", description="lonewatch device daemon")
    parser.add_argument("-c", "--config", default="/etc/lonewatch/device.toml", help="device.toml (default: %(default)s)")
    args = parser.parse_args(argv)
    from .config import load_device_config
    from .service import run_forever

    try:
        cfg = load_device_config(args.config)
    except (LonewatchError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    run_forever(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
