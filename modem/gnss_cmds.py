"""GNSS through the modem's AT port: which modem it is (``ATI``/``AT+CGMM``), switching the
engine on, and reading a fix.

Sources: SIMCom SIM7600 Series AT Command Manual (``AT+CGPS``, ``AT+CGPS?``, ``AT+CGPSINFO``;
``ERROR`` when the engine is already in the asked state) and Quectel EC25 GNSS AT Commands
Manual (``AT+QGPS``, ``AT+QGPSLOC``; ``+CME ERROR: 504`` session is ongoing, ``505`` session
not active, ``516`` not fixed now). :class:`GnssCommands` is a mixin of
:class:`modem.at.Modem`; it uses only :meth:`modem.link.AtLink.command`.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from .errors import CmeError, ModemError, ModemGone, ModemTimeout
from .link import AtLink
from .replies import GnssFix, _fields, _one, parse_cgpsinfo, parse_qgpsloc

__all__ = ["FLAVOURS", "Flavour", "GnssCommands"]

log = logging.getLogger("modem.at")

Flavour = Literal["sim7600", "quectel"]
FLAVOURS = ("auto", "sim7600", "quectel")


class GnssCommands(AtLink):
    """GNSS on top of the AT channel (see :class:`modem.at.Modem`)."""

    _flavour: Flavour | None = None
    _gnss_wanted = False
    #: How often GNSS was found off and switched on again by :meth:`gnss`.
    gnss_restarts = 0

    @property
    def flavour(self) -> Flavour:
        """``"sim7600"`` or ``"quectel"``; with ``flavour="auto"`` asked once via ATI/AT+CGMM."""
        if self._flavour is None:
            self._flavour = self._detect_flavour()
        return self._flavour

    def _detect_flavour(self) -> Flavour:
        seen: list[str] = []
        for cmd in ("ATI", "AT+CGMM"):
            try:
                text = " ".join(self.command(cmd)).lower()
            except (ModemTimeout, ModemGone):
                raise
            except ModemError:
                continue
            seen.append(text)
            if "simcom" in text or "sim7" in text:
                return "sim7600"
            if "quectel" in text or re.search(r"\b(ec2|eg2|eg9|bg9|em0|ep0)", text):
                return "quectel"
        raise ModemError(f"cannot tell the modem's flavour from ATI/AT+CGMM: {seen!r}; "
                         "set flavour='sim7600' or 'quectel'")

    def start_gnss(self) -> None:
        """Switch the GNSS engine on (``AT+CGPS=1`` / ``AT+QGPS=1``); already on is fine. It is
        switched on again after a restart of the modem (:meth:`recover_if_restarted`) and when
        :meth:`gnss` finds it off."""
        try:
            if self.flavour == "sim7600":
                self.command("AT+CGPS=1")
            else:
                self.command("AT+QGPS=1")
        except CmeError as exc:
            if exc.code != 504:  # Quectel: session is ongoing
                raise
        except (ModemTimeout, ModemGone):
            raise
        except ModemError:
            if self.flavour != "sim7600":
                raise
            # SIM7600 answers plain ERROR when GNSS is already on: check.
            if not self._sim7600_gnss_on():
                raise
        self._gnss_wanted = True

    def _sim7600_gnss_on(self) -> bool:
        line = _one("AT+CGPS?", self.command("AT+CGPS?"), "+CGPS")
        return _fields("AT+CGPS?", line, 1)[0].strip() == "1"

    def gnss(self) -> GnssFix | None:
        """Current GNSS fix, or None when there is none yet.

        SIM7600: ``AT+CGPSINFO`` (``,,,,,,,,`` = no fix; no HDOP, so ``accuracy_m`` is None);
        with no fix, ``AT+CGPS?`` tells whether the engine is off (SIMCom SIM7600 AT manual).
        Quectel: ``AT+QGPSLOC=2`` (``+CME ERROR: 516`` = no fix; accuracy = HDOP × 5 m;
        ``+CME ERROR: 505`` "session not active" = the engine is off; Quectel EC25 GNSS AT
        manual). Both number formats are read (:func:`modem.replies.parse_qgpsloc`,
        :func:`modem.replies.parse_cgpsinfo`). An engine found off (a restart switched it off)
        is switched on again and None returned: no fix *yet*, counted in
        :attr:`gnss_restarts`.

        Raises ModemReplyError on a garbled reply; CmeError for other GNSS errors; ModemTimeout
        / ModemGone.
        """
        if self.flavour == "sim7600":
            cmd = "AT+CGPSINFO"
            fix = parse_cgpsinfo(cmd, _one(cmd, self.command(cmd), "+CGPSINFO"))
            if fix is None and not self._sim7600_gnss_on():
                self._restart_gnss("AT+CGPS? says the engine is off")
            return fix
        cmd = "AT+QGPSLOC=2"
        try:
            lines = self.command(cmd)
        except CmeError as exc:
            if exc.code == 516:  # "Not fixed now"
                return None
            if exc.code == 505:  # "Session not active": the engine is off
                self._restart_gnss(str(exc))
                return None
            raise
        return parse_qgpsloc(cmd, _one(cmd, lines, "+QGPSLOC"))

    def _restart_gnss(self, why: str) -> None:
        log.warning("GNSS was off (%s); switching it on again", why)
        self.gnss_restarts += 1
        self.start_gnss()
