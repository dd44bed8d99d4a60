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

This module holds :class:`Doctor` (the order of the checks, config, broker, relay and clock);
the result type is in :mod:`device.doctor_result`, the MQTT test-event session in
:mod:`device.doctor_session`, the button/modem checks and ``--simulate`` in
:mod:`device.doctor_hardware` (issue 9 split); every public name is re-exported here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from device.config import DeviceConfig

from .doctor_hardware import (  # noqa: F401  (re-exported)
    SERIAL_CONSOLE_FIX,
    SIGNAL_FAIL_DBM,
    SIGNAL_WARN_DBM,
    HardwareChecks,
    simulated_hardware,
)
from .doctor_result import Check, Status  # noqa: F401  (re-exported)
from .doctor_session import RoundTrip, RoundTripError, TestEventSession

__all__ = [
    "CLOCK_LIMIT_S",
    "Check",
    "Doctor",
    "RoundTrip",
    "RoundTripError",
    "TestEventSession",
    "simulated_hardware",
]

#: Largest acceptable device clock offset, seconds (SIA DC-09 receivers accept +20/−40 s).
CLOCK_LIMIT_S = 20.0

CHECK_NAMES = ("config", "button", "modem.port", "modem.sim", "modem.registration", "modem.signal",
               "modem.gnss", "broker", "relay", "clock")
CHECK_NAMES += ("modem.voice", "modem.voice_call")  # issue 11: device/doctor_voice.py
#: Groups accepted by ``--skip``.
SKIP_GROUPS = ("button", "modem", "broker", "relay", "clock")


# --------------------------------------------------------------------------- the doctor


class Doctor(HardwareChecks):
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
