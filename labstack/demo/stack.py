"""One whole local lonewatch installation with real parts, for the demo and the tests.

A throwaway Mosquitto and Redis on free ports (the project's own config files), one relay
(:mod:`relay.app`, configured from a relay.toml written here), one device daemon on gpiozero
MockFactory pins with the modem simulator on a pseudo-terminal (reached through
``serial.Serial``), and a real SIA DC-09 receiver (pysiaalarm) standing in for the ARC — or
an external receiver.

This module holds :class:`DemoStack` (starting, driving and observing the parts) and
:class:`DemoError`; the demo's ARC receiver is in :mod:`labstack.demo.local_arc`, its identity
constants and config-file writers in :mod:`labstack.demo.config_files` (issue 9 split); every
name is re-exported here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from protocol.errors import LonewatchError

from relay.arc import ArcResult
from relay.brokeracl import relay_account
from labstack.servers import Mosquitto, RedisServer, free_port
from labstack.timeline import Timeline

from .config_files import (  # noqa: F401  (re-exported: scenarios and tests import them from here)
    ACCOUNT,
    ARC_NAMES,
    CONTACTS,
    DEMO_RELAY_INSTANCES,
    DEVICE_ID,
    LAT,
    LON,
    SITE,
    WORKER,
    ZONE,
    _deep_merge,
    device_dict,
    registry_toml,
    relay_toml,
)
from .local_arc import ArcTarget, LocalArc, decoded_sia_event  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


class DemoStack:
    """Servers, ARC, relay, modem simulator and device of one local installation.

    Args:
        timeline: where steps are recorded (``relay_received``, ``arc_ack``, device steps).
        workdir: directory for configs, device state and ``demo.log``.
        arc_addr: ``"HOST:PORT"`` of an external receiver; None starts pysiaalarm locally.
        device_overrides: merged into :func:`device_dict` (e.g. shorter timings).
        timeout_s: how long scenarios wait for an outcome such as the ARC's ACK, seconds.
        extra_broker_users: more broker accounts (username → password), e.g. for a device
            that is not in the registry.

    Use as a context manager: everything started is stopped on exit, also on errors.
    """

    def __init__(self, timeline: Timeline, workdir: Path, *, arc_addr: str | None = None,
                 device_overrides: dict[str, Any] | None = None,
                 extra_broker_users: dict[str, str] | None = None, timeout_s: float = 30.0) -> None:  # fmt: skip
        self.tl = timeline
        #: How long a scenario waits for an outcome (e.g. the ARC's ACK), seconds.
        self.timeout_s = timeout_s
        self.workdir = workdir
        self.arc_addr = arc_addr
        self.device_overrides = device_overrides or {}
        self.extra_broker_users = extra_broker_users or {}
        self._stack = ExitStack()
        self.local_arc: LocalArc | None = None
        #: Running local ARC receivers by name (:data:`ARC_NAMES`); see :meth:`arc_down`.
        self.arc_servers: dict[str, LocalArc] = {}
        self.arc_ports: dict[str, int] = {}

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
        from modem.simulator import ModemSimulator

        from relay.app import build_service
        from relay.config import load_relay_config

        tl, st = self.tl, self._stack
        self.relay_password, self.device_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        users = {"relay": self.relay_password, DEVICE_ID: self.device_password, **self.extra_broker_users}
        # Issue 15: the broker binds client id = user name, so each extra relay process has its
        # own account (relay-<instance>); these share the demo relay's password.
        users.update({relay_account(n): self.relay_password for n in DEMO_RELAY_INSTANCES})
        self.mq = st.enter_context(Mosquitto(users=users).start())
        self.redis = st.enter_context(RedisServer().start())
        tl.add("servers_up", mosquitto_port=self.mq.port, redis_port=self.redis.port)

        if self.arc_addr:
            host, _, port = self.arc_addr.rpartition(":")
            self.arc = ArcTarget(host or "127.0.0.1", int(port), local=False)
        else:
            self.arc = ArcTarget("127.0.0.1", free_port(), local=True)
            self.arc_ports = {ARC_NAMES[0]: self.arc.port, ARC_NAMES[1]: free_port()}
            st.callback(lambda: [self.arc_down(n, record=False) for n in list(self.arc_servers)])
            for name in ARC_NAMES:
                self.arc_up(name, record=False)
        tl.add("arc_ready", receiver=f"{self.arc.host}:{self.arc.port}", kind="pysiaalarm" if self.local_arc else "external",
               secondary=self.arc_ports.get(ARC_NAMES[1]))  # fmt: skip
        # The relay's own modem (SMS to contacts and their replies) on another pty.
        self.relay_sim = st.enter_context(ModemSimulator(flavour="sim7600"))
        self._watch_contact_sms()

        (self.workdir / "registry.toml").write_text(registry_toml())
        self.relay_config_path = self.workdir / "relay.toml"
        self.relay_config_path.write_text(
            relay_toml(self.mq.port, self.relay_password, self.redis.url, self.arc, self.workdir / "registry.toml",
                       arc2=ArcTarget("127.0.0.1", self.arc_ports[ARC_NAMES[1]], True) if self.local_arc else None,
                       modem_port=self.relay_sim.port)  # fmt: skip
        )
        os.chmod(self.relay_config_path, 0o600)  # it holds the relay's broker password
        self.relay = build_service(load_relay_config(self.relay_config_path), on_stored=self._on_stored, on_result=self._on_result,
                                   on_raised=self._on_raised)  # fmt: skip
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

    def start_device(self, beacons=None):
        """Start (or restart) the device daemon on the same pins, modem and state dir;
        ``beacons``: a BLE scanner (:class:`device.beacon_sim.SimulatedScanner`, issue 12)."""
        from device.daemon import DeviceDaemon
        from modem.at import Modem

        accel = None
        if self.device_config.mandown.enabled:  # the simulated accelerometer on the same MockFactory (issue 10)
            from device.mandown_watch import open_accelerometer

            accel = open_accelerometer(self.device_config.mandown, pin_factory=self.factory)
        device = DeviceDaemon(self.device_config, pin_factory=self.factory, modem=Modem(self.sim.port, flavour="sim7600"),
                              observer=self._observe_device, beacons=beacons, accel=accel)  # fmt: skip
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

    # --- ARC receivers and contacts' phones ---------------------------------------------

    def arc_down(self, name: str, *, record: bool = True) -> None:
        """Stop the local ARC receiver ``name`` (connections are refused until :meth:`arc_up`)."""
        server = self.arc_servers.pop(name, None)
        if server is not None:
            server.__exit__(None, None, None)
            if record:
                self.tl.add("arc_down", receiver=name)

    def arc_up(self, name: str, *, record: bool = True) -> None:
        """(Re)start the local ARC receiver ``name`` on its port."""
        if name in self.arc_servers:
            return
        server = LocalArc(ACCOUNT, self.arc_ports[name]).__enter__()
        self.arc_servers[name] = server
        if name == ARC_NAMES[0]:
            self.local_arc = server
        if record:
            self.tl.add("arc_up", receiver=name)

    def contact_reply(self, phone: str, text: str) -> None:
        """A contact answers the relay's SMS from ``phone`` (arrives at the relay's modem)."""
        self.relay_sim.deliver_sms(phone, text)
        self.tl.add("contact_reply", phone=phone, text=text)

    def _watch_contact_sms(self) -> None:
        """Record ``contact_sms`` (number, first line, parts) for each complete SMS the relay
        sends through its modem."""
        from modem import sms

        stop = threading.Event()
        self.contact_sms: list[tuple[str, str]] = []

        def run() -> None:
            seen, parts = 0, {}
            while not stop.wait(0.05):
                pdus = self.relay_sim.sent_pdus
                for pdu in pdus[seen:]:
                    msg = sms.decode_submit(pdu)
                    ref, total, seq = msg.concat or (0, 1, 1)
                    got = parts.setdefault((msg.number, ref), {})
                    got[seq] = msg.text
                    if len(got) == total:
                        text = "".join(got[i] for i in sorted(got))
                        del parts[(msg.number, ref)]
                        self.contact_sms.append((msg.number, text))
                        self.tl.add("contact_sms", to=msg.number, first_line=text.splitlines()[0], parts=total)
                seen = len(pdus)

        thread = threading.Thread(target=run, name="demo-contact-sms", daemon=True)
        thread.start()
        self._stack.callback(lambda: (stop.set(), thread.join(2)))

    # --- supervision and more relays (issue 4: lost-contact, relay-failover) -------------

    def supervise(self, *, alive_interval_s: float, missed_alives: int, grace_s: float, sweep_interval_s: float = 0.1,
                  mode: str = "on_shift") -> float:  # fmt: skip
        """Give the in-process relay short supervision intervals (the demo's stand-in for a
        ``[supervision]`` section); returns the lost-contact limit in seconds."""
        from relay.store import SupervisionPolicy

        store = self.relay.store
        store.supervision = SupervisionPolicy(alive_interval_s=alive_interval_s, missed_alives=missed_alives, grace_s=grace_s,
                                              mode=mode, checkin_grace_s=store.supervision.checkin_grace_s)  # fmt: skip
        if self.relay.supervisor is not None:
            self.relay.supervisor.sweep_interval_s = sweep_interval_s
        limit = store.supervision.limit_s
        self.tl.add("supervision", mode=mode, limit_s=limit, formula=f"{alive_interval_s} x {missed_alives} + {grace_s}")
        return limit

    def stop_relay(self) -> None:
        """Stop the in-process relay (for scenarios that run relays as processes)."""
        if not getattr(self, "_relay_stopped", False):
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            self._relay_stopped = True
            # Gone for good: end its broker session too, or Mosquitto keeps queueing a share
            # of the messages for it (devices would have to resend those).
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
            self.relay.client.disconnect(properties=props)
            self.relay.stop()
            self.tl.add("relay_stopped", instance="demo (in-process)")

    def start_relay_process(self, instance: str, mqtt_keys: dict[str, Any] | None = None, **relay_keys: Any):
        """Start ``lonewatch relay run`` as a process named ``instance`` (primary receiver
        only, no modem), logging to ``<workdir>/relay-<instance>.log``; ``relay_keys`` go
        into its ``[relay]`` table (e.g. ``reclaim_idle_s=2``), ``mqtt_keys`` into ``[mqtt]``.
        Stopped with the stack. Returns the :class:`subprocess.Popen`."""
        import subprocess
        import sys

        text = relay_toml(self.mq.port, self.relay_password, self.redis.url, self.arc, self.workdir / "registry.toml")
        extra = "".join(f"\n{k} = {v!r}" for k, v in relay_keys.items())
        text = text.replace('instance = "demo"', f'instance = "{instance}"{extra}', 1)
        text = text.replace('username = "relay"', f'username = "{relay_account(instance)}"', 1)  # issue 15
        text = text.replace("[mqtt]\n", "[mqtt]\n" + "".join(f"{k} = {v!r}\n" for k, v in (mqtt_keys or {}).items()), 1)
        path = self.workdir / f"relay-{instance}.toml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the broker password
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        log = open(self.workdir / f"relay-{instance}.log", "ab")  # noqa: SIM115 - closed with the stack
        proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "-v", "relay", "run", "-c", str(path)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

        def stop() -> None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()

        self._stack.callback(stop)
        self.tl.add("relay_started", instance=instance, pid=proc.pid)
        return proc

    def _on_raised(self, event) -> None:
        self.tl.add("relay_raised", id=event.id, kind=event.kind, **{k: v for k, v in event.data.items() if k in ("deadline", "late_s", "restores")})

    # --- observation --------------------------------------------------------------------

    def _observe_device(self, step: str, fields: dict[str, Any]) -> None:
        if step in ("button_down", "alarm_recognised", "cancel_recognised", "queued", "feedback",
                    "sms_fallback", "sms_sent", "sms_failed", "checkin_started", "checkin_expiring",
                    "readiness", "beacon_place", "unprotected_warning", "unprotected_over",  # last four: issue 12
                    "mandown", "mandown_pause", "mandown_sensor_error"):
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
            server = self.arc_servers.get(outcome.receiver) if self.local_arc else None
            decoded = server.wait_event(2.0, sequence=f"{outcome.sequence:04d}") if server else None
            if decoded is not None:
                fields.update({k: decoded[k] for k in ("account", "code", "qualifier", "zone", "lat", "lon", "sia_code")})
            self.tl.add("arc_ack", **fields)
        else:
            self.tl.add("arc_problem", id=event.id, error=str(outcome)[:200])


class DemoError(LonewatchError, RuntimeError):
    """The local installation could not be brought up."""
