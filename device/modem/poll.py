"""Periodic modem readings for the alive message: signal, registration, GNSS (SPEC §2).

A failing modem never stops the daemon: each reading that fails is logged and left as
"unknown" (signal None, registration ``unknown``); the last GNSS fix is kept (it carries
its own time, so the relay and the ARC can see its age).
"""

from __future__ import annotations

import logging
from typing import Any

from protocol.messages import Position

from .at import ModemError, ModemGone

log = logging.getLogger(__name__)


def poll_modem(modem: Any, state: Any, *, gnss: bool = True, sim_pin: str = "") -> None:
    """Refresh ``state.signal_dbm``, ``state.registration`` and ``state.position`` from
    ``modem`` (a :class:`device.modem.at.Modem`).

    Opens and initialises the modem on first use (``state.modem_ready`` False) and again
    after the port vanished (USB re-enumeration). Never raises for modem trouble."""
    try:
        if not state.modem_ready or modem.gone:
            modem.close()
            modem.open()
            modem.init(pin=sim_pin or None)
            if gnss:
                modem.start_gnss()
            state.modem_ready = True
        state.signal_dbm = modem.signal().rssi_dbm
        state.registration = modem.registration().state
        if gnss:
            fix = modem.gnss()
            if fix is not None:
                state.position = Position(
                    lat=fix.lat, lon=fix.lon, accuracy_m=fix.accuracy_m, fixed_at=fix.fixed_at.timestamp()
                )
    except ModemGone as exc:
        log.warning("modem port gone (%s); will reopen", exc)
        state.signal_dbm, state.registration, state.modem_ready = None, "unknown", False
    except ModemError as exc:
        log.warning("modem reading failed: %s", exc)
        state.signal_dbm, state.registration = None, "unknown"
