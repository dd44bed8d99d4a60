"""Recognising a misbehaving modem from what it sends: line noise, a restart, a lost SIM
unlock, and a Linux login console where the modem should be. Pure functions, no port.

Sources:

* ITU-T V.250 §5.7 — a response line is ``<CR><LF>text<CR><LF>`` of printable characters; a
  NUL, a stray control byte or a 0xFF (a UART break or a glitch on power-up) is never part of
  it, so :func:`clean_line` removes them before a line is classified (a NUL glued to ``OK``
  must still end the command).
* SIMCom SIM7600 Series AT Command Manual and Quectel EC25 AT Commands Manual, power-on
  sequence — after a (re)start the modem sends ``RDY``, then ``+CPIN: <state>`` and, once
  the SIM is unlocked, ``SMS DONE`` / ``PB DONE`` (Quectel: ``+QIND: SMS DONE`` /
  ``+QIND: PB DONE``, ``+QUSIM: 1``); echo is on again and ``+CMEE`` is back to 0
  (:func:`reset_sign`).
* 3GPP TS 27.007 §9.2 ``+CME ERROR: 11`` and TS 27.005 §3.2.5 ``+CMS ERROR: 311`` — "SIM PIN
  required": the SIM lost its unlock, which after we unlocked it means the modem restarted
  (:func:`sim_pin_required`).
* agetty(8)/login(1) — ``<host> login:`` and ``Password:`` prompts, ``Login incorrect``, the
  ``/etc/issue`` banner (``Debian GNU/Linux 12 raspberrypi ttyS0``) and shell prompts
  (``pi@raspberrypi:~$``): a serial console on the modem's UART (SPEC §7)
  (:func:`console_evidence`).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from .errors import CmeError, CmsError, ModemError

__all__ = ["clean_line", "console_evidence", "reset_sign", "sim_pin_required"]

_NOISE_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_REPLACEMENT = "\ufffd"


def clean_line(raw: bytes) -> str:
    """A received line without its noise: control bytes (NUL, 0x01–0x1F except tab, DEL)
    removed everywhere, then decoded as UTF-8 (bytes that do not decode, e.g. 0xFF, become
    U+FFFD), and U+FFFD, other control characters and blanks stripped from both ends.
    Noise *inside* a line that is not a control byte stays (the reply is then garbled and
    its parser says so).

    ``b"\\x00OK"`` → ``"OK"``; ``b"OK\\xff"`` → ``"OK"``; ``b"+CSQ: 2\\x000,99"`` → ``"+CSQ: 20,99"``.
    """
    text = raw.translate(None, _NOISE_BYTES).decode("utf-8", errors="replace")
    return _strip_ends(text)


def _strip_ends(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _is_edge_noise(text[start]):
        start += 1
    while end > start and _is_edge_noise(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_edge_noise(ch: str) -> bool:
    return ch == _REPLACEMENT or ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")


ResetStrength = Literal["strong", "weak"]

#: Lines a modem sends only when it (re)starts or its SIM falls back to locked.
_STRONG_WORDS = frozenset({"RDY", "^SYSSTART"})
#: Lines it sends after start-up *and* after our own PIN entry (so: a restart only if we did
#: not just enter the PIN).
_WEAK_WORDS = frozenset({"SMS DONE", "PB DONE", "CALL READY", "SMS READY", "+CPIN: READY",
                         "+QIND: SMS DONE", "+QIND: PB DONE", "+QUSIM: 1"})


def reset_sign(urc: str) -> ResetStrength | None:
    """Whether an *unsolicited* line says the modem restarted (SIM7600 / EC25 power-on
    sequence): ``"strong"`` for ``RDY``, ``^SYSSTART`` and any ``+CPIN:`` state other than
    ``READY`` (``SIM PIN``, ``SIM PUK``, ``NOT READY`` …: the SIM was locked again);
    ``"weak"`` for the ready messages that also follow our own PIN entry (``SMS DONE``,
    ``PB DONE``, ``+CPIN: READY`` …); None otherwise. Case and blanks do not matter."""
    norm = " ".join(urc.upper().split()).replace('"', "")
    if norm in _STRONG_WORDS:
        return "strong"
    if norm in _WEAK_WORDS:
        return "weak"
    if norm.startswith("+CPIN:") and norm != "+CPIN: READY":
        return "strong"
    return None


def sim_pin_required(exc: ModemError) -> bool:
    """True for ``+CME ERROR: 11`` and ``+CMS ERROR: 311`` (numeric or verbose "SIM PIN
    required", 27.007 §9.2 / 27.005 §3.2.5)."""
    return ((isinstance(exc, CmeError) and exc.code == 11)
            or (isinstance(exc, CmsError) and exc.code == 311))


_CONSOLE_RES = (
    re.compile(r"\blogin:\s*$", re.IGNORECASE),                        # "raspberrypi login:"
    re.compile(r"^password:\s*$", re.IGNORECASE),                      # login(1)
    re.compile(r"^login incorrect\b", re.IGNORECASE),
    re.compile(r"^last login:", re.IGNORECASE),
    re.compile(r"^(debian|raspbian|ubuntu|armbian|fedora|arch linux|alpine|dietpi)\b.*"
               r"\btty\w+\s*$", re.IGNORECASE),                        # /etc/issue banner
    re.compile(r"^linux \S+ \d+\.\d+\S*.*\b(armv\w+|aarch64|x86_64)\b", re.IGNORECASE),  # motd
    re.compile(r"^[a-z_][\w.-]*@[\w.-]+:[^\s]*\s?[$#]\s*$", re.IGNORECASE),  # pi@host:~$
)


def console_evidence(text: str) -> str | None:
    """``text`` (a cleaned line, or the unterminated tail of the stream where a prompt sits)
    if it is what a Linux serial console prints — a login or password prompt, ``Login
    incorrect``, an ``/etc/issue`` banner, a shell prompt — else None. No AT modem reply has
    these shapes."""
    stripped = text.strip()
    if not stripped or stripped.startswith(("+", "^", "AT", "at")):
        return None
    for rx in _CONSOLE_RES:
        if rx.search(stripped):
            return stripped
    return None
