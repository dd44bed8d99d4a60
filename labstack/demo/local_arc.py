"""The demo's ARC: a real SIA DC-09 receiver (pysiaalarm) decoding what the relay sends (SPEC §4).

Split out of :mod:`labstack.demo.stack` (issue 9), which re-exports every name here, so
``from labstack.demo.stack import LocalArc`` keeps working. :class:`ArcTarget` says where the
relay sends (this local receiver or an external one); :class:`LocalArc` runs pysiaalarm's
threaded TCP receiver; :func:`decoded_sia_event` turns one of its events into a plain dict that
demo scenarios and tests check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from protocol.sia import parse_position, parse_position_text

__all__ = ["ArcTarget", "LocalArc", "decoded_sia_event"]


@dataclass
class ArcTarget:
    """Where the relay sends: the local pysiaalarm receiver or an external one."""

    host: str
    port: int
    local: bool


class LocalArc:
    """pysiaalarm's threaded TCP receiver, decoding into dicts the demo can print/check.

    pysiaalarm's ADM-CID parser accepts one extended-data block, so the relay is configured
    with ``max_xdata_blocks = 1`` for it and sends the position as alarm text (SPEC §4:
    "know what each receiver in the tests accepts")."""

    def __init__(self, account: str, port: int) -> None:
        from pysiaalarm import SIAAccount, SIAClient

        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.port = port
        self.client = SIAClient("127.0.0.1", port, [SIAAccount(account_id=account)], self._on_event)

    def _on_event(self, event) -> None:
        with self._cond:
            self.events.append(decoded_sia_event(event))
            self._cond.notify_all()

    def wait_event(self, timeout_s: float, sequence: str | None = None) -> dict[str, Any] | None:
        """The first decoded event (with this 4-digit ``sequence`` if given), waiting up to
        ``timeout_s`` seconds; None if none came."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if sequence is None or e["sequence"] == sequence), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout_s)
            return found()

    def __enter__(self) -> "LocalArc":
        self.client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()


def decoded_sia_event(event) -> dict[str, Any]:
    """What an ARC decoded from one pysiaalarm ``SIAEvent``: account, Contact ID code (3
    digits), qualifier, partition, zone, and position (lat/lon) from ``X``/``Y`` extended
    data or from position text in ``I``."""
    out: dict[str, Any] = {
        "account": event.account,
        "code": event.event_type,
        "qualifier": int(event.event_qualifier) if event.event_qualifier else None,
        "partition": event.partition,
        "zone": int(event.ri) if event.ri else None,
        "sia_code": event.code,
        "sequence": event.sequence,
        "lat": None,
        "lon": None,
    }
    xdata = {x.identifier: x.value for x in (event.extended_data or [])}
    out["xdata"] = xdata  # issue 12: O (building), L (floor), R (room), I (text) as the ARC read them
    if "X" in xdata and "Y" in xdata:
        out["lat"], out["lon"] = parse_position("X" + xdata["X"], "Y" + xdata["Y"])
    elif "I" in xdata:
        try:
            pt = parse_position_text(xdata["I"])
            out["lat"], out["lon"] = pt.lat, pt.lon
        except ValueError:
            pass
    return out
