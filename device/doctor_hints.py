"""Likely causes ``lonewatch doctor`` names when the broker cannot be reached (issue 15,
"`doctor` names the likely cause when the broker's port changed").

A device that was provisioned and then finds nothing listening on its broker port has most
often lost its broker to a port change: ``lonewatch lab`` restarted over a new directory
(new ports, passwords, empty Redis) or the broker's listener reconfigured. When the broker
is on this machine and a ``lab-state.json`` (written by ``lonewatch lab``, see
``labstack/labstate.py``; read here as plain JSON — device/ may not import labstack/) lies
in or next to one of the device's directories, the hint says which port that lab uses now.

Cheap and safe: a few directories up from the device's files, their direct sub-directories
(at most :data:`MAX_ENTRIES` each), files of at most :data:`MAX_STATE_BYTES`; only the
broker port is read from the state file (it also holds passwords, which are never shown).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

__all__ = ["LAB_STATE_FILE", "find_lab_ports", "port_changed_fix"]

LAB_STATE_FILE = "lab-state.json"
#: How many directories up from each of the device's directories are searched.
MAX_UP = 3
#: At most this many entries of one directory are looked at.
MAX_ENTRIES = 64
#: A bigger file is not a lab state (it holds a handful of keys).
MAX_STATE_BYTES = 64 * 1024
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def _broker_port(path: Path) -> int | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_STATE_BYTES:
            return None
        port = json.loads(path.read_text(encoding="utf-8")).get("broker_port")
    except (OSError, ValueError, AttributeError):
        return None  # unreadable (another user's 0600 file) or damaged: no hint, no error
    return port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else None


def find_lab_ports(start_dirs: Iterable[Path]) -> dict[Path, int]:
    """``{lab directory: broker port}`` of the ``lab-state.json`` files found in each of
    ``start_dirs``, up to :data:`MAX_UP` of their parents, and the direct sub-directories of
    those. Never raises (an unreadable directory or file is skipped)."""
    found: dict[Path, int] = {}
    seen: set[Path] = set()
    for start in start_dirs:
        try:
            start = Path(start).resolve()
        except (OSError, RuntimeError):
            continue
        for d in [start, *list(start.parents)[:MAX_UP]]:
            if d in seen or d == Path(d.anchor):
                continue
            seen.add(d)
            candidates = [d]
            try:
                for i, entry in enumerate(d.iterdir()):
                    if i >= MAX_ENTRIES:
                        break
                    if entry.is_dir() and not entry.is_symlink():
                        candidates.append(entry)
            except OSError:
                pass
            for c in candidates:
                port = _broker_port(c / LAB_STATE_FILE)
                if port is not None:
                    found[c] = port
    return found


def port_changed_fix(host: str, port: int, device_id: str, start_dirs: Iterable[Path]) -> str:
    """The fix text for "nothing listens on ``host``:``port``" (ConnectionRefusedError).

    Names the likely cause — the broker's port changed since the device was provisioned —
    and, for a broker on this machine, the port of each ``lonewatch lab`` found near the
    device's files (:func:`find_lab_ports`).
    """
    fix = (f"the broker's port likely changed since {device_id} was provisioned (`lonewatch lab` restarted over "
           f"a new directory, or the broker's listener reconfigured): check the broker runs and which port it "
           f"listens on, then fix [mqtt] port or re-run `lonewatch provision` for {device_id}")
    if host.strip("[]").lower() not in LOCAL_HOSTS:
        return fix
    labs = find_lab_ports(start_dirs)
    moved = {d: p for d, p in labs.items() if p != port}
    same = [d for d, p in labs.items() if p == port]
    if moved:
        fix += "; " + "; ".join(f"the lab in {d} uses port {p} now" for d, p in sorted(moved.items()))
    elif same:
        fix += f"; the lab in {same[0]} uses port {port} but is not running: start it again with `lonewatch lab` over that directory"
    return fix
