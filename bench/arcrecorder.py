"""A pysiaalarm SIA DC-09 receiver standing in for the ARC, recording every alarm it accepted.

pysiaalarm ACKs a frame before it calls the callback, and calls it only for frames it ACKed
(valid CRC, known account, timestamp inside ``allowed_timeband``). A frame it NAKs is counted
in :attr:`ArcRecorder.counts` (``error_timestamp`` …), never recorded.

"Exactly once at the ARC" is judged as a DC-09 receiver does: a frame repeating an
``(account, sequence)`` already received is the same message re-sent after a lost ACK and
is discarded (:meth:`ArcRecorder.distinct`); :attr:`ArcRecorder.frames` keeps all of them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ArcFrame:
    """One accepted frame: ``account`` (upper-case hex), ``sequence`` (int), Contact ID
    ``code`` (3 digits) and ``qualifier``, ``zone`` (worker number), ``timestamp`` (the
    frame's, aware UTC or None), ``xdata`` ``{identifier: value}``, ``at`` (monotonic s)."""

    account: str
    sequence: int
    code: str | None
    qualifier: int | None
    zone: int | None
    timestamp: Any
    xdata: dict[str, str]
    at: float


class ArcRecorder:
    """pysiaalarm's threaded TCP receiver on 127.0.0.1:``port`` for ``accounts``.

    ``allowed_timeband`` is pysiaalarm's ``(seconds before, seconds after)`` window around its
    own clock (default 40 s / 20 s, SPEC §4); ``on_frame`` an optional hook per accepted frame.
    Stop and :meth:`start` again to simulate an outage (the port is reused).
    """

    def __init__(self, accounts: Iterable[str], port: int, *, allowed_timeband: tuple[int, int] = (40, 20),
                 on_frame: Callable[[ArcFrame], None] | None = None) -> None:
        self.accounts = sorted({a.upper() for a in accounts})
        self.port = port
        self.allowed_timeband = allowed_timeband
        self.on_frame = on_frame
        self.frames: list[ArcFrame] = []
        self._cond = threading.Condition()
        self._client: Any = None
        self._old_counts: Counter[str] = Counter()

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> "ArcRecorder":
        """Listen (again) on the port."""
        from pysiaalarm import SIAAccount, SIAClient

        accts = [SIAAccount(account_id=a, allowed_timeband=self.allowed_timeband) for a in self.accounts]
        self._client = SIAClient("127.0.0.1", self.port, accts, self._on_event)
        self._client.start()
        return self

    def stop(self) -> None:
        """Stop listening (the relay then gets connection refused)."""
        if self._client is not None:
            self._old_counts.update(self._count_dict())
            self._client.stop()
            self._client = None

    def __enter__(self) -> "ArcRecorder":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- observation ------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        xdata = {x.identifier: x.value for x in (event.extended_data or [])}
        frame = ArcFrame(
            account=str(event.account).upper(), sequence=int(event.sequence), code=event.event_type,
            qualifier=int(event.event_qualifier) if event.event_qualifier else None,
            zone=int(event.ri) if event.ri else None, timestamp=event.timestamp, xdata=xdata,
            at=time.monotonic(),
        )  # fmt: skip
        with self._cond:
            self.frames.append(frame)
            self._cond.notify_all()
        if self.on_frame is not None:
            self.on_frame(frame)

    def _count_dict(self) -> Counter[str]:
        c = self._client.counts if self._client is not None else None
        if c is None:
            return Counter()
        return Counter({k: v for k, v in vars(c).items() if isinstance(v, int)})

    @property
    def counts(self) -> Counter[str]:
        """pysiaalarm's counters (``events``, ``valid_events``, ``error_timestamp`` …) summed
        over every start."""
        return self._old_counts + self._count_dict()

    def distinct(self) -> dict[tuple[str, int], list[ArcFrame]]:
        """``(account, sequence)`` → every frame received with it (len > 1 = a repeat)."""
        with self._cond:
            out: dict[tuple[str, int], list[ArcFrame]] = {}
            for f in self.frames:
                out.setdefault((f.account, f.sequence), []).append(f)
            return out

    def wait_distinct(self, n: int, timeout_s: float) -> bool:
        """True once at least ``n`` distinct ``(account, sequence)`` were received."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len({(f.account, f.sequence) for f in self.frames}) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True
