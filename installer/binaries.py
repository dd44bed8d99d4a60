"""Finding the Debian server binaries the installer and the lab run (Mosquitto, its password
tool, Redis), with the exact install line when one is missing (README "Try it")."""

from __future__ import annotations

import shutil

from protocol.errors import LonewatchError

#: Debian package for each server binary.
PACKAGES = {"mosquitto": "mosquitto", "mosquitto_passwd": "mosquitto", "redis-server": "redis-server",
            "redis-sentinel": "redis-sentinel"}


class MissingServerError(LonewatchError, FileNotFoundError):
    """A server binary is not installed. ``str()`` says the exact install line."""


def find_binary(name: str) -> str:
    """Path of ``name`` on PATH or in /usr/sbin.

    Raises:
        MissingServerError: with ``sudo apt-get install -y <package>`` as the fix.
    """
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if not found:
        pkg = PACKAGES.get(name, name)
        raise MissingServerError(f"{name} is not installed; install it with: sudo apt-get install -y {pkg}")
    return found
