"""What ``lonewatch lab`` keeps in its directory between runs (issue 15, "Installer").

- ``lab-state.json`` (0600): the ports, the relay's broker password, the Redis passwords
  and the broker directory of the lab. A restart over the same directory reuses them, so
  devices provisioned against the lab keep working (their broker login, the registry in
  ``<dir>/redis``, the CA in ``<dir>/pki``).
- ``broker-passwd.keep`` (0600): a copy of the broker's password file, taken at start and
  stop, to rebuild the broker directory when the system temp dir was emptied (reboot).
- ``mosquitto.pid.json`` / ``redis.pid.json``: the servers the running lab started. A lab killed with
  SIGKILL cannot stop them; the next start does (:func:`stop_leftovers`) — only a process
  whose pid is recorded here, whose name matches and whose working directory is the one
  recorded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

from protocol.errors import LonewatchError

__all__ = ["load_state", "save_state", "port_free", "record_server", "stop_leftovers", "write_private"]

STATE_FILE = "lab-state.json"
PASSWD_KEEP = "broker-passwd.keep"
#: pid file name → process name (``/proc/<pid>/comm``) the recorded process must have.
SERVER_PID_FILES = {"mosquitto.pid.json": "mosquitto", "redis.pid.json": "redis-server"}


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600 (it may hold secrets)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def load_state(directory: Path) -> dict | None:
    """The state of an earlier run in ``directory``, or None for a new lab.

    Raises:
        LonewatchError: the file exists but is not a JSON object (names the file).
    """
    path = Path(directory) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise LonewatchError(f"{path} is damaged ({exc}); move it away to start a new lab "
                             "(devices provisioned against this lab must then be provisioned again)") from exc
    return state


def save_state(directory: Path, state: dict) -> None:
    """Write ``state`` to ``<directory>/lab-state.json`` (0600)."""
    write_private(Path(directory) / STATE_FILE, json.dumps(state, indent=2) + "\n")


def port_free(port: int) -> bool:
    """True when 127.0.0.1:``port`` can be bound now (TCP)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def record_server(directory: Path, pid_file: str, pid: int, cwd: Path) -> Path:
    """Record a started server: ``<directory>/<pid_file>`` holds its pid and working dir."""
    path = Path(directory) / pid_file
    write_private(path, json.dumps({"pid": pid, "cwd": str(Path(cwd).resolve())}) + "\n")
    return path


def _matches(pid: int, name: str, cwd: str) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        here = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, IndexError):
        return False
    return state != "Z" and comm.startswith(name[:15]) and os.path.realpath(here) == cwd


def stop_leftovers(directory: Path, timeout_s: float = 5.0) -> list[str]:
    """Stop servers recorded in ``directory``'s pid files that still run (a lab killed with
    SIGKILL): SIGTERM, then SIGKILL after ``timeout_s``. A pid that now belongs to another
    program (other name or working directory) is left alone. Removes the pid files.

    Returns:
        One line per process stopped, e.g. ``"mosquitto (pid 4242)"``.
    """
    stopped = []
    for file_name, name in SERVER_PID_FILES.items():
        path = Path(directory) / file_name
        if not path.exists():
            continue
        try:
            rec = json.loads(path.read_text())
            pid, cwd = int(rec["pid"]), str(rec["cwd"])
        except (ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if _matches(pid, name, cwd):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline and _matches(pid, name, cwd):
                    time.sleep(0.05)
                if not _matches(pid, name, cwd):
                    break
            stopped.append(f"{name} (pid {pid})")
        path.unlink(missing_ok=True)
    return stopped
