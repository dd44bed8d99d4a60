"""systemd service notifications with the standard library (sd_notify(3) protocol): one datagram
of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a leading ``@``
means the Linux abstract namespace).

Environment the device service relies on (set by systemd for ``Type=notify`` units):

* ``NOTIFY_SOCKET`` — where to send ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=…``;
  absent when not run by systemd (then every call is a no-op returning False).
* ``WATCHDOG_USEC`` — the unit's ``WatchdogSec`` in µs; pings are sent every half of it.
* ``WATCHDOG_PID`` — if set, the watchdog is meant for this PID only.

The unit therefore needs ``Type=notify``, ``NotifyAccess=main``, ``WatchdogSec=`` (e.g. 30 s)
and ``KillSignal=SIGTERM``.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "watchdog_interval_s"]


def notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=connected"``) to systemd. Returns True if
    sent, False if not under systemd or the socket is gone (never raises for that)."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in ("/", "@"):
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError:
        return False


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when the
    watchdog is off or meant for another process (``WATCHDOG_PID``)."""
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 2e6
