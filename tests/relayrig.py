"""Test rig for relay integration tests (supervision, scale-out, ARC link, operability):
relay configs with short intervals, an in-process relay, a relay as a subprocess
(``lonewatch relay run``, killable with SIGKILL) and a scripted device speaking MQTT.

Real servers only: the ``mosquitto`` / ``redis_server`` fixtures and pysiaalarm
(:class:`labstack.demo.stack.LocalArc`) as the ARC.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from protocol.messages import Alive, Event, Position, decode, encode
from protocol.topics import topic
from relay.app import build_service
from relay.config import RelayConfig
from relay.service import RelayService
from relay.store import DeviceEntry, Store

ACCOUNT = "1234AB"


def relay_dict(mq_port: int, password: str, redis_url: str, arc_port: int | None, *, instance: str = "t1",
               supervision: dict[str, Any] | None = None, receiver: dict[str, Any] | None = None,
               **sections: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """A relay.toml as a dict: plain MQTT on loopback, short retry and reclaim times,
    pysiaalarm-compatible receiver (one extended-data block)."""
    d: dict[str, Any] = {
        "relay": {"instance": instance, "dispatch_workers": 2, "reclaim_idle_s": 2.0},
        "mqtt": {"host": "127.0.0.1", "port": mq_port, "username": f"relay-{instance}", "password": password, "tls": False},
        "redis": {"url": redis_url},
        "arc": {"attempts_per_receiver": 1, "backoff_s": 0.05, "account": ACCOUNT, "receivers": []},
        "supervision": {"sweep_interval_s": 0.1, **(supervision or {})},
    }
    if arc_port is not None:
        d["arc"]["receivers"] = [{"name": "arc", "host": "127.0.0.1", "port": arc_port, "timeout_s": 1.0,
                                  "max_xdata_blocks": 1, **(receiver or {})}]  # fmt: skip
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    return d


def register(redis_url: str, *devices: tuple[str, int]) -> Store:
    """Register ``(device id, zone)`` pairs under :data:`ACCOUNT`; returns a Store."""
    store = Store.from_url(redis_url)
    for dev, zone in devices:
        store.register(DeviceEntry(dev, ACCOUNT, zone, f"Worker {zone}", "Site"))
    return store


@contextmanager
def running_relay(cfg: dict[str, Any], **hooks: Any) -> Iterator[RelayService]:
    """An in-process relay from ``cfg`` (dict), started and connected; stopped afterwards."""
    service = build_service(RelayConfig.from_dict(cfg), **hooks)
    service.start()
    try:
        assert service.wait_connected(15), "relay could not connect"
        # Connected is not subscribed: wait for the SUBACK (issue 14 broker link), or a device
        # message published right now would find no subscriber at a fresh broker.
        link = getattr(service, "broker_link", None)
        deadline = time.monotonic() + 15
        while link is not None and not link.up and time.monotonic() < deadline:
            time.sleep(0.02)
        yield service
    finally:
        service.stop()


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` (two levels: tables, arrays of tables) as TOML, mode 0600."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines: list[str] = []
    for name, table in data.items():
        lines.append(f"[{name}]")
        subs = []
        for k, v in table.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                subs.append((k, v))
            elif not isinstance(v, list):
                lines.append(f"{k} = {val(v)}")
        for k, items in subs:
            for item in items:
                lines.append(f"[[{name}.{k}]]")
                lines += [f"{ik} = {val(iv)}" for ik, iv in item.items()]
        lines.append("")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines))
    return path


class RelayProcess:
    """``lonewatch relay run -c <toml>`` as a subprocess (its own session), output to a file."""

    def __init__(self, config: Path, log: Path, *, verbose: int = 1) -> None:
        self.config, self.log = config, log
        self.verbose = verbose
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RelayProcess":
        argv = [sys.executable, "-c", "from cli.main import main; main()"] + (["-" + "v" * self.verbose] if self.verbose else []) + ["relay", "run", "-c", str(self.config)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
        return self

    def wait_log(self, text: str, timeout_s: float = 20.0) -> bool:
        """True once ``text`` appears in the output."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return text in self.output()
            time.sleep(0.05)
        return False

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, like a crash or a power cut."""
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


class ScriptedDevice:
    """A device that is only its MQTT link: publishes events/alives (QoS 1) and records the
    relay's acks. ``seq`` continues from ``start_seq``."""

    def __init__(self, device_id: str, port: int, password: str, *, start_seq: int = 1) -> None:
        self.device_id, self.seq = device_id, start_seq
        self.acks: list[Any] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(device_id, password)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic(device_id, "ack"), qos=1)
        self.client.loop_start()
        subscribed.wait(10)  # acks published before the SUBACK would be lost

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.acks.append(decode(msg.payload))
            self._cond.notify_all()

    def event(self, kind: str, data: dict[str, Any] | None = None, *, position: Position | None = None) -> Event:
        ev = Event(self.device_id, self.seq, kind, time.time(), position, data or {})
        self.seq += 1
        self.client.publish(topic(self.device_id, "event"), encode(ev), qos=1).wait_for_publish(5)
        return ev

    def alive(self, battery_pct: int | None = 80) -> None:
        a = Alive(self.device_id, time.time(), battery_pct, -71, "home", Position(55.67, 12.58, 4.0, time.time()), 1.0, "test", 0)
        self.client.publish(topic(self.device_id, "alive"), encode(a), qos=1).wait_for_publish(5)

    def wait_ack(self, event_id: str, stage: str, timeout_s: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(a.id == event_id and a.stage == stage for a in self.acks), timeout_s)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def arc_codes(arc: Any) -> list[tuple[str, int | None, int | None]]:
    """``(code, qualifier, zone)`` of every non-NULL event the local ARC decoded."""
    return [(e["code"], e["qualifier"], e["zone"]) for e in list(arc.events) if e["code"] is not None]
