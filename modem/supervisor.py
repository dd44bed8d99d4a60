"""Keeping the modem usable: open + init on first use, reopen after the port vanished (USB
re-enumeration, found again by :mod:`modem.port`), power-cycle through a GPIO when
reopening keeps failing or the modem stops answering, and the periodic readings for the alive
message (SPEC §2: signal, registration, GNSS).

Every modem use of the daemon goes through one :class:`ModemSupervisor`, so recovery happens
in one place under one lock: the modem poll thread and the SMS fallback thread may both find the
modem broken, and only one of them repairs it.

A failing modem never stops the daemon: readings that fail are left as unknown (signal None,
registration ``unknown``); the last GNSS fix is kept (it carries its own time). Each reading
stands alone: a GNSS error (``+CME ERROR: 505`` …) does not spoil signal and registration,
and the other way round; only a timeout or a vanished port ends the poll early (the modem is
not answering, and every further command would wait its full timeout).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from protocol.messages import Position

from . import sms
from .errors import ModemError, ModemGone, ModemTimeout
from .power import ModemPower

log = logging.getLogger(__name__)

__all__ = ["ModemSupervisor"]


class ModemSupervisor:
    """Owns the recovery of one :class:`modem.at.Modem`.

    Args:
        modem: the modem (closed or open).
        sim_pin: SIM PIN or "" (never logged).
        gnss: switch GNSS on at init and read fixes.
        power: the GPIO power control, or None when not wired.
        failures_before_power_cycle: consecutive failed (re)opens/inits before a power-cycle.
        power_cycle_every_s: at most one power-cycle per this many seconds (the modem needs
            time to boot, 10-20 s for a SIM7600).
        timeouts_before_reinit: consecutive command timeouts after which the modem is taken
            as hung and initialised again (then power-cycled if that fails too).
        observer: optional ``(step, fields)`` hook (``modem_ready``, ``modem_lost``,
            ``modem_power_cycle``).
    """

    def __init__(self, modem: Any, *, sim_pin: str = "", gnss: bool = True,
                 power: ModemPower | None = None, failures_before_power_cycle: int = 3,
                 power_cycle_every_s: float = 60.0, timeouts_before_reinit: int = 2,
                 observer=None) -> None:
        self.modem = modem
        self.sim_pin = sim_pin
        self.gnss_enabled = gnss
        self.power = power
        self.failures_before_power_cycle = failures_before_power_cycle
        self.power_cycle_every_s = power_cycle_every_s
        self.timeouts_before_reinit = timeouts_before_reinit
        self.observer = observer or (lambda step, fields: None)
        self.ready = False
        self.failures = 0
        self._timeouts = 0
        self._last_power_cycle = -1e9
        self._lock = threading.RLock()

    # -- recovery ------------------------------------------------------------------------

    def ensure_ready(self) -> None:
        """Open and initialise the modem unless it is ready; on the
        ``failures_before_power_cycle``-th failure in a row power-cycle it (if wired).

        Raises:
            ModemError: the modem cannot be used right now (the next call tries again).
        """
        with self._lock:
            if self.ready and not self.modem.gone and getattr(self.modem, "initialised", True):
                return
            if self.ready:
                self._lost("port vanished")
            try:
                self.modem.close()
                self.modem.open()
                self.modem.init(pin=self.sim_pin or None)
            except ModemError as exc:
                self.failures += 1
                log.warning("modem not usable (%d failure(s) in a row): %s", self.failures, exc)
                if self.failures >= self.failures_before_power_cycle:
                    self.power_cycle()
                raise
            if self.gnss_enabled:
                try:
                    self.modem.start_gnss()
                except (ModemGone, ModemTimeout):
                    raise
                except ModemError as exc:
                    log.warning("could not switch GNSS on: %s", exc)
            self.ready, self.failures, self._timeouts = True, 0, 0
            self.observer("modem_ready", {"port": self.modem.device_path})
            log.info("modem ready on %s", self.modem.device_path)

    def power_cycle(self) -> bool:
        """Power-cycle through the GPIO if wired and not done within ``power_cycle_every_s``.
        Returns whether it happened."""
        with self._lock:
            now = time.monotonic()
            if self.power is None or now - self._last_power_cycle < self.power_cycle_every_s:
                return False
            self._last_power_cycle = now
            self.modem.close()
            self.ready, self.failures = False, 0
            self.observer("modem_power_cycle", {"cycle": self.power.cycles + 1})
            self.power.cycle()
            return True

    def _lost(self, why: str) -> None:
        self.ready = False
        self.observer("modem_lost", {"reason": why})

    def note(self, exc: BaseException) -> None:
        """Tell the supervisor a modem call failed: a vanished port or repeated timeouts make
        the next :meth:`ensure_ready` reopen and initialise again."""
        with self._lock:
            if isinstance(exc, ModemGone):
                if self.ready:
                    self._lost(str(exc))
            elif isinstance(exc, ModemTimeout):
                self._timeouts += 1
                if self._timeouts >= self.timeouts_before_reinit and self.ready:
                    self._lost(f"{self._timeouts} command timeouts in a row")
                    self.failures += 1
            else:
                self._timeouts = 0

    def _ok(self) -> None:
        self._timeouts = 0

    # -- uses ----------------------------------------------------------------------------

    def send_pdu(self, pdu: sms.Pdu) -> int:
        """Send one SMS part (ensuring the modem is ready first); returns its ``<mr>``.

        Raises:
            ModemError (CmsError, ModemTimeout, ModemGone …): not sent or unknown; the
                supervisor has noted it for recovery.
        """
        self.ensure_ready()
        try:
            ref = self.modem.send_pdu(pdu)
        except ModemError as exc:
            self.note(exc)
            raise
        self._ok()
        return ref

    def poll(self, state: Any) -> None:
        """Refresh ``state.signal_dbm``, ``state.registration``, ``state.position`` and
        ``state.modem_ready``. Never raises for modem trouble.

        Each reading is taken on its own: one that fails with a modem error (a garbled reply,
        ``+CME ERROR``) is left unknown and the others are still read. A timeout or a
        vanished port leaves it and the readings after it unknown (noted for recovery). A
        re-initialisation of a restarted modem by the driver is reported to the observer as
        ``modem_reinit``.
        """
        reinits = getattr(self.modem, "reinits", 0)
        try:
            self.ensure_ready()
        except ModemError as exc:
            log.warning("modem reading failed: %s", exc)
            state.signal_dbm, state.registration = None, "unknown"
            state.modem_ready = self.ready
            return
        readings = [("signal", self._read_signal), ("registration", self._read_registration)]
        if self.gnss_enabled:
            readings.append(("gnss", self._read_gnss))
        failed = False
        for i, (name, read) in enumerate(readings):
            try:
                read(state)
            except (ModemTimeout, ModemGone) as exc:
                self.note(exc)
                log.warning("modem %s reading failed: %s", name, exc)
                for _, later in readings[i:]:
                    self._unknown(later, state)
                failed = True
                break
            except ModemError as exc:
                log.warning("modem %s reading failed: %s", name, exc)
                self._unknown(read, state)
        if not failed:
            self._ok()
        if getattr(self.modem, "reinits", 0) != reinits:
            self.observer("modem_reinit", {"reason": getattr(self.modem, "last_reset", None)})
        state.modem_ready = self.ready

    def _read_signal(self, state: Any) -> None:
        state.signal_dbm = self.modem.signal().rssi_dbm

    def _read_registration(self, state: Any) -> None:
        state.registration = self.modem.registration().state

    def _read_gnss(self, state: Any) -> None:
        fix = self.modem.gnss()
        if fix is not None:
            state.position = Position(lat=fix.lat, lon=fix.lon, accuracy_m=fix.accuracy_m,
                                      fixed_at=fix.fixed_at.timestamp())

    def _unknown(self, read: Any, state: Any) -> None:
        """Mark the reading of ``read`` unknown (the last GNSS fix is kept: it has its time)."""
        if read == self._read_signal:
            state.signal_dbm = None
        elif read == self._read_registration:
            state.registration = "unknown"

    def close(self) -> None:
        """Close the modem and release the power pin."""
        with self._lock:
            self.modem.close()
            if self.power is not None:
                self.power.close()
