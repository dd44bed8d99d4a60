"""DC-09 sequence numbers for :class:`relay.arc.ArcClient` (SPEC §4: 0001–9999, wrapping;
one per alarm, repeated on every resend). The relay shares one source through Redis
(:meth:`relay.store.Store.next_sequence`); :class:`MemorySequences` serves tests and one-off
sends. Re-exported by :mod:`relay.arc`.
"""

from __future__ import annotations

import threading
from typing import Protocol

from protocol.errors import ValidationError

__all__ = ["MemorySequences", "SequenceSource"]


class SequenceSource(Protocol):
    """Source of DC-09 sequence numbers per account (the relay shares one through Redis)."""

    def next_sequence(self, account: str) -> int:
        """The next sequence for ``account``: 1..9999, wrapping 9999 → 1."""
        ...


class MemorySequences:
    """In-process :class:`SequenceSource` (tests, single-process relays). Thread-safe."""

    def __init__(self, start: int = 1) -> None:
        if not 1 <= start <= 9999:
            raise ValidationError("start", "must be 1..9999")
        self._start = start
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def next_sequence(self, account: str) -> int:
        """The next sequence for ``account``: 1..9999, wrapping 9999 → 1."""
        with self._lock:
            value = self._next.get(account, self._start)
            self._next[account] = value % 9999 + 1
            return value
