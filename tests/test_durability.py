"""Durability of the device (SPEC §2 delivery guarantees, §6 "alarms lost under … device power
cut: 0"): the daemon runs in a process of its own (:mod:`labstack.device_runner`, MockFactory
pins) against the real chain — Mosquitto, Redis, the relay and pysiaalarm as the ARC
(:class:`labstack.demo.stack.DemoStack`, its in-process device stopped) — and is killed with
SIGKILL at each step of sending, then started again on the same state directory.

Every alarm must reach the ARC, none twice, and sequence numbers must go on increasing.
Also: SIGTERM is a clean stop (systemd ``STOPPING=1``, events stay queued and are sent after
the next start) and the systemd notifications READY / WATCHDOG / STOPPING are sent.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labstack.demo.stack import DEVICE_ID, DemoStack, device_dict
from labstack.timeline import Timeline

pytestmark = pytest.mark.integration

HOLD = "hold 1.0\n"


class Runner:
    """One ``python -m labstack.device_runner`` process and its JSON-line steps."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.steps: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "labstack.device_runner", str(config), "--log", str(config.with_suffix(".log")), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.steps.put(json.loads(line))
            except ValueError:
                pass

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def wait(self, step: str, timeout_s: float = 20.0, **match: Any) -> dict[str, Any]:
        for s in self.seen:
            if s["step"] == step and all(s.get(k) == v for k, v in match.items()):
                return s
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {step} {match} within {timeout_s} s; saw {[s['step'] for s in self.seen][-30:]}")
            try:
                s = self.steps.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(s)
            if s["step"] == step and all(s.get(k) == v for k, v in match.items()):
                return s

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DemoStack]:
    (tmp_path / "demo").mkdir()
    with DemoStack(Timeline(live=False), tmp_path / "demo") as s:
        s.device.stop()  # the device under test runs in its own process instead
        yield s


def write_config(stack: DemoStack, tmp_path: Path) -> Path:
    cfg = device_dict(stack.mq.port, tmp_path / "state", "/dev/null", stack.device_password)
    cfg["modem"] = {"enabled": False}
    cfg["timing"].update({"hold_s": 0.8, "resend_after_s": 1})
    path = tmp_path / "device.json"
    path.write_text(json.dumps(cfg))
    return path


def arc_acks(stack: DemoStack, event_id: str) -> list[dict[str, Any]]:
    return [e for e in list(stack.tl.steps) if e["step"] == "arc_ack" and e.get("id") == event_id]


@pytest.mark.parametrize("freeze_at,extra", [
    ("publishing", ()),            # queued on disk, not yet published
    ("published", ("--hold-acks",)),  # published, the relay's ack not applied
    ("ack_arrived", ()),           # the relay stored it and acked; the device had not deleted it
])
def test_kill9_at_each_step_of_sending(stack: DemoStack, tmp_path: Path, freeze_at: str, extra: tuple[str, ...]) -> None:
    config = write_config(stack, tmp_path)
    first = Runner(config, "--freeze-at", freeze_at, *extra)
    try:
        first.wait("connection", connected=True)
        first.send(HOLD)
        alarm = first.wait("queued", kind="silent_panic")
        first.wait("frozen", at=freeze_at)
        first.kill9()
    finally:
        first.close()

    second = Runner(config)
    try:
        second.wait("ack_received", 30, id=alarm["id"])
        assert stack.tl.wait_for("arc_ack", 30, id=alarm["id"]) is not None
        time.sleep(1.0)  # a second copy would reach the ARC within milliseconds
        assert len(arc_acks(stack, alarm["id"])) == 1
        assert stack.local_arc is not None
        assert len([e for e in stack.local_arc.events if e["code"] == "122"]) == 1

        second.send(HOLD)  # sequence numbers went on across the kill
        later = second.wait("queued", kind="silent_panic")
        assert int(later["id"].rsplit(":", 1)[1]) > int(alarm["id"].rsplit(":", 1)[1])
        second.wait("ack_received", 30, id=later["id"])
        second.send("quit\n")
        assert second.proc.wait(15) == 0
    finally:
        second.close()


def test_sigterm_keeps_queued_events_and_talks_to_systemd(stack: DemoStack, tmp_path: Path) -> None:
    config = write_config(stack, tmp_path)
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(20)
    env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
    runner = Runner(config, env=env)
    try:
        assert sock.recv(4096).decode().startswith("READY=1")
        assert sock.recv(4096) == b"WATCHDOG=1"  # healthy: pinged every 0.5 s
        runner.wait("connection", connected=True)
        stack.mq.stop()  # nothing can be delivered now
        runner.wait("connection", connected=False)
        runner.send(HOLD)
        alarm = runner.wait("queued", kind="silent_panic")
        runner.proc.send_signal(signal.SIGTERM)
        assert runner.proc.wait(20) == 0
        messages = []
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                break
            if messages[-1] == "STOPPING=1":
                break
        assert "STOPPING=1" in messages
    finally:
        runner.close()
        sock.close()

    stack.mq.start()
    again = Runner(config)
    try:
        again.wait("ack_received", 30, id=alarm["id"])
        assert stack.tl.wait_for("arc_ack", 30, id=alarm["id"]) is not None
        assert len(arc_acks(stack, alarm["id"])) == 1
    finally:
        again.close()
    assert DEVICE_ID in alarm["id"]
