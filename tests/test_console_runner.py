"""The console runner of the lab (labstack/console_runner.py): a free port it chose that
another process binds before the console does is replaced, not a failed start; a port the
caller gave is never changed (a restart keeps the address the browsers know)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from labstack.console_runner import ConsoleProcess, ConsoleStartError

pytestmark = pytest.mark.integration


def _relay_toml(tmp_path: Path, redis_url: str) -> Path:
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f'[redis]\nurl = "{redis_url}"\n\n[console]\nlanguage = "en"\n')
    return cfg


def _squat(port: int) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_a_chosen_port_taken_meanwhile_is_replaced(redis_server, tmp_path: Path) -> None:
    console = ConsoleProcess(_relay_toml(tmp_path, redis_server.url), tmp_path / "console.log")
    taken = console.port
    with _squat(taken):  # someone binds "our" port between choosing and starting
        with console:
            assert console.port != taken
            with urllib.request.urlopen(console.url + "/healthz", timeout=5) as resp:
                assert resp.status == 200
    assert "address already in use" in (tmp_path / "console.log").read_text()


def test_a_given_port_taken_is_a_clear_error(redis_server, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with _squat(port):
        console = ConsoleProcess(_relay_toml(tmp_path, redis_server.url), tmp_path / "console.log", port=port)
        with pytest.raises(ConsoleStartError, match="address already in use"):
            console.start()
        assert console.port == port
