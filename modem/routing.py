"""The reader side of the AT channel: bytes from the port → routed lines.

One reader thread (started by :class:`modem.link.AtLink`) owns the read side of the port. It
cuts the stream into lines (:class:`modem.framing.LineFramer`, line noise removed) and gives
each line to whoever waits for it, judged against the command pending *right now*
(:func:`modem.replies.classify_line`, 3GPP TS 27.007 / ITU-T V.250): the echo of that command
(dropped), its final result code, one of its information lines, the late answer of a command
that timed out (drained), or an unsolicited result code (URC) for the handlers — never taken
as an answer. Two more things are recognised here, before classification: an echo carrying a
secret (``AT+CPIN="…"`` in any shape; dropped, never logged) and a Linux login console on the
port (:func:`modem.symptoms.console_evidence`; the pending command fails at once). A URC that
says the modem restarted (:func:`modem.symptoms.reset_sign`) is passed to
``_on_reset_sign`` before the handlers get it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import serial

from .framing import LineFramer
from .replies import _PROMPT, TWO_LINE_URCS, _prefix, carries_secret, classify_line, redact
from .symptoms import console_evidence, reset_sign

__all__ = ["LineRouter"]

log = logging.getLogger("modem.at")


@dataclass(eq=False)
class _Pending:
    cmd: str
    display: str
    expect_prompt: bool = False
    echo: frozenset[str] = frozenset()
    lines: list[str] = field(default_factory=list)
    final: str | None = None
    gone: str | None = None
    console: str | None = None  # a login console answered (its evidence)
    sync: bool = False  # the "AT" probe of a re-synchronisation
    heard: int = 0  # result codes drained while re-synchronising
    done: threading.Event = field(default_factory=threading.Event)


def _squash(text: str) -> str:
    return "".join(text.split()).upper()


def _is_echo(line: str, p: _Pending) -> bool:
    """``line`` is the echo of the pending command (or of its SMS body): exactly, or with
    other case / blanks (some firmware echoes ``at+csq`` as typed, noise removed)."""
    if line == p.cmd or line in p.echo:
        return True
    return _squash(line) == _squash(p.cmd)



class LineRouter:
    """Reader-thread half of :class:`modem.link.AtLink` (state set up by its ``__init__``)."""

    port: str
    urc_handler: Callable[[str], None] | None
    _urc_listeners: list[Callable[[str], None]]
    _serial: Any
    _stop: threading.Event
    _state_lock: threading.Lock
    _pending: _Pending | None
    _urc_head: str | None
    _gone: str | None
    _owed: int
    _stale_cmd: str | None
    _console_count: int
    _secrets: tuple[str, ...]
    console_seen: str | None
    urc_handler_errors: int

    def _read_loop(self) -> None:
        ser = self._serial
        framer = LineFramer()
        while not self._stop.is_set():
            try:
                chunk = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                if not self._stop.is_set():
                    log.warning("modem port %s vanished: %s", self.port, exc)
                    self._gone = f"port {self.port} vanished: {exc}"
                    self._fail_pending(self._gone)
                return
            if not chunk:
                continue
            for line in framer.feed(chunk):
                self._on_line(line)
            tail = framer.tail_text
            if tail == _PROMPT:
                with self._state_lock:
                    p = self._pending
                    if p is not None and p.expect_prompt:
                        framer.clear()
                        self._finish(p, _PROMPT)
            elif tail and (evidence := console_evidence(tail)):  # "login: " has no line end
                framer.clear()
                self._on_console(evidence)

    def _on_line(self, line: str) -> None:
        if self._urc_head is not None:  # second line of +CMT/+CDS/+CBM
            head, self._urc_head = self._urc_head, None
            self._deliver_urc(f"{head}\n{line}")
            return
        if carries_secret(line):  # an echo of AT+CPIN="…", however mangled: never logged
            log.debug("modem echo %s", redact(line))
            return
        evidence = console_evidence(line)
        if evidence is not None:
            self._on_console(evidence)
            return
        with self._state_lock:
            kind = self._take_line(line)
        if kind in ("taken", "dropped"):
            return
        if kind == "stray":
            log.info("modem: dropped stray result %r (no command pending)", line)
            return
        if _prefix(line) in TWO_LINE_URCS:
            self._urc_head = line
            return
        sign = reset_sign(line)
        if sign is not None:
            self._on_reset_sign(line, sign)
        self._deliver_urc(line)

    def _take_line(self, line: str) -> str:
        """Give ``line`` to whoever waits for it (state lock held). Returns ``"taken"`` (echo,
        answer, final result, drained late answer), ``"dropped"``, ``"stray"`` or ``"urc"``."""
        p = self._pending
        if p is not None and p.sync:
            # Re-synchronising: every result code pays off one owed final; other lines of the
            # stale commands are dropped; URCs still go to the handlers.
            kind = classify_line(line, self._stale_cmd or p.cmd)
            if kind == "final":
                self._owed -= 1
                p.heard += 1
                log.info("modem: drained %r while re-synchronising", line)
                p.done.set()
                return "taken"
            if kind == "urc":
                return "urc"
            log.debug("modem: drained late line %r", self._scrub(line))
            return "dropped"
        if p is not None and _is_echo(line, p):
            log.debug("modem echo %s", p.display)
            return "taken"
        if line == _PROMPT:
            if p is not None and p.expect_prompt:
                self._finish(p, _PROMPT)
            else:
                log.info("modem: dropped a late '> ' prompt")
            return "taken"
        if p is None and self._owed > 0:  # the late answer of a command that timed out
            kind = classify_line(line, self._stale_cmd)
            if kind == "final":
                self._owed -= 1
                log.info("modem: drained the late answer %r of %s", line, redact(self._stale_cmd or ""))
                return "taken"
            if kind == "info":
                log.debug("modem: drained late line %r", self._scrub(line))
                return "dropped"
            return kind
        kind = classify_line(line, p.cmd if p is not None else None)
        if kind == "final" and p is not None:
            log.debug("modem < %s", self._scrub(line))
            self._finish(p, line)
            return "taken"
        if kind == "info" and p is not None:
            log.debug("modem < %s", self._scrub(line))
            p.lines.append(line)
            return "taken"
        return kind

    def _on_reset_sign(self, line: str, strength: str) -> None:
        """Hook (reader thread): an unsolicited line that says the modem restarted
        (:func:`modem.symptoms.reset_sign`). :class:`modem.at.Modem` re-initialises."""

    def _on_console(self, evidence: str) -> None:
        """A Linux console answers on the port (reader thread): fail the pending command now
        with :class:`~modem.errors.SerialConsoleError` instead of letting it time out."""
        log.warning("modem port %s: a login console answers here (%r)", self.port, evidence)
        with self._state_lock:
            self.console_seen = evidence
            self._console_count += 1
            self._owed = 0  # a console owes us nothing
            p = self._pending
            self._pending = None
        if p is not None:
            p.console = evidence
            p.done.set()

    def _scrub(self, line: str) -> str:
        """``line`` fit for a log: secret commands redacted, known secrets (the SIM PIN)
        replaced by ``***`` wherever they stand."""
        text = redact(line)
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _deliver_urc(self, line: str) -> None:
        log.debug("modem URC %s", self._scrub(line.partition("\n")[0]))
        handlers = ([self.urc_handler] if self.urc_handler is not None else []) + self._urc_listeners
        for handler in handlers:
            try:
                handler(line)
            except Exception:  # a failing callback is counted, never fatal
                self.urc_handler_errors += 1
                log.exception("modem URC handler failed on %r", self._scrub(line))

    def _finish(self, p: _Pending, final: str) -> None:
        """Complete ``p`` (state lock held)."""
        p.final = final
        if self._pending is p:
            self._pending = None
        p.done.set()

    def _fail_pending(self, reason: str) -> None:
        with self._state_lock:
            p = self._pending
            self._pending = None
        if p is not None:
            p.gone = reason
            p.done.set()
