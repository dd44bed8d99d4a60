"""``lonewatch doctor`` (on the device) and ``lonewatch test-alarm``: is this device ready to
protect somebody? (SPEC §5)

Checks, in order; each ends ``pass``, ``warn``, ``fail`` or ``skip`` with the fix to try:

==================  =========================================================================
check               passes when
==================  =========================================================================
config              device.toml is valid and uses TLS
button              the installer presses the button within the timeout ("press now")
modem.port          the AT port opens and the modem answers
modem.sim           the SIM is READY (PIN entered if configured)
modem.registration  registered on the home network or roaming (CREG/CGREG/CEREG)
modem.signal        signal at least −105 dBm (−105…−95 dBm: a warning)
modem.gnss          a GNSS fix (none yet: a warning — a cold start takes minutes outdoors)
broker              TLS connection to the broker with the device's own credentials
relay               a ``test`` event reaches the relay and its ``received`` ack comes back
clock               device clock within ±20 s of the relay's (SIA timestamps, SPEC §4)
==================  =========================================================================

Clock offset: the relay stamps every ack with its own clock (``Ack.ts``) and the relay host
runs NTP (SPEC §7), so the offset is ``ack.ts − (sent + received) / 2`` with an uncertainty
of half the round trip — no extra protocol and no Internet time server needed (the device may
only reach the broker). It needs the relay round trip, so it is skipped when that failed.

The test event is a real event: its sequence number is taken from the device's own queue
(``state_dir/queue.db``, shared safely with a running daemon through SQLite locking) so it can
never collide with a real alarm's id, and it is queued there before it is sent, so even a
doctor killed half-way leaves nothing undelivered. The relay sends it to the ARC as Contact
ID 601 (manual test) — exactly what ``test-alarm`` shows end to end.

Stop the device service before running doctor (``sudo systemctl stop lonewatch-device``):
the daemon owns the button pin and the modem's AT port.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from protocol.errors import ValidationError
from protocol.messages import Ack, Event, decode_for_topic, encode
from protocol.topics import topic

from device.config import DeviceConfig

__all__ = [
    "CLOCK_LIMIT_S",
    "Check",
    "Doctor",
    "RoundTrip",
    "RoundTripError",
    "TestEventSession",
    "simulated_hardware",
]

Status = Literal["pass", "warn", "fail", "skip"]
#: Largest acceptable device clock offset, seconds (SIA DC-09 receivers accept +20/−40 s).
CLOCK_LIMIT_S = 20.0
#: Signal thresholds in dBm: below FAIL is too weak for reliable alarms, below WARN marginal.
SIGNAL_FAIL_DBM, SIGNAL_WARN_DBM = -105, -95
CHECK_NAMES = ("config", "button", "modem.port", "modem.sim", "modem.registration", "modem.signal",
               "modem.gnss", "broker", "relay", "clock")
#: Groups accepted by ``--skip``.
SKIP_GROUPS = ("button", "modem", "broker", "relay", "clock")


@dataclass
class Check:
    """One result: ``name`` (see :data:`CHECK_NAMES`), ``status``, a one-line ``detail``,
    the ``fix`` to try (for warn/fail) and machine-readable ``data``."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix, **self.data}


# --------------------------------------------------------------------------- MQTT session


class RoundTripError(Exception):
    """The broker or the relay did not answer as needed; ``fix`` says what to try."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class RoundTrip:
    """One test event's journey: ``event_id``; ``sent_at``/``received_at`` device wall clock
    (s); ``received_after_s`` publish → ``received`` ack (s); ``relay_ts`` the relay's clock
    in that ack; ``arc`` the ``arc`` ack's detail (receiver, latency_ms) or None;
    ``arc_after_s`` publish → ``arc`` ack (s) or None; ``arc_failed`` reason or None."""

    event_id: str
    sent_at: float
    received_at: float
    received_after_s: float
    relay_ts: float
    arc: dict[str, Any] | None = None
    arc_after_s: float | None = None
    arc_failed: str | None = None

    @property
    def clock_offset_s(self) -> float:
        """Device clock minus relay clock, seconds (positive: the device is ahead)."""
        return (self.sent_at + self.received_at) / 2 - self.relay_ts

    @property
    def clock_uncertainty_s(self) -> float:
        return (self.received_at - self.sent_at) / 2


class TestEventSession:
    """A short MQTT session with the device's own credentials (TLS per device.toml) that
    sends ``test`` events and waits for their acks. It asks for the client id
    ``<device>-doctor-…``, but the broker binds client ids to user names (issue 15), so it
    resumes the device's own session (a running daemon is disconnected for the round trip and
    reconnects by itself). Use as a context manager.

    Raises (from :meth:`connect` / :meth:`send_test`): :class:`RoundTripError`.
    """

    def __init__(self, cfg: DeviceConfig, *, source: str = "doctor") -> None:
        import paho.mqtt.client as mqtt

        self.cfg, self.source = cfg, source
        self.device_id = cfg.device.id
        self._cond = threading.Condition()
        self._acks: list[tuple[float, Ack]] = []
        self._connack: Any = None
        self._subscribed = False
        self.tls_version: str | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=f"{self.device_id}-{source}-{uuid.uuid4().hex[:6]}")
        m = cfg.mqtt
        self.client.username_pw_set(m.username or self.device_id, m.password or None)
        if m.tls:
            cert = getattr(m, "cert_file", "") or None
            key = getattr(m, "key_file", "") or None
            self.client.tls_set(ca_certs=m.ca_file or None, certfile=cert, keyfile=key)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self._connack = reason_code
            self._cond.notify_all()
        if not reason_code.is_failure:
            client.subscribe(topic(self.device_id, "ack"), qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            ack = decode_for_topic(msg.topic, msg.payload)
        except ValidationError:
            return
        if isinstance(ack, Ack):
            with self._cond:
                self._acks.append((time.time(), ack))
                self._cond.notify_all()

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe to the device's ack topic."""
        m = self.cfg.mqtt
        where = f"{m.host}:{m.port}"
        try:
            # The broker binds the client id to the user name (issue 15), so this session is the
            # device's own: resume it (clean_start False, same expiry as the daemon's link) so a
            # running daemon's queued acks and subscription survive; it resends what we took.
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            from .link import SESSION_EXPIRY_S

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            self.client.connect(m.host, m.port, keepalive=30, clean_start=False, properties=props)
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or str(exc)
            if "not yet valid" in reason or "expired" in reason:
                fix = "the device clock is wrong: let NTP set it (timedatectl set-ntp true) and try again"
            elif "hostname" in reason or "IP address mismatch" in reason:
                fix = (f"the broker's certificate does not name {m.host!r}: re-issue it with "
                       f"`lonewatch pki issue-server --host {m.host}`, or fix [mqtt] host")
            else:
                fix = (f"[mqtt] ca_file ({m.ca_file or 'system store'}) must be the project CA that signed the "
                       "broker's certificate (provision writes it as ca.crt)")
            raise RoundTripError(f"TLS: broker certificate rejected ({reason})", fix) from None
        except ssl.SSLError as exc:
            raise RoundTripError(f"TLS handshake with {where} failed: {exc}",
                                 "is this the broker's TLS port (8883)? a client certificate may be required") from None
        except ConnectionRefusedError:
            raise RoundTripError(f"nothing listens on {where}", "check [mqtt] host/port and that the broker runs") from None
        except OSError as exc:
            raise RoundTripError(f"cannot reach {where}: {exc.strerror or exc}",
                                 "check the network route (cellular data / Wi-Fi), DNS and firewalls") from None
        self.client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None, timeout_s)
            connack = self._connack
        if connack is None:
            raise RoundTripError(f"no answer from the broker at {where} within {timeout_s:.0f} s",
                                 "a firewall may drop the connection; check the port and the broker's log")
        if connack.is_failure:
            if str(connack) in ("Not authorized", "Bad user name or password"):
                raise RoundTripError(f"the broker refused the login of {self.device_id} ({connack})",
                                     "the password in device.toml is not in the broker's password file: re-run "
                                     "`lonewatch provision` for this device and reload the broker")
            raise RoundTripError(f"the broker refused the connection ({connack})", "see the broker's log")
        with self._cond:
            if not self._cond.wait_for(lambda: self._subscribed, timeout_s):
                raise RoundTripError("the broker did not confirm the ack subscription", "see the broker's log")
        sock = self.client.socket()
        self.tls_version = sock.version() if isinstance(sock, ssl.SSLSocket) else None

    def send_test(self, *, wait_arc: bool, timeout_s: float) -> RoundTrip:
        """Queue and publish a ``test`` event; wait for ``received`` (and ``arc`` if
        ``wait_arc``), each within ``timeout_s`` seconds of sending.

        Raises:
            RoundTripError: the device queue cannot be written, or an ack did not come.
        """
        with _as_owner_of(self.cfg.queue_path.parent):
            return self._send_test(wait_arc=wait_arc, timeout_s=timeout_s)

    def _send_test(self, *, wait_arc: bool, timeout_s: float) -> RoundTrip:
        from .queue import PRIORITY_EVENT, EventQueue, QueueError

        try:
            queue = EventQueue(self.cfg.queue_path)
        except QueueError as exc:
            raise RoundTripError(f"the device queue cannot be opened: {exc}",
                                 "run this on the device as root or the lonewatch user (state_dir must be writable)") from None
        try:
            seq = queue.next_sequence()
            event = Event(device=self.device_id, seq=seq, kind="test", ts=time.time(), data={"source": self.source})
            payload = encode(event)
            # Queued first (SPEC §2): if we die now, the daemon delivers it later.
            queue.put(event.id, "test", payload, priority=PRIORITY_EVENT)
            sent_at = time.time()
            t0 = time.monotonic()
            self.client.publish(topic(self.device_id, "event"), payload, qos=1)
            received = self._wait_ack(event.id, ("received",), t0 + timeout_s)
            if received is None:
                raise RoundTripError(
                    f"the relay did not acknowledge test event {event.id} within {timeout_s:.0f} s",
                    "is the relay running and connected to the broker? is this device registered "
                    "(`lonewatch status` on the relay host; its dead letters say why an event was refused)?")
            received_at, ack = received
            queue.ack(event.id)
            trip = RoundTrip(event.id, sent_at, received_at, received_at - sent_at, ack.ts)
            if not wait_arc:
                return trip
            final = self._wait_ack(event.id, ("arc", "arc_failed"), t0 + timeout_s)
            if final is None:
                return trip
            at, ack = final
            if ack.stage == "arc_failed":
                return replace(trip, arc_failed=str(ack.detail.get("reason", "failed")))
            return replace(trip, arc=dict(ack.detail), arc_after_s=at - sent_at)
        finally:
            queue.close()

    def _wait_ack(self, event_id: str, stages: tuple[str, ...], deadline: float) -> tuple[float, Ack] | None:
        def found() -> tuple[float, Ack] | None:
            return next(((t, a) for t, a in self._acks if a.id == event_id and a.stage in stages), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, max(0.0, deadline - time.monotonic()))
            return found()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "TestEventSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _as_owner_of(directory: Any) -> Iterator[None]:
    """Run as the owner of the device's state directory while touching its queue. ``sudo
    lonewatch doctor`` would otherwise create ``queue.db`` (or its ``-wal``/``-shm``) as
    root, and the daemon, running as its own user, could then no longer write its queue."""
    import os

    try:
        st = os.stat(directory)
    except OSError:
        st = None
    if os.geteuid() != 0 or st is None or st.st_uid == 0:
        yield
        return
    egid = os.getegid()
    os.setegid(st.st_gid)
    os.seteuid(st.st_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)


# --------------------------------------------------------------------------- the doctor


class Doctor:
    """Runs the checks. ``report(check)`` is called as each result is known (live output);
    ``prompt(text)`` tells the installer to act ("press the button now").

    Args:
        cfg: the device's validated config.
        pin_factory: gpiozero pin factory (None = real pins; MockFactory with ``--simulate``).
        finger: optional ``() -> None`` started in a thread after the prompt (simulated press).
        button_timeout_s, relay_timeout_s: how long to wait, seconds.
    """

    def __init__(self, cfg: DeviceConfig, *, report: Callable[[Check], None] = lambda c: None,
                 prompt: Callable[[str], None] = lambda t: None, pin_factory: Any = None,
                 finger: Callable[[], None] | None = None, button_timeout_s: float = 15.0,
                 relay_timeout_s: float = 15.0) -> None:
        self.cfg, self.report, self.prompt = cfg, report, prompt
        self.pin_factory, self.finger = pin_factory, finger
        self.button_timeout_s, self.relay_timeout_s = button_timeout_s, relay_timeout_s
        self.results: list[Check] = []

    def _add(self, check: Check) -> Check:
        self.results.append(check)
        self.report(check)
        return check

    @property
    def failures(self) -> int:
        return sum(1 for c in self.results if c.status == "fail")

    def run(self, skip: frozenset[str] = frozenset()) -> list[Check]:
        """Run every check not in ``skip`` (see :data:`SKIP_GROUPS`); returns the results."""
        self._config()
        if "button" in skip:
            self._add(Check("button", "skip", "skipped (--skip button)"))
        else:
            self._button()
        if "modem" in skip:
            self._add(Check("modem.port", "skip", "skipped (--skip modem)"))
        elif not self.cfg.modem.enabled:
            self._add(Check("modem.port", "skip", "modem disabled in device.toml ([modem] enabled = false)"))
        else:
            self._modem()
        trip: RoundTrip | None = None
        if "broker" in skip:
            self._add(Check("broker", "skip", "skipped (--skip broker)"))
            self._add(Check("relay", "skip", "needs the broker"))
        else:
            with self._session() as session:
                if session is not None and "relay" in skip:
                    self._add(Check("relay", "skip", "skipped (--skip relay)"))
                elif session is not None:
                    trip = self._relay(session)
        if "clock" in skip:
            self._add(Check("clock", "skip", "skipped (--skip clock)"))
        else:
            self._clock(trip)
        return self.results

    # --- individual checks

    def _config(self) -> None:
        m = self.cfg.mqtt
        if not m.tls:
            self._add(Check("config", "warn", "MQTT without TLS: the password and alarms cross the network in clear text",
                            "set [mqtt] tls = true and port = 8883 (provision writes it so)"))
        elif not (m.password or getattr(m, "cert_file", "")):
            self._add(Check("config", "fail", "no broker credentials in device.toml ([mqtt] password)",
                            "re-run `lonewatch provision` for this device"))
        else:
            self._add(Check("config", "pass", f"device {self.cfg.device.id}, broker {m.host}:{m.port} over TLS"))

    def _button(self) -> None:
        try:
            from gpiozero import Button

            button = Button(self.cfg.gpio.button_pin, pull_up=True, bounce_time=None, pin_factory=self.pin_factory)
        except Exception as exc:  # gpiozero raises many kinds (BadPinFactory, GPIOPinInUse …)
            busy = "busy" in str(exc).lower() or "in use" in str(exc).lower()
            self._add(Check("button", "fail", f"cannot read GPIO {self.cfg.gpio.button_pin}: {exc}",
                            "stop the device service first: sudo systemctl stop lonewatch-device" if busy else
                            "run doctor on the Pi (python3-lgpio installed), or try it here with --simulate"))
            return
        pressed, released = threading.Event(), threading.Event()
        button.when_pressed = lambda: pressed.set()
        button.when_released = lambda: pressed.is_set() and released.set()
        try:
            self.prompt(f"Press the panic button now (GPIO {self.cfg.gpio.button_pin}), within "
                        f"{self.button_timeout_s:.0f} s …")
            if self.finger is not None:
                threading.Thread(target=self.finger, name="doctor-finger", daemon=True).start()
            t0 = time.monotonic()
            if not pressed.wait(self.button_timeout_s):
                self._add(Check("button", "fail", f"no press on GPIO {self.cfg.gpio.button_pin} within "
                                f"{self.button_timeout_s:.0f} s",
                                "check the wiring (button between GPIO and GND, hardware/README.md) and [gpio] button_pin"))
                return
            after = time.monotonic() - t0
            released.wait(max(1.0, self.button_timeout_s - after))
            self._add(Check("button", "pass", f"press seen on GPIO {self.cfg.gpio.button_pin} after {after:.1f} s",
                            data={"pin": self.cfg.gpio.button_pin, "after_s": round(after, 2)}))
        finally:
            button.close()

    def _modem(self) -> None:
        from modem.at import CmeError, Modem, ModemError, ModemGone, ModemTimeout, SimLocked

        mc = self.cfg.modem
        modem = Modem(mc.port, mc.baudrate, flavour=mc.flavour)
        try:
            try:
                modem.open()
                state = modem.init(pin=mc.sim_pin or None)
            except ModemGone as exc:
                self._add(Check("modem.port", "fail", f"cannot open {mc.port}: {exc}",
                                "is the modem powered and plugged in? `ls -l /dev/lonewatch-modem` — install "
                                "hardware/99-lonewatch-modem.rules, or set [modem] port"))
                return
            except ModemTimeout:
                self._add(Check("modem.port", "fail", f"no answer to AT on {mc.port}",
                                "wrong port or baud rate ([modem] baudrate), or a serial console still runs on the "
                                "UART (remove console=serial0,115200 from cmdline.txt)"))
                return
            except SimLocked as exc:
                self._add(Check("modem.port", "pass", f"modem answers on {mc.port}"))
                fix = ("set [modem] sim_pin in device.toml" if exc.state == "SIM PIN" else
                       "unlock the SIM with its PUK in a phone, then disable the PIN or set [modem] sim_pin")
                self._add(Check("modem.sim", "fail", f"SIM not ready: {exc.state}", fix))
                return
            except CmeError as exc:
                self._add(Check("modem.port", "pass", f"modem answers on {mc.port}"))
                fix = {10: "insert the SIM card (power off first)", 16: "[modem] sim_pin is wrong — careful: "
                       "three wrong PINs lock the SIM"}.get(exc.code or 0, "see the error text; try the SIM in a phone")
                self._add(Check("modem.sim", "fail", f"SIM problem: {exc}", fix))
                return
            self._add(Check("modem.port", "pass", f"modem answers on {mc.port} ({modem.flavour})"))
            self._add(Check("modem.sim", "pass", f"SIM {state.lower()}"))
            self._modem_network(modem)
        except ModemError as exc:
            self._add(Check("modem.port", "fail", f"modem error: {exc}", "power-cycle the modem and run doctor again"))
        finally:
            modem.close()

    def _modem_network(self, modem: Any) -> None:
        from modem.at import ModemError

        try:
            reg = modem.registration()
            if reg.registered:
                self._add(Check("modem.registration", "pass", f"registered ({reg.state}, {reg.technology})",
                                data={"registration": reg.state, "technology": reg.technology}))
            else:
                fix = ("the network refuses this SIM: ask the operator (activated? roaming allowed?)"
                       if reg.state == "denied" else
                       "wait a minute; check the antenna and coverage at this spot, and that the SIM is activated")
                self._add(Check("modem.registration", "fail", f"not registered ({reg.state})", fix,
                                data={"registration": reg.state}))
        except ModemError as exc:
            self._add(Check("modem.registration", "fail", f"registration query failed: {exc}", "power-cycle the modem"))
        try:
            dbm = modem.signal().rssi_dbm
        except ModemError as exc:
            self._add(Check("modem.signal", "fail", f"signal query failed: {exc}", "power-cycle the modem"))
        else:
            if dbm is None:
                self._add(Check("modem.signal", "fail", "no signal", "connect the antenna; move to a window to test"))
            elif dbm < SIGNAL_FAIL_DBM:
                self._add(Check("modem.signal", "fail", f"{dbm} dBm: too weak for reliable alarms",
                              "better antenna placement, or a repeater at this site", data={"signal_dbm": dbm}))
            elif dbm < SIGNAL_WARN_DBM:
                self._add(Check("modem.signal", "warn", f"{dbm} dBm: marginal",
                                "alarms may be delayed in the worst corners: walk the site with doctor",
                                data={"signal_dbm": dbm}))
            else:
                self._add(Check("modem.signal", "pass", f"{dbm} dBm", data={"signal_dbm": dbm}))
        if not self.cfg.modem.gnss:
            self._add(Check("modem.gnss", "skip", "GNSS off in device.toml ([modem] gnss = false)"))
            return
        try:
            modem.start_gnss()
            fix = modem.gnss()
        except ModemError as exc:
            self._add(Check("modem.gnss", "fail", f"GNSS query failed: {exc}", "does this modem have GNSS? else set gnss = false"))
            return
        if fix is None:
            self._add(Check("modem.gnss", "warn", "no GNSS fix yet",
                            "connect the GNSS antenna; a first fix outdoors takes up to 15 minutes, indoors there may be none "
                            "(alarms then go without position)"))
        else:
            acc = f" ±{fix.accuracy_m:.0f} m" if fix.accuracy_m is not None else ""
            self._add(Check("modem.gnss", "pass", f"fix {fix.lat:.5f}, {fix.lon:.5f}{acc}",
                            data={"lat": fix.lat, "lon": fix.lon, "accuracy_m": fix.accuracy_m}))

    @contextlib.contextmanager
    def _session(self) -> Iterator[TestEventSession | None]:
        session = TestEventSession(self.cfg, source="doctor")
        try:
            try:
                session.connect()
            except RoundTripError as exc:
                self._add(Check("broker", "fail", str(exc), exc.fix))
                self._add(Check("relay", "skip", "needs the broker"))
                yield None
                return
            m = self.cfg.mqtt
            how = f"TLS ({session.tls_version})" if session.tls_version else "plain text"
            self._add(Check("broker", "pass", f"logged in to {m.host}:{m.port} as {m.username or self.cfg.device.id} over {how}",
                            data={"tls": session.tls_version}))
            yield session
        finally:
            session.close()

    def _relay(self, session: TestEventSession) -> RoundTrip | None:
        try:
            trip = session.send_test(wait_arc=False, timeout_s=self.relay_timeout_s)
        except RoundTripError as exc:
            self._add(Check("relay", "fail", str(exc), exc.fix))
            return None
        ms = trip.received_after_s * 1000
        self._add(Check("relay", "pass", f"test event {trip.event_id} acknowledged by the relay in {ms:.0f} ms",
                        data={"event": trip.event_id, "round_trip_ms": round(ms, 1)}))
        return trip

    def _clock(self, trip: RoundTrip | None) -> None:
        if trip is None:
            self._add(Check("clock", "skip", "needs the relay round trip (the relay's clock is the reference)"))
            return
        off, unc = trip.clock_offset_s, trip.clock_uncertainty_s
        data = {"offset_s": round(off, 3), "uncertainty_s": round(unc, 3)}
        text = f"device clock {'ahead of' if off >= 0 else 'behind'} the relay by {abs(off):.1f} s (±{unc:.2f} s)"
        if abs(off) - unc > CLOCK_LIMIT_S:
            self._add(Check("clock", "fail", text + f"; limit ±{CLOCK_LIMIT_S:.0f} s",
                            "let NTP set the clock: `timedatectl set-ntp true`, check `timedatectl` shows "
                            "'System clock synchronized: yes' (the network must reach an NTP server)", data=data))
        else:
            self._add(Check("clock", "pass", text, data=data))


# --------------------------------------------------------------------------- simulation


@contextlib.contextmanager
def simulated_hardware(cfg: DeviceConfig, *, press_after_s: float = 0.5, press_s: float = 0.3,
                       fix: tuple[float, float, float] | None = (55.676098, 12.568337, 1.0)
                       ) -> Iterator[tuple[DeviceConfig, Any, Callable[[], None]]]:
    """For ``doctor --simulate`` (a laptop, a demo, the tests): the modem simulator on a
    pseudo-terminal (``cfg.modem.port`` replaced by it; GNSS ``fix`` as lat, lon, HDOP) and a
    gpiozero MockFactory whose button pin a simulated finger presses ``press_after_s`` after
    the prompt, for ``press_s`` seconds. Yields ``(cfg, pin_factory, finger)``."""
    from gpiozero.pins.mock import MockFactory

    from modem.simulator import ModemSimulator

    factory = MockFactory()
    pin = factory.pin(cfg.gpio.button_pin)

    def finger() -> None:
        time.sleep(press_after_s)
        pin.drive_low()
        time.sleep(press_s)
        pin.drive_high()

    flavour = cfg.modem.flavour if cfg.modem.flavour != "auto" else "sim7600"
    with ModemSimulator(flavour=flavour) as sim:
        sim.gnss_fix = fix
        if cfg.modem.sim_pin:
            sim.pin = cfg.modem.sim_pin
        yield replace(cfg, modem=replace(cfg.modem, port=sim.port, enabled=True)), factory, finger
