"""A console process beside a local installation (``lonewatch demo --console``, the browser
tests and the console bench): ``lonewatch console run`` as a subprocess on a free loopback
port, against the relay's relay.toml, plus throwaway users with random passwords.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from console.users import UserStore
from labstack.servers import free_port
from protocol.errors import LonewatchError
from relay.store import Store

__all__ = ["ConsoleProcess", "ConsoleStartError", "demo_users"]

#: Users made for a local console: login → (role, display name).
DEMO_USERS = {"admin": ("admin", "Console Admin"), "operator": ("operator", "Lise Operator"),
              "viewer": ("viewer", "Victor Viewer")}


class ConsoleStartError(LonewatchError, RuntimeError):
    """The console process did not answer in time (the message carries its log tail)."""


class _PortTaken(Exception):
    """The free port this runner chose was bound by someone else first."""


def demo_users(store: Store) -> dict[str, str]:
    """Create :data:`DEMO_USERS` with fresh random passwords (replacing earlier ones);
    returns login → password."""
    users = UserStore(store)
    out = {}
    for login, (role, name) in DEMO_USERS.items():
        password = secrets.token_urlsafe(12)
        if users.get(login) is not None:
            users.remove(login)
        users.add(login, role, password, name=name)
        out[login] = password
    return out


class ConsoleProcess:
    """``lonewatch console run -c <relay.toml> --listen 127.0.0.1:<port>``; output to ``log``.

    Use :meth:`start` / :meth:`stop` (or as a context manager); :meth:`kill` is a crash."""

    def __init__(self, relay_config: Path, log: Path, *, port: int | None = None) -> None:
        self.relay_config, self.log = relay_config, log
        self.port = port or free_port()
        self._chosen_port = not port  # ours to change if someone took it meanwhile
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "ConsoleProcess":
        """Start and wait until ``/healthz`` answers 200; a port this runner chose that was
        taken before the console could bind it is replaced by another (twice at most).
        Raises ConsoleStartError."""
        for attempt in range(3):
            try:
                started = self._start_once(timeout_s)
            except BaseException as exc:
                if not isinstance(exc, _PortTaken):
                    self.stop()  # Ctrl-C while it starts: leave no console behind (trial finding)
                    raise
                if attempt == 2:
                    raise ConsoleStartError(f"the console did not come up: port {exc} (and two others) taken") from None
                self.port = free_port()
                continue
            self._chosen_port = False  # a restart keeps the address the browsers know
            return started
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> "ConsoleProcess":
        before = self.log.stat().st_size if self.log.exists() else 0
        argv = [sys.executable, "-c", "from cli.main import main; main()", "console", "run", "-c", str(self.relay_config),
                "--listen", f"127.0.0.1:{self.port}"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError, http.client.HTTPException):  # not up yet (or half up)
                pass
            time.sleep(0.1)
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        self.stop()
        if self._chosen_port and "address already in use" in text[before:]:
            raise _PortTaken(self.port)
        tail = text[-2000:]
        raise ConsoleStartError(f"the console did not come up on {self.url}:\n{tail}")

    def kill(self) -> None:
        """SIGKILL (every open browser connection breaks at once)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "ConsoleProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
