"""What the installer commands share (:mod:`cli.install`, :mod:`cli.pki`): exit codes, default
config paths, failing with a message, JSON output, loading device/relay configs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


EXIT_FAILED, EXIT_CONFIG, EXIT_MISSING = 1, 2, 3  # same meaning as cli.main
DEVICE_TOML = "/etc/lonewatch/device.toml"
RELAY_TOML = "/etc/lonewatch/relay.toml"


def _fail(message: str, code: int = EXIT_CONFIG) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def _load_device(path: str):
    from protocol.configfile import ConfigError

    from device.config import load_device_config

    try:
        return load_device_config(path)
    except ConfigError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{path}: {exc.strerror}")


def _load_relay(path: str):
    from protocol.configfile import ConfigError

    from relay.config import load_relay_config

    try:
        return load_relay_config(path)
    except ConfigError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{path}: {exc.strerror}")


def _redis_url(relay_config: str | None, redis_url: str | None) -> str:
    if redis_url:
        return redis_url
    path = relay_config or RELAY_TOML
    if not Path(path).exists():
        _fail(f"{path} not found: give --relay-config FILE or --redis-url URL")
    return _load_relay(path).redis.url


# --------------------------------------------------------------------------- pki


