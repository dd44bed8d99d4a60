"""The event queue's errors: :class:`QueueError` and :class:`QueueCorruptError` (SPEC §2).

Split out of :mod:`device.queue` (issue 9) so the queue and its SMS-fallback records
(:mod:`device.queue_sms`) raise the same errors; :mod:`device.queue` re-exports both. Rooted in
:class:`protocol.errors.LonewatchError` (one error root, house rule).
"""

from __future__ import annotations

from os import PathLike

from protocol.errors import LonewatchError

__all__ = ["QueueCorruptError", "QueueError"]


class QueueError(LonewatchError):
    """The event queue cannot be used (I/O error, closed, bad database). ``path`` names it."""

    def __init__(self, path: str | PathLike[str], message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class QueueCorruptError(QueueError):
    """The database file is damaged or not a database; :meth:`device.queue.EventQueue.open_or_recover`
    moves it aside and starts a fresh one."""
