"""Byte stream → AT response lines (ITU-T V.250 §5.7 framing), with no port and no thread.

A modem frames every information line and result code as ``<CR><LF>text<CR><LF>``; echo of a
command ends with ``<CR>``. :class:`LineFramer` cuts the stream at every CR or LF, removes line
noise (NUL and other control bytes, undecodable bytes at the ends: :func:`modem.symptoms.clean_line`)
and drops lines left empty. What is left without a line end (the SMS ``> `` prompt of 3GPP TS
27.005 §3.5.1, a ``login:`` prompt) stays in :attr:`tail`.
"""

from __future__ import annotations

from .symptoms import clean_line

__all__ = ["MAX_LINE", "LineFramer"]

#: Bytes without a line end after which the buffer is taken as one (garbage) line.
MAX_LINE = 4096


class LineFramer:
    """Incremental splitter: :meth:`feed` bytes, get whole lines back (``str``, stripped)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[str]:
        """Add ``chunk``; return the complete, non-empty lines it finished, in order."""
        buf = self._buf
        buf += chunk
        lines: list[str] = []
        while True:
            cut = min((i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0), default=-1)
            if cut < 0 and len(buf) > self.max_line:
                cut = len(buf)
            if cut < 0:
                break
            raw = bytes(buf[:cut])
            del buf[:cut + 1]
            line = clean_line(raw)
            if line:
                lines.append(line)
        return lines

    @property
    def tail(self) -> bytes:
        """The bytes received after the last line end (a prompt, or half a line)."""
        return bytes(self._buf)

    @property
    def tail_text(self) -> str:
        """:attr:`tail` cleaned like a line (``b"\\x00> "`` → ``">"``)."""
        return clean_line(bytes(self._buf)) if self._buf else ""

    def clear(self) -> None:
        """Forget :attr:`tail` (after it was taken as a prompt)."""
        self._buf.clear()
