"""What each ARC receiver accepts, learned from its answers and shared by every relay
(issue 14: "the next alarm goes right the first time"; SPEC §4 "Receivers differ in how much
extended data they accept: know what each receiver accepts, and never drop the alarm for it").

Learned per receiver (key ``lw:arccaps:<name>@<host>:<port>``, one Redis hash, so a receiver
moved to another address starts afresh):

==========================  ==================================================================
field                       meaning
==========================  ==================================================================
``xdata:<fmt>``             most extended-data blocks an ACKed frame in ``fmt`` carried after
                            trimming (``ADM-CID`` / ``SIA-DCS``); absent = not limited yet;
                            ``xdata_at:<fmt>`` when: after ``relearn_s`` (a day) the full
                            frame is offered again (a receiver upgraded, a one-off silence)
``fmt``                     the format that got the last ACK when the configured one failed
``acked:<code>``            Unix s of the last ACK for Contact ID ``code`` (``"120"``)
``refused:<code>``          Unix s since this receiver refused ``code`` in every variant while
                            it ACKs other codes: it does not know that code (DUH for one code
                            only, e.g. 606 listen-in at a receiver without voice follow-up)
==========================  ==================================================================

Redis trouble never stops a delivery: every read falls back to what this process learned
itself (:class:`ReceiverCaps` keeps a memory copy), every failed write is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

__all__ = ["CapsView", "ReceiverCaps", "caps_key"]

#: The two DC-09 alarm formats this relay speaks (SPEC §3).
FORMATS = ("ADM-CID", "SIA-DCS")


def caps_key(name: str, host: str, port: int) -> str:
    """``lw:arccaps:<name>@<host>:<port>``: the Redis hash of one receiver's learned caps."""
    return f"lw:arccaps:{name}@{host}:{port}"


@dataclass(frozen=True, slots=True)
class CapsView:
    """What is known about one receiver for one alarm: ``fmt`` preferred format (None = the
    configured one), ``xdata`` block cap per format, ``refused`` True when it does not know the
    alarm's code, ``knows_other_codes`` True when it ACKed some other code before."""

    fmt: str | None
    xdata: dict[str, int]
    refused: bool
    knows_code: bool
    knows_other_codes: bool


class _Backend(Protocol):
    def hgetall(self, key: str) -> dict[Any, Any]: ...
    def hset(self, key: str, mapping: dict[str, Any]) -> Any: ...
    def hdel(self, key: str, *fields: str) -> Any: ...


class ReceiverCaps:
    """Learned receiver capabilities, in Redis (``client``: a redis-py client, or None for
    memory only, e.g. tests and one-off CLI sends). Thread-safe.

    Reads go to Redis at most every ``refresh_s`` seconds per receiver (other relays' lessons
    arrive within that), writes at once.
    """

    def __init__(self, client: _Backend | None = None, *, refresh_s: float = 5.0,
                 relearn_s: float = 86400.0, clock: Any = time.time) -> None:  # fmt: skip
        self._r = client
        self._relearn_s = relearn_s
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._mem: dict[str, dict[str, str]] = {}
        self._read_at: dict[str, float] = {}

    def _fields(self, key: str) -> dict[str, str]:
        now = time.monotonic()
        with self._lock:
            fresh = now - self._read_at.get(key, -1e9) < self._refresh_s
            if fresh or self._r is None:
                return dict(self._mem.get(key, {}))
        try:
            raw = self._r.hgetall(key)
        except Exception as exc:  # Redis down: what this process knows
            log.warning("receiver caps %s: redis unavailable (%s); using this relay's own", key, exc)
            with self._lock:
                return dict(self._mem.get(key, {}))
        got = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
               for k, v in raw.items()}  # fmt: skip
        with self._lock:
            self._mem[key] = got
            self._read_at[key] = now
        return dict(got)

    def _write(self, key: str, sets: dict[str, str], dels: tuple[str, ...] = ()) -> None:
        with self._lock:
            mem = self._mem.setdefault(key, {})
            mem.update(sets)
            for f in dels:
                mem.pop(f, None)
        if self._r is None:
            return
        try:
            if sets:
                self._r.hset(key, mapping=sets)
            if dels:
                self._r.hdel(key, *dels)
        except Exception as exc:
            log.warning("receiver caps %s: could not store %s (%s)", key, sorted(sets) or dels, exc)

    def view(self, key: str, code: str) -> CapsView:
        """What is known about receiver ``key`` for Contact ID ``code`` (``"120"``)."""
        f = self._fields(key)
        now = self._clock()
        xdata = {fmt: int(f[f"xdata:{fmt}"]) for fmt in FORMATS if f.get(f"xdata:{fmt}", "").isdigit()
                 and now - float(f.get(f"xdata_at:{fmt}") or 0) < self._relearn_s}
        others = any(k.startswith("acked:") and k != f"acked:{code}" for k in f)
        return CapsView(f.get("fmt") or None, xdata, f"refused:{code}" in f, f"acked:{code}" in f, others)

    def learned_ack(self, key: str, *, code: str, fmt: str, configured_fmt: str, xdata: int | None) -> None:
        """An ACK for ``code`` in ``fmt``; ``xdata``: blocks it carried when fewer than
        planned (the cap to remember), else None. A format other than ``configured_fmt``
        becomes the receiver's preferred one; back to the configured one clears it."""
        sets = {f"acked:{code}": f"{self._clock():.0f}"}
        dels: list[str] = [f"refused:{code}"]
        if xdata is not None:
            sets[f"xdata:{fmt}"], sets[f"xdata_at:{fmt}"] = str(xdata), sets[f"acked:{code}"]
        if fmt != configured_fmt:
            sets["fmt"] = fmt
        else:
            dels.append("fmt")
        self._write(key, sets, tuple(dels))

    def learned_refusal(self, key: str, *, code: str) -> None:
        """Receiver ``key`` refused ``code`` in every variant while it ACKs other codes."""
        self._write(key, {f"refused:{code}": f"{self._clock():.0f}"})

    def forget(self, key: str) -> None:
        """Drop everything learned about ``key`` (``lonewatch`` admin, tests)."""
        with self._lock:
            self._mem.pop(key, None)
            self._read_at.pop(key, None)
        if self._r is not None:
            try:
                self._r.delete(key)  # type: ignore[attr-defined]
            except Exception as exc:
                log.warning("receiver caps %s: could not forget (%s)", key, exc)

    def snapshot(self, key: str) -> dict[str, str]:
        """Every learned field of ``key`` (status output, tests); read from Redis now."""
        with self._lock:
            self._read_at.pop(key, None)
        return self._fields(key)
