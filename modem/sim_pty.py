"""The simulator's body: a pseudo-terminal, its I/O loop and the transcript.

:class:`PtySimBase` owns the pty pair (raw mode), the thread that reads the host's bytes and
cuts them into commands (terminated by CR, as ITU-T V.250 §5.2.1 says) or SMS text entry
(ended by Ctrl-Z, cancelled by ESC: 3GPP TS 27.005 §3.5.1), and the writer that frames every
reply line as ``\\r\\n<line>\\r\\n``. What a command means is up to the subclass
(:class:`modem.simulator.ModemSimulator`): it provides ``_handle(cmd)`` and
``_submit(entry, text)``, and the ``_echo`` flag.

Test-only: never used on the device.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from types import TracebackType
from typing import Any

__all__ = ["PtySimBase"]

_CTRL_Z, _ESC = 0x1A, 0x1B


class PtySimBase:
    """A pty that a host opens with ``serial.Serial(port)``; subclasses answer commands."""

    _echo = True

    def _init_pty(self) -> None:
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._transcript: list[tuple[str, str]] = []
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._vanish = threading.Event()
        self._abort = threading.Event()  # set by stop() and vanish(): cuts delays short
        self.port = ""

    def _handle(self, cmd: str) -> Any:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def _submit(self, entry: Any, body: str) -> list[str | bytes]:  # pragma: no cover
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PtySimBase:
        """Create the pty (raw mode) and start answering. ``port`` is the slave's path."""
        if self._thread is not None:
            return self
        self._master, self._slave = os.openpty()
        return self._start_on_pty()

    def _start_on_pty(self) -> PtySimBase:
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._stopping.clear()
        self._abort.clear()
        self._thread = threading.Thread(target=self._run, name="modem-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close every fd (idempotent)."""
        self._stopping.set()
        self._abort.set()
        self._wake()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for name in ("_master", "_slave", "_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> PtySimBase:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _wake(self) -> None:
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    @property
    def transcript(self) -> list[tuple[str, str]]:
        """Copy of ``(direction, line)`` pairs; direction ``"host"`` or ``"modem"``."""
        with self._lock:
            return list(self._transcript)

    def commands(self) -> list[str]:
        """The commands received so far, in order."""
        return [line for d, line in self.transcript if d == "host"]


    # -- faults of the wire ------------------------------------------------------------------

    def inject_urc(self, line: str) -> None:
        """Send ``\\r\\n<line>\\r\\n`` now, whatever the modem is doing."""
        self._send_lines([line])

    def vanish(self) -> None:
        """Close the master side as a USB unplug would: the host's port read/write fail."""
        self._vanish.set()
        self._abort.set()
        self._wake()


    # -- I/O ---------------------------------------------------------------------------------

    def _record(self, direction: str, line: str) -> None:
        with self._lock:
            self._transcript.append((direction, line))

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            fd = self._master
            if fd is None or self._vanish.is_set():
                return
            try:
                os.write(fd, data)
            except OSError:
                pass

    def _send_lines(self, lines: list[str | bytes]) -> None:
        data = b""
        for line in lines:
            raw = line if isinstance(line, bytes) else line.encode("utf-8")
            self._record("modem", raw.decode("utf-8", errors="replace"))
            data += b"\r\n" + raw + b"\r\n"
        self._write(data)

    def _run(self) -> None:
        buf = bytearray()
        entry: tuple[str, str] | None = None  # SMS text entry: ("pdu", length) / ("text", number)
        while not self._stopping.is_set():
            if self._vanish.is_set():
                with self._write_lock:
                    if self._master is not None:
                        os.close(self._master)
                        self._master = None
                return
            master, wake = self._master, self._wake_r
            if master is None or wake is None:
                return
            ready, _, _ = select.select([master, wake], [], [], 0.5)
            if wake in ready:
                os.read(wake, 64)
            if master not in ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # no slave open (host closed the port): wait for the next one
                self._stopping.wait(0.02)
                continue
            buf += chunk
            while buf:
                if entry is not None:  # SMS text entry after the "> " prompt
                    end = next((i for i, b in enumerate(buf) if b in (_CTRL_Z, _ESC)), -1)
                    if end < 0:
                        break
                    text, cancel = bytes(buf[:end]).decode("utf-8", "replace"), buf[end] == _ESC
                    del buf[:end + 1]
                    self._record("host", text + ("<ESC>" if cancel else "<Ctrl-Z>"))
                    if self._echo:
                        self._write(text.encode())
                    self._send_lines(["OK"] if cancel else self._submit(entry, text))
                    entry = None
                    continue
                cut = buf.find(b"\r")
                if cut < 0:
                    break
                cmd = bytes(buf[:cut]).decode("utf-8", "replace").strip()
                del buf[:cut + 1]
                if cmd:
                    entry = self._handle(cmd)
