"""Real processes for benchmarks and fault tests: the relay (``lonewatch relay run``) and the
device daemon (:mod:`bench.device_proc`) as subprocesses, with their config files.

Both can be stopped cleanly (SIGTERM / ``quit``) or killed (SIGKILL: a crash, a power cut).
Their logs go to files in the work directory (:meth:`RelayProc.log_text`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The repository root (the bench and the packages are imported from here).
ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("GPIOZERO_PIN_FACTORY", "mock")
    return env


@dataclass(frozen=True)
class DeviceSpec:
    """A registry entry: device id, SIA account (hex), Contact ID zone (worker number)."""

    id: str
    account: str
    zone: int
    worker: str = "Test Worker"
    site: str = "Test Site"


def registry_toml(devices: list[DeviceSpec]) -> str:
    """The registry file (:mod:`relay.registry` format) for ``devices``."""
    parts = []
    for d in devices:
        parts.append(f'[[devices]]\nid = "{d.id}"\naccount = "{d.account}"\nzone = {d.zone}\n'
                     f'worker = "{d.worker}"\nsite = "{d.site}"\nlanguage = "en"\n')
    return "\n".join(parts)


def relay_toml(*, instance: str, mq_port: int, relay_password: str, redis_url: str, registry: Path,
               arc_port: int | None, dispatch_workers: int = 4, backoff_s: float = 0.2,
               attempts: int = 3, timeout_s: float = 2.0, max_xdata_blocks: int | None = 1) -> str:
    """A relay.toml for loopback (plain MQTT). ``max_xdata_blocks = 1`` suits pysiaalarm.
    The relay logs in as ``relay-<instance>`` (its own account, issue 15)."""
    arc = ""
    if arc_port is not None:
        cap = f"max_xdata_blocks = {max_xdata_blocks}\n" if max_xdata_blocks is not None else ""
        arc = f'[[arc.receivers]]\nname = "arc"\nhost = "127.0.0.1"\nport = {arc_port}\ntimeout_s = {timeout_s}\n{cap}'
    return f"""[relay]
instance = "{instance}"
dispatch_workers = {dispatch_workers}

[mqtt]
host = "127.0.0.1"
port = {mq_port}
username = "relay-{instance}"
password = "{relay_password}"
tls = false

[redis]
url = "{redis_url}"

[arc]
format = "ADM-CID"
attempts_per_receiver = {attempts}
backoff_s = {backoff_s}
{arc}
[registry]
file = "{registry}"
"""


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to a new file created mode 0600 (it may hold a password)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


class RelayProc:
    """``lonewatch relay run -c <workdir>/<name>.toml`` as a subprocess.

    ``clock_offset_s`` runs it with a wrong wall clock (:mod:`bench.launch`).
    """

    def __init__(self, workdir: Path, toml_text: str, *, name: str = "relay", clock_offset_s: float = 0.0) -> None:
        self.workdir, self.name = workdir, name
        self.config = write_private(workdir / f"{name}.toml", toml_text)
        self.log = workdir / f"{name}.log"
        self.clock_offset_s = clock_offset_s
        self.proc: subprocess.Popen | None = None
        self._log_mark = 0

    def start(self) -> "RelayProc":
        """Start the process (again); connection is awaited with :meth:`wait_connected`."""
        self._log_mark = self.log.stat().st_size if self.log.exists() else 0
        argv = [sys.executable, "-m", "bench.launch"]
        if self.clock_offset_s:
            argv += ["--clock-offset", str(self.clock_offset_s)]
        argv += ["relay", "run", "-c", str(self.config)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         cwd=ROOT, env=_env(), start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_connected(self, timeout_s: float = 15.0) -> bool:
        """True once this run of the process logged that it is connected to the broker."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if "relay connected to" in self.log_text(since_start=True):
                return True
            time.sleep(0.05)
        return False

    def log_text(self, since_start: bool = False) -> str:
        """The log file (only this run's part with ``since_start``)."""
        if not self.log.exists():
            return ""
        data = self.log.read_bytes()
        return data[self._log_mark :].decode("utf-8", "replace") if since_start else data.decode("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def pause(self) -> None:
        """SIGSTOP (the process keeps its connections but does nothing)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def device_config(device_id: str, *, mq_port: int, password: str, state_dir: Path, keepalive_s: int = 10,
                  alive_interval_s: int = 60, resend_after_s: float = 2.0, tls: bool = False,
                  ca_file: str = "", **sections: dict[str, Any]) -> dict[str, Any]:
    """A device config dict for :class:`device.config.DeviceConfig` (MQTT on loopback)."""
    cfg: dict[str, Any] = {
        "device": {"id": device_id, "state_dir": str(state_dir), "silent": False},
        "mqtt": {"host": "127.0.0.1", "port": mq_port, "password": password, "tls": tls, "ca_file": ca_file,
                 "keepalive_s": keepalive_s},
        "timing": {"alive_interval_s": alive_interval_s, "resend_after_s": resend_after_s},
        "worker": {"name": "Test Worker", "site": "Test Site"},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


class DeviceProc:
    """The device daemon as a child process (:mod:`bench.device_proc`).

    ``steps`` collects the JSON lines it prints (observer steps); :meth:`wait_step` waits for
    one. ``state_dir`` in the config persists across :meth:`kill` / :meth:`start`.
    """

    def __init__(self, workdir: Path, config: dict[str, Any], *, name: str | None = None,
                 modem_port: str | None = None, clock_offset_s: float = 0.0) -> None:
        self.name = name or config["device"]["id"]
        self.workdir = workdir
        self.config_path = write_private(workdir / f"{self.name}.json", json.dumps(config))
        self.log = workdir / f"{self.name}.log"
        self.modem_port, self.clock_offset_s = modem_port, clock_offset_s
        self.proc: subprocess.Popen | None = None
        self.steps: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def start(self) -> "DeviceProc":
        """Start the process (again, on the same state directory)."""
        argv = [sys.executable, "-m", "bench.device_proc", str(self.config_path)]
        if self.modem_port:
            argv += ["--modem", self.modem_port]
        if self.clock_offset_s:
            argv += ["--clock-offset", str(self.clock_offset_s)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         cwd=ROOT, env=_env(), start_new_session=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                step = json.loads(raw)
            except ValueError:
                continue
            step["pid"] = proc.pid
            with self._cond:
                self.steps.append(step)
                self._cond.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send(self, command: str) -> None:
        """Write one command line to the daemon's stdin."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((command + "\n").encode())
        self.proc.stdin.flush()

    def wait_step(self, step: str, timeout_s: float, *, after: int = 0, **match: Any) -> dict[str, Any] | None:
        """The first step named ``step`` (index ≥ ``after``) whose fields equal ``match``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for s in self.steps[after:]:
                    if s["step"] == step and all(s.get(k) == v for k, v in match.items()):
                        return s
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def alarm(self, kind: str = "panic", timeout_s: float = 10.0) -> str:
        """Raise an event through the daemon; returns its id once it is on disk.

        Raises:
            TimeoutError: the daemon did not confirm in time.
        """
        mark = len(self.steps)
        self.send(f"alarm {kind}")
        step = self.wait_step("raised", timeout_s, after=mark)
        if step is None:
            raise TimeoutError(f"device {self.name} did not raise the event; log:\n{self.log_text()[-2000:]}")
        return step["id"]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: a power cut, as far as the process can tell."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """``quit`` and wait; SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.send("quit")
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
