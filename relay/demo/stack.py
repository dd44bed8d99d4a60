"""One whole local lonewatch installation with real parts, for the demo and the tests.

A throwaway Mosquitto and Redis on free ports (the project's own config files), one relay
(:mod:`relay.app`, configured from a relay.toml written here), one device daemon on gpiozero
MockFactory pins with the modem simulator on a pseudo-terminal (reached through
``serial.Serial``), and a real SIA DC-09 receiver (pysiaalarm) standing in for the ARC — or
an external receiver.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import LonewatchError
from protocol.sia import parse_position, parse_position_text

from ..arc import ArcResult
from ..localstack import Mosquitto, RedisServer, free_port
from ..timeline import Timeline

log = logging.getLogger(__name__)

DEVICE_ID = "lw-demo-0001"
ACCOUNT = "1234AB"
ZONE = 17
WORKER = "Anna Hansen"
SITE = "Vestergade 12, basement laundry"
#: Where the simulated GNSS says the worker is (Copenhagen).
LAT, LON = 55.668571, 12.576131


@dataclass
class ArcTarget:
    """Where the relay sends: the local pysiaalarm receiver or an external one."""

    host: str
    port: int
    local: bool


class LocalArc:
    """pysiaalarm's threaded TCP receiver, decoding into dicts the demo can print/check.

    pysiaalarm's ADM-CID parser accepts one extended-data block, so the relay is configured
    with ``max_xdata_blocks = 1`` for it and sends the position as alarm text (SPEC §4:
    "know what each receiver in the tests accepts")."""

    def __init__(self, account: str, port: int) -> None:
        from pysiaalarm import SIAAccount, SIAClient

        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.port = port
        self.client = SIAClient("127.0.0.1", port, [SIAAccount(account_id=account)], self._on_event)

    def _on_event(self, event) -> None:
        with self._cond:
            self.events.append(decoded_sia_event(event))
            self._cond.notify_all()

    def wait_event(self, timeout_s: float, sequence: str | None = None) -> dict[str, Any] | None:
        """The first decoded event (with this 4-digit ``sequence`` if given), waiting up to
        ``timeout_s`` seconds; None if none came."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if sequence is None or e["sequence"] == sequence), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout_s)
            return found()

    def __enter__(self) -> "LocalArc":
        self.client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()


def decoded_sia_event(event) -> dict[str, Any]:
    """What an ARC decoded from one pysiaalarm ``SIAEvent``: account, Contact ID code (3
    digits), qualifier, partition, zone, and position (lat/lon) from ``X``/``Y`` extended
    data or from position text in ``I``."""
    out: dict[str, Any] = {
        "account": event.account,
        "code": event.event_type,
        "qualifier": int(event.event_qualifier) if event.event_qualifier else None,
        "partition": event.partition,
        "zone": int(event.ri) if event.ri else None,
        "sia_code": event.code,
        "sequence": event.sequence,
        "lat": None,
        "lon": None,
    }
    xdata = {x.identifier: x.value for x in (event.extended_data or [])}
    if "X" in xdata and "Y" in xdata:
        out["lat"], out["lon"] = parse_position("X" + xdata["X"], "Y" + xdata["Y"])
    elif "I" in xdata:
        try:
            pt = parse_position_text(xdata["I"])
            out["lat"], out["lon"] = pt.lat, pt.lon
        except ValueError:
            pass
    return out


def relay_toml(mq_port: int, relay_password: str, redis_url: str, arc: ArcTarget | None, registry: Path) -> str:
    """The relay.toml of the local installation (plain MQTT on loopback; TLS is for real
    deployments)."""
    receivers = ""
    if arc is not None:
        limit = "max_xdata_blocks = 1\n" if arc.local else ""
        receivers = f"""
[[arc.receivers]]
name = "{"demo-arc" if arc.local else "external-arc"}"
host = "{arc.host}"
port = {arc.port}
timeout_s = 3.0
{limit}"""
    return f"""# written by lonewatch demo
[relay]
instance = "demo"
dispatch_workers = 2

[mqtt]
host = "127.0.0.1"
port = {mq_port}
username = "relay"
password = "{relay_password}"
tls = false

[redis]
url = "{redis_url}"

[arc]
format = "ADM-CID"
attempts_per_receiver = 3
backoff_s = 0.2
{receivers}
[registry]
file = "{registry}"
"""


def registry_toml() -> str:
    """The registry of the local installation: one device, worker, site and account."""
    return f"""[[devices]]
id = "{DEVICE_ID}"
account = "{ACCOUNT}"
zone = {ZONE}
worker = "{WORKER}"
site = "{SITE}"
language = "da"
"""


def device_dict(mq_port: int, state_dir: Path, modem_port: str, password: str) -> dict[str, Any]:
    """The device config of the simulated device (as a dict for ``DeviceConfig.from_dict``)."""
    return {
        "device": {"id": DEVICE_ID, "state_dir": str(state_dir), "silent": True},
        "mqtt": {"host": "127.0.0.1", "port": mq_port, "password": password, "tls": False, "keepalive_s": 10},
        "timing": {"hold_s": 2.0, "alive_interval_s": 60, "resend_after_s": 5},
        "modem": {"port": modem_port, "flavour": "sim7600"},
        "worker": {"name": WORKER, "site": SITE},
    }


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class DemoStack:
    """Servers, ARC, relay, modem simulator and device of one local installation.

    Args:
        timeline: where steps are recorded (``relay_received``, ``arc_ack``, device steps).
        workdir: directory for configs, device state and ``demo.log``.
        arc_addr: ``"HOST:PORT"`` of an external receiver; None starts pysiaalarm locally.
        device_overrides: merged into :func:`device_dict` (e.g. shorter timings).

    Use as a context manager: everything started is stopped on exit, also on errors.
    """

    def __init__(self, timeline: Timeline, workdir: Path, *, arc_addr: str | None = None,
                 device_overrides: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.tl = timeline
        self.workdir = workdir
        self.arc_addr = arc_addr
        self.device_overrides = device_overrides or {}
        self._stack = ExitStack()
        self.local_arc: LocalArc | None = None

    def __enter__(self) -> "DemoStack":
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        import secrets

        from gpiozero.pins.mock import MockFactory

        from device.config import DeviceConfig
        from device.modem.simulator import ModemSimulator

        from ..app import build_service
        from ..config import load_relay_config

        tl, st = self.tl, self._stack
        self.relay_password, self.device_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self.mq = st.enter_context(Mosquitto(users={"relay": self.relay_password, DEVICE_ID: self.device_password}).start())
        self.redis = st.enter_context(RedisServer().start())
        tl.add("servers_up", mosquitto_port=self.mq.port, redis_port=self.redis.port)

        if self.arc_addr:
            host, _, port = self.arc_addr.rpartition(":")
            self.arc = ArcTarget(host or "127.0.0.1", int(port), local=False)
        else:
            self.arc = ArcTarget("127.0.0.1", free_port(), local=True)
            self.local_arc = st.enter_context(LocalArc(ACCOUNT, self.arc.port))
        tl.add("arc_ready", receiver=f"{self.arc.host}:{self.arc.port}", kind="pysiaalarm" if self.local_arc else "external")

        (self.workdir / "registry.toml").write_text(registry_toml())
        self.relay_config_path = self.workdir / "relay.toml"
        self.relay_config_path.write_text(
            relay_toml(self.mq.port, self.relay_password, self.redis.url, self.arc, self.workdir / "registry.toml")
        )
        os.chmod(self.relay_config_path, 0o600)  # it holds the relay's broker password
        self.relay = build_service(load_relay_config(self.relay_config_path), on_stored=self._on_stored, on_result=self._on_result)
        self.relay.start()
        st.callback(self.relay.stop)

        self.sim = st.enter_context(ModemSimulator(flavour="sim7600"))
        self.sim.gnss_fix = (LAT, LON, 1.2)
        self.factory = MockFactory()
        base = device_dict(self.mq.port, self.workdir / "device-state", self.sim.port, self.device_password)
        self.device_config = DeviceConfig.from_dict(_deep_merge(base, self.device_overrides))
        self.device = self.start_device()

        ready = self.device.link.connected.wait(15) and self.relay.wait_connected(15)
        if not ready:
            raise DemoError("device or relay could not connect to the broker")
        deadline = time.monotonic() + 10
        while self.device.modem_state.position is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ms = self.device.modem_state
        pos = ms.position
        tl.add("device_ready", device=DEVICE_ID, signal_dbm=ms.signal_dbm, registration=ms.registration,
               lat=pos and round(pos.lat, 5), lon=pos and round(pos.lon, 5))  # fmt: skip

    def start_device(self):
        """Start (or restart) the device daemon on the same pins, modem and state dir."""
        from device.daemon import DeviceDaemon
        from device.modem.at import Modem

        device = DeviceDaemon(self.device_config, pin_factory=self.factory, modem=Modem(self.sim.port, flavour="sim7600"),
                              observer=self._observe_device)  # fmt: skip
        device.start()
        self._stack.callback(device.stop)
        return device

    # --- a finger on the button ---------------------------------------------------------

    @property
    def button_pin(self):
        """The MockPin of the button (active low: pressed = driven low)."""
        return self.factory.pin(self.device_config.gpio.button_pin)

    def hold(self, seconds: float) -> None:
        """Hold the button down for ``seconds`` like a finger would, then let go."""
        self.button_pin.drive_low()
        time.sleep(seconds)
        self.button_pin.drive_high()

    def tap(self, times: int, *, press_s: float = 0.12, gap_s: float = 0.15) -> None:
        """Short presses, e.g. 3 for cancel, 2 for check-in."""
        for _ in range(times):
            self.button_pin.drive_low()
            time.sleep(press_s)
            self.button_pin.drive_high()
            time.sleep(gap_s)

    # --- observation --------------------------------------------------------------------

    def _observe_device(self, step: str, fields: dict[str, Any]) -> None:
        if step in ("button_down", "alarm_recognised", "cancel_recognised", "queued", "feedback"):
            self.tl.add(step, **fields)

    def _on_stored(self, event, is_new: bool) -> None:
        if event.kind != "checkin_start" and event.kind != "checkin_done":
            self.tl.add("relay_received", id=event.id, kind=event.kind, new=is_new, redis_stream="lw:events")

    def _on_result(self, event, outcome) -> None:
        # Called by the relay's dispatch thread on the ARC's answer, before the device is
        # told; the local receiver's decoded event arrives a moment after its ACK.
        if isinstance(outcome, ArcResult):
            fields = {"id": event.id, "kind": event.kind, "receiver": outcome.receiver, "sequence": outcome.sequence,
                      "latency_ms": round(outcome.latency_s * 1000, 1), "xdata": list(outcome.xdata_sent),
                      "degraded": outcome.degraded}  # fmt: skip
            decoded = self.local_arc.wait_event(2.0, sequence=f"{outcome.sequence:04d}") if self.local_arc else None
            if decoded is not None:
                fields.update({k: decoded[k] for k in ("account", "code", "qualifier", "zone", "lat", "lon", "sia_code")})
            self.tl.add("arc_ack", **fields)
        else:
            self.tl.add("arc_problem", id=event.id, error=str(outcome)[:200])


class DemoError(LonewatchError, RuntimeError):
    """The local installation could not be brought up."""
