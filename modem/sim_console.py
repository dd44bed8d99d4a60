"""A Linux login console where the modem should answer: what the driver meets when the Pi's
serial console (``console=serial0,115200`` in ``cmdline.txt``, ``serial-getty@ttyS0``) still
runs on the UART the modem HAT uses (SPEC §7 "A serial login console on the modem's UART must
be off").

Modelled on agetty(8) and login(1): the first line typed is taken as the user name (echoed,
then ``Password:`` without a line end), the next one as the password (not echoed), then
``Login incorrect`` and a new ``<host> login:`` prompt. Setting
:attr:`SimConsole.serial_console` prints the ``/etc/issue`` banner and the prompt.
:class:`SimConsole` is a mixin of :class:`modem.simulator.ModemSimulator`.

Test-only: never used on the device.
"""

from __future__ import annotations

import threading

__all__ = ["SimConsole"]


class SimConsole:
    """agetty on the port instead of a modem (while :attr:`serial_console` is True)."""

    _lock: threading.RLock
    #: Host name in the prompt and banner.
    console_host = "raspberrypi"

    def _init_console(self) -> None:
        self._console = False
        self._console_state = "login"  # "login" | "password"

    @property
    def serial_console(self) -> bool:
        """True: a login console answers every line instead of the modem."""
        return self._console

    @serial_console.setter
    def serial_console(self, on: bool) -> None:
        with self._lock:
            self._console, self._console_state = bool(on), "login"
        if on:
            self._console_write(f"\r\n\r\nDebian GNU/Linux 12 {self.console_host} ttyS0\r\n\r\n"
                                f"{self.console_host} login: ")

    def _console_input(self, line: str) -> None:
        """One line typed at the console (a command the driver sent)."""
        with self._lock:
            state = self._console_state
            self._console_state = "password" if state == "login" else "login"
        if state == "login":
            self._console_write(f"{line}\r\nPassword: ")
        else:
            self._console_write(f"\r\nLogin incorrect\r\n{self.console_host} login: ")

    def _console_write(self, text: str) -> None:
        self._record("modem", text)  # type: ignore[attr-defined]
        self._write(text.encode())  # type: ignore[attr-defined]
