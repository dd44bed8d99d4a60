"""Typed modem errors and the meaning tables of ``+CME ERROR`` (3GPP TS 27.007 §9.2) and
``+CMS ERROR`` (3GPP TS 27.005 §3.2.5). Pure: no serial port here.

Every error derives from :class:`ModemError` (itself a :class:`protocol.errors.LonewatchError`);
leaves also subclass the matching builtin (``ModemTimeout`` is a ``TimeoutError``).
"""

from __future__ import annotations

from protocol.errors import LonewatchError

__all__ = [
    "CME_MEANINGS",
    "CMS_MEANINGS",
    "CmeError",
    "CmsError",
    "ModemError",
    "ModemGone",
    "ModemReplyError",
    "ModemTimeout",
    "SerialConsoleError",
    "SimLocked",
    "parse_error_line",
]

#: 3GPP TS 27.007 §9.2 ``+CME ERROR`` codes; 500+ are manufacturer-specific (Quectel GNSS here).
CME_MEANINGS: dict[int, str] = {
    0: "phone failure", 1: "no connection to phone", 2: "phone-adaptor link reserved",
    3: "operation not allowed", 4: "operation not supported", 5: "PH-SIM PIN required",
    6: "PH-FSIM PIN required", 7: "PH-FSIM PUK required", 10: "SIM not inserted",
    11: "SIM PIN required", 12: "SIM PUK required", 13: "SIM failure", 14: "SIM busy",
    15: "SIM wrong", 16: "incorrect password", 17: "SIM PIN2 required", 18: "SIM PUK2 required",
    20: "memory full", 21: "invalid index", 22: "not found", 23: "memory failure",
    24: "text string too long", 25: "invalid characters in text string",
    26: "dial string too long", 27: "invalid characters in dial string",
    30: "no network service", 31: "network timeout",
    32: "network not allowed - emergency calls only",
    40: "network personalization PIN required", 41: "network personalization PUK required",
    100: "unknown", 103: "illegal MS", 106: "illegal ME", 107: "GPRS services not allowed",
    111: "PLMN not allowed", 112: "location area not allowed",
    113: "roaming not allowed in this location area",
    501: "invalid parameter(s)", 502: "operation not supported", 503: "GNSS subsystem busy",
    504: "session is ongoing", 505: "session not active", 506: "operation timeout",
    507: "function not enabled", 508: "time information error", 516: "not fixed now",
    549: "unknown error",
}

#: 3GPP TS 27.005 §3.2.5 ``+CMS ERROR`` codes (0–127 are network causes of TS 24.011/23.040).
CMS_MEANINGS: dict[int, str] = {
    1: "unassigned (unallocated) number", 8: "operator determined barring", 10: "call barred",
    21: "short message transfer rejected", 27: "destination out of service",
    28: "unidentified subscriber", 29: "facility rejected", 30: "unknown subscriber",
    38: "network out of order", 41: "temporary failure", 42: "congestion",
    47: "resources unavailable, unspecified", 50: "requested facility not subscribed",
    69: "requested facility not implemented", 96: "invalid mandatory information",
    111: "protocol error, unspecified", 127: "interworking, unspecified",
    300: "ME failure", 301: "SMS service of ME reserved", 302: "operation not allowed",
    303: "operation not supported", 304: "invalid PDU mode parameter",
    305: "invalid text mode parameter", 310: "SIM not inserted", 311: "SIM PIN required",
    312: "PH-SIM PIN required", 313: "SIM failure", 314: "SIM busy", 315: "SIM wrong",
    316: "SIM PUK required", 317: "SIM PIN2 required", 318: "SIM PUK2 required",
    320: "memory failure", 321: "invalid memory index", 322: "memory full",
    330: "SMSC address unknown", 331: "no network service", 332: "network timeout",
    340: "no +CNMA acknowledgement expected", 500: "unknown error",
}


class ModemError(LonewatchError):
    """Root of modem errors; raised itself for a plain ``ERROR`` final result code."""


class ModemTimeout(ModemError, TimeoutError):
    """No final result code within the command's timeout."""


class ModemGone(ModemError, ConnectionError):
    """The serial port vanished (USB unplug/re-enumeration, EOF) or the modem is closed."""


class ModemReplyError(ModemError, ValueError):
    """A reply line the driver cannot parse. Attributes: ``command``, ``line``, ``reason``."""

    def __init__(self, command: str, line: str, reason: str) -> None:
        self.command = command
        self.line = line
        self.reason = reason
        super().__init__(f"{command}: cannot parse reply {line!r}: {reason}")


class SimLocked(ModemError):
    """The SIM is not READY after init: ``state`` is the ``+CPIN`` text (``"SIM PIN"``…)."""

    def __init__(self, state: str) -> None:
        self.state = state
        super().__init__(f"SIM not ready: {state}")


class SerialConsoleError(ModemError):
    """A Linux login console (getty) answers on the port instead of the modem: a ``login:`` or
    ``Password:`` prompt, ``Login incorrect`` or a shell banner came back to an AT command.
    ``evidence`` is the line seen (never contains what we typed: it is an AT command).

    On a Raspberry Pi the modem HAT's UART is ``/dev/serial0``; the console must be off there
    (SPEC §7 "A serial login console on the modem's UART must be off"): ``sudo raspi-config``
    → Interface Options → Serial Port → login shell *No*, serial hardware *Yes*; or remove
    ``console=serial0,115200`` from ``/boot/firmware/cmdline.txt`` and reboot.
    Power-cycling the modem does not help.
    """

    def __init__(self, port: str, evidence: str) -> None:
        self.port = port
        self.evidence = evidence
        super().__init__(f"{port}: a Linux login console answers on this port, not the modem "
                         f"(saw {evidence!r}); disable the serial console on this UART")


class _CodedError(ModemError):
    prefix = ""

    def __init__(self, code: int | None, meaning: str, command: str = "") -> None:
        self.code = code
        self.meaning = meaning
        self.command = command
        where = f"{command}: " if command else ""
        number = "" if code is None else f" {code}"
        super().__init__(f"{where}{self.prefix}{number} ({meaning})")


class CmeError(_CodedError):
    """``+CME ERROR: <n>`` (27.007): ``code`` (None if the verbose text is not in the table),
    ``meaning`` (table text or the modem's verbose text), ``command`` (redacted)."""

    prefix = "+CME ERROR"


class CmsError(_CodedError):
    """``+CMS ERROR: <n>`` (27.005): ``code``, ``meaning``, ``command`` as for CmeError."""

    prefix = "+CMS ERROR"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


_CME_BY_TEXT = {_norm(v): k for k, v in CME_MEANINGS.items()}
_CMS_BY_TEXT = {_norm(v): k for k, v in CMS_MEANINGS.items()}


def parse_error_line(line: str, command: str = "") -> CmeError | CmsError | None:
    """``+CME ERROR: 10`` or ``+CME ERROR: SIM not inserted`` → CmeError(10, "SIM not
    inserted"); same for ``+CMS ERROR``; None for any other line."""
    upper = line.upper()
    if upper.startswith("+CME ERROR:"):
        cls: type[CmeError] | type[CmsError] = CmeError
        table, by_text = CME_MEANINGS, _CME_BY_TEXT
    elif upper.startswith("+CMS ERROR:"):
        cls, table, by_text = CmsError, CMS_MEANINGS, _CMS_BY_TEXT
    else:
        return None
    text = line.partition(":")[2].strip()
    if text.isdigit():
        code = int(text)
        return cls(code, table.get(code, "unlisted error code"), command)
    return cls(by_text.get(_norm(text)), text or "no text", command)

