"""What ``lonewatch check-config`` checks beyond the loader of the file itself.

* relay.toml names a ``[registry] file``: that file is loaded and checked too (the relay
  imports it at start and refuses to start if it is invalid; README "Registry").
* relay.toml's ``[console]`` table is validated exactly as ``lonewatch console run`` does
  (:func:`console.config.settings_from`, issue 13); ``listen`` off the loopback interface is a
  warning (the console belongs behind a TLS reverse proxy: README "Console").
* ``[mqtt] tls = false`` with a password: a warning — the broker password (and every alarm)
  crosses the network in clear text (SPEC §6, MQTT over TLS).

Errors are printed as file:line (stderr) and end the command with exit 2; warnings are
returned as strings for the caller to print.
"""

from __future__ import annotations

import ipaddress
import sys

import click

from protocol.errors import LonewatchError

__all__ = ["extra_warnings", "listen_warning"]

EXIT_CONFIG = 2


def extra_warnings(kind: str, cfg, path: str) -> list[str]:
    """Checks for ``kind`` ("device", "relay" or "registry") of the already loaded ``cfg``
    read from ``path``. Returns warnings; prints every error and exits 2 (``SystemExit``) if
    the registry file or ``[console]`` is invalid."""
    out: list[str] = []
    mqtt = getattr(cfg, "mqtt", None)
    if kind in ("device", "relay") and mqtt is not None and mqtt.password and not mqtt.tls:
        out.append("[mqtt] tls = false with a password: the password and every alarm cross the network in clear text")
    if kind != "relay":
        return out
    errors: list[str] = []
    from console.config import settings_from

    try:
        out += listen_warning(settings_from(path).listen)
    except LonewatchError as exc:
        errors.append(str(exc))
    if cfg.registry.file is not None:
        try:
            out += _registry_warnings(cfg.registry.file)
        except LonewatchError as exc:
            errors.append(str(exc))
    if errors:
        for error in errors:
            click.echo(error, err=True)
        sys.exit(EXIT_CONFIG)
    return out


def listen_warning(listen: str) -> list[str]:
    """``["..."]`` when the console's ``HOST:PORT`` is not on a loopback address, else ``[]``."""
    host = listen.rpartition(":")[0].strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return []
    return [f"[console] listen = \"{listen}\" is not a loopback address: the console should sit behind a TLS reverse proxy"]


def _registry_warnings(path) -> list[str]:
    """Check the registry file like the relay does at start: strictly, or — when the file only
    refers to workers/sites/accounts stored earlier (merge) — as a part, with a warning.

    Raises:
        ConfigError: the file is missing or invalid (file:line).
    """
    from protocol.configfile import ConfigError, load_toml
    from relay.registry import _build, load_registry_toml

    try:
        load_registry_toml(path)
    except ConfigError as strict:
        try:
            _build(load_toml(path), partial=True)
        except ConfigError:
            raise strict from None
        return [f"[registry] file {path} refers to entries it does not define; the relay starts only if they are "
                f"already stored in Redis (lonewatch registry add): {strict}"]
    return []
