"""The relay's inbox between paho's network thread and the pipeline thread (issue 14: alarm →
ARC ACK p99 ≤ 100 ms while the relay handles 5 000 alive/s).

Two FIFO lanes: events and status messages (``urgent``) are taken before alive messages, so an
alarm never waits behind a backlog of alives (a relay catching up after a restart, a burst).
Within a lane the order of arrival is kept (a device's events stay in order; SPEC §3). The
broker's PUBACKs then go out of arrival order across lanes, which MQTT brokers handle by
packet id (Mosquitto does).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Inbox"]


class Inbox(Generic[T]):
    """Thread-safe two-lane queue with the :class:`queue.Queue` calls the pipeline uses."""

    def __init__(self) -> None:
        self._urgent: deque[T] = deque()
        self._normal: deque[T] = deque()
        self._cond = threading.Condition()

    def put(self, item: T, urgent: bool = False) -> None:
        """Append ``item`` to its lane."""
        with self._cond:
            (self._urgent if urgent else self._normal).append(item)
            self._cond.notify()

    def get(self) -> T:
        """The next item (urgent lane first), waiting for one."""
        with self._cond:
            while not self._urgent and not self._normal:
                self._cond.wait()
            return self._urgent.popleft() if self._urgent else self._normal.popleft()

    def get_nowait(self) -> T:
        """The next item without waiting. Raises queue.Empty."""
        with self._cond:
            if self._urgent:
                return self._urgent.popleft()
            if self._normal:
                return self._normal.popleft()
        raise queue.Empty

    def qsize(self) -> int:
        """Items waiting in both lanes."""
        with self._cond:
            return len(self._urgent) + len(self._normal)
