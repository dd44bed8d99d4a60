"""The daemon's local control channel: ``lonewatch device shift start|end`` and friends talk to
the running daemon here (SPEC §2: shift start/end without gestures).

A Unix stream socket ``<state_dir>/control.sock``, mode 0600, one JSON request line and one
JSON reply line per connection. Only root and the daemon's own user may talk to it: the file
mode keeps others out and every peer's uid is checked again with ``SO_PEERCRED``.

Why a socket and not a request file the daemon picks up: the installer gets an answer at once
and an exit code that means something — the event id that was queued, a clear refusal
("no check-in running"), or "the daemon is not running" — while a request file gives no answer,
and one written while the daemon is down would fire at some later start, hours out of context.
The daemon stays the only writer of its state (on shift, running check-in).

Requests: ``{"cmd": "shift_start"}``, ``{"cmd": "shift_end"}``, ``{"cmd": "checkin_start",
"duration_s": 1800}``, ``{"cmd": "checkin_done"}``, ``{"cmd": "status"}``.
Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol.errors import LonewatchError

log = logging.getLogger(__name__)

__all__ = ["ControlError", "ControlServer", "request", "socket_path"]

MAX_REQUEST = 4096
SOCKET_NAME = "control.sock"


class ControlError(LonewatchError, ConnectionError):
    """The daemon cannot be reached (not running, no permission) or answered nonsense."""


def socket_path(state_dir: str | os.PathLike[str]) -> Path:
    """``<state_dir>/control.sock``."""
    return Path(state_dir) / SOCKET_NAME


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Serves control requests in a background thread.

    Args:
        path: socket path (an old socket file there is replaced).
        handler: ``(request dict) -> reply dict``; exceptions become ``{"ok": false}``.
    """

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Bind (mode 0600) and serve. Raises OSError if the socket cannot be made."""
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # the socket file is created 0600, never wider
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(4)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="device-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            with conn:
                try:
                    self._one(conn)
                except Exception:  # noqa: BLE001 - a bad client never stops the daemon
                    log.exception("control request failed")

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        uid = _peer_uid(conn)
        if uid not in (0, os.getuid()):
            _send(conn, {"ok": False, "error": "permission denied"})
            return
        data = b""
        while b"\n" not in data and len(data) < MAX_REQUEST:
            chunk = conn.recv(1024)
            if not chunk:
                break
            data += chunk
        try:
            req = json.loads(data.decode("utf-8").strip() or "null")
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError("expected a JSON object with \"cmd\"")
        except (ValueError, UnicodeDecodeError) as exc:
            _send(conn, {"ok": False, "error": f"bad request: {exc}"})
            return
        try:
            reply = self.handler(req)
        except LonewatchError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001
            log.exception("control command %s failed", req.get("cmd"))
            reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
        _send(conn, reply)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def _send(conn: socket.socket, obj: dict[str, Any]) -> None:
    conn.sendall(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")


def request(state_dir: str | os.PathLike[str], req: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon whose state dir is ``state_dir``; returns its reply.

    Raises:
        ControlError: the daemon is not running (no socket / refused), permission denied, or
            the reply is not JSON.
    """
    path = socket_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"the device daemon is not running (no {path})") from None
        except ConnectionRefusedError:
            raise ControlError(f"the device daemon is not running ({path} refuses connections)") from None
        except PermissionError:
            raise ControlError(f"no permission to talk to the device daemon ({path}); run as root "
                               "or as the daemon's user") from None
        sock.sendall(json.dumps(req).encode("utf-8") + b"\n")
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError("the device daemon did not answer in time") from None
    try:
        reply = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ControlError(f"the device daemon answered nonsense: {data[:80]!r}") from None
    if not isinstance(reply, dict):
        raise ControlError("the device daemon answered nonsense")
    return reply
