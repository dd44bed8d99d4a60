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

from relay.arc import ArcResult
from relay.brokeracl import relay_account
from labstack.servers import Mosquitto, RedisServer, free_port
from labstack.timeline import Timeline

log = logging.getLogger(__name__)

DEVICE_ID = "lw-demo-0001"
#: Relay instances the scenarios start as extra processes (each gets the broker account relay-<instance>).
DEMO_RELAY_INSTANCES = ("relay-a", "relay-b")
ACCOUNT = "1234AB"
ZONE = 17
WORKER = "Anna Hansen"
SITE = "Vestergade 12, basement laundry"
#: Where the simulated GNSS says the worker is (Copenhagen).
LAT, LON = 55.668571, 12.576131
#: The site's contacts in the demo registry, in escalation order: (name, role, phone, language).
CONTACTS = (("Per Jensen", "manager", "+4520110001", "da"), ("Omar Haddad", "guard", "+4520110002", "ar"))
#: Names of the demo's local ARC receivers (primary, secondary).
ARC_NAMES = ("demo-arc", "demo-arc-2")


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


def relay_toml(mq_port: int, relay_password: str, redis_url: str, arc: ArcTarget | None, registry: Path,
               *, arc2: ArcTarget | None = None, modem_port: str = "") -> str:
    """The relay.toml of the local installation (plain MQTT on loopback; TLS is for real
    deployments). ``arc2``: a secondary receiver; ``modem_port``: the relay's SMS modem."""
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
    if arc2 is not None:
        receivers += f"""
[[arc.receivers]]
name = "{ARC_NAMES[1]}"
host = "{arc2.host}"
port = {arc2.port}
timeout_s = 3.0
max_xdata_blocks = 1
"""
    if modem_port:
        receivers += f"""
[modem]
port = "{modem_port}"
flavour = "sim7600"
poll_s = 1.0

[notify]
poll_s = 0.2
timezone = "Europe/Copenhagen"
"""
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

[registry]
file = "{registry}"
{receivers}"""


def registry_toml() -> str:
    """The registry of the local installation: one ARC account, worker, site (with escape-route
    notes and two contacts, ``arc_then_contacts``) and device (:mod:`relay.registry`)."""
    contacts = "".join(f"""
  [[sites.contacts]]
  name = "{name}"
  role = "{role}"
  phone = "{phone}"
  language = "{language}"
""" for name, role, phone, language in CONTACTS)
    return f"""[[accounts]]
account = "{ACCOUNT}"
name = "Demo cleaning company"

[[workers]]
name = "{WORKER}"
number = {ZONE}
language = "da"

[[sites]]
name = "{SITE}"
address = "Vestergade 12, 1456 København K"
escape_routes = "Basement: stairs at the north end, door code 4711."
alarm_system = "Intruder alarm panel by the back door."
policy = "arc_then_contacts"
account = "{ACCOUNT}"
timezone = "Europe/Copenhagen"
{contacts}
[[devices]]
id = "{DEVICE_ID}"
worker = "{WORKER}"
site = "{SITE}"
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

    def start_device(self):
        """Start (or restart) the device daemon on the same pins, modem and state dir."""
        from device.daemon import DeviceDaemon
        from modem.at import Modem

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
                    "sms_fallback", "sms_sent", "sms_failed", "checkin_started", "checkin_expiring"):
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
