"""One-shot faults programmed per command prefix (delay, error, garbled reply, URC in the
reply, line noise on the final result code, a final result code lost on the line):
:class:`SimFaults` is a mixin of :class:`modem.simulator.ModemSimulator`.

The noise faults model what a UART does on a real HAT (ITU-T V.250 framing broken by a NUL
from a line break, a 0xFF from a glitch at power-up): the driver must strip it before it
classifies the line (:func:`modem.symptoms.clean_line`).

Test-only: never used on the device.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

__all__ = ["SimFaults", "Where"]

Where = Literal["before", "between", "after"]


@dataclass
class _Fault:
    prefix: str
    kind: str  # "delay" | "error" | "garble" | "urc" | "noise" | "drop"
    seconds: float = 0.0
    line: str | bytes = ""
    lines: tuple[str, ...] = ()
    where: Where = "between"
    before: bytes = b""
    after: bytes = b""


class SimFaults:
    """Fault programming; the simulator's ``_handle`` takes the faults of each command."""

    _lock: threading.RLock

    def _init_faults(self) -> None:
        self._faults: list[_Fault] = []

    def urc_during_next(self, command_prefix: str, lines: list[str],
                        where: Where = "between") -> None:
        """Put URC ``lines`` into the next reply to a command starting with ``command_prefix``:
        ``"before"`` the info lines, ``"between"`` info and final code, or ``"after"`` it."""
        self._add(_Fault(command_prefix, "urc", lines=tuple(lines), where=where))

    def delay_next(self, command_prefix: str, seconds: float) -> None:
        """Answer the next matching command only after ``seconds``."""
        self._add(_Fault(command_prefix, "delay", seconds=seconds))

    def error_next(self, command_prefix: str, line: str) -> None:
        """Answer the next matching command with ``line`` (e.g. ``"+CME ERROR: 14"``) only."""
        self._add(_Fault(command_prefix, "error", line=line))

    def garble_next(self, command_prefix: str, line: str | bytes) -> None:
        """Replace the info lines of the next matching reply with ``line`` (str or raw bytes)."""
        self._add(_Fault(command_prefix, "garble", line=line))


    def noise_next(self, command_prefix: str, before: bytes = b"\x00", after: bytes = b"") -> None:
        """Glue noise bytes to the final result code of the next matching reply:
        ``noise_next("AT+CSQ")`` sends ``\\r\\n\\x00OK\\r\\n``; ``after=b"\\xff"`` gives
        ``OK\\xff``."""
        self._add(_Fault(command_prefix, "noise", before=before, after=after))

    def drop_final_next(self, command_prefix: str) -> None:
        """Lose the final result code of the next matching reply (the modem sent it; line
        noise destroyed it): its information lines arrive, its ``OK`` never does."""
        self._add(_Fault(command_prefix, "drop"))

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, cmd: str) -> list[_Fault]:
        with self._lock:
            taken, kinds = [], set()
            for fault in list(self._faults):
                if cmd.upper().startswith(fault.prefix.upper()) and fault.kind not in kinds:
                    kinds.add(fault.kind)
                    taken.append(fault)
                    self._faults.remove(fault)
            return taken
