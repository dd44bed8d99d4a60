"""What the ARC link works with (SPEC §3 "Dispatch", §4): receivers as configured, the alarm as
the relay hands it over, the extended-data plan, the errors and the results of a delivery.
Used by :mod:`relay.arc` (the client) and its callers; import from :mod:`relay.arc`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from protocol.errors import LonewatchError, ValidationError
from protocol.sia import (
    ContactId,
    SiaFrame,
    SiaReply,
    aes_key,
    ascii_text,
    check_account,
    format_latitude,
    format_longitude,
    format_position_text,
    format_timestamp,
)

__all__ = ["ArcAlarm", "ArcError", "ArcReceiver", "ArcRejectedError", "ArcResult", "ArcUnavailableError", "Attempt",
           "plan_xdata"]


# --------------------------------------------------------------------------- errors
class ArcError(LonewatchError):
    """Root of ARC delivery errors. ``attempts`` is the log of every frame sent, ``sequence``
    the DC-09 sequence number the alarm used."""

    def __init__(self, message: str, attempts: tuple[Attempt, ...] = (), sequence: int | None = None) -> None:
        self.attempts = attempts
        self.sequence = sequence
        super().__init__(message)


class ArcUnavailableError(ArcError, ConnectionError):
    """No receiver answered usefully (timeouts, refused connections, garbage replies) — at
    least one receiver may take the alarm later, so the caller should retry."""


class ArcRejectedError(ArcError):
    """Every receiver answered and refused the alarm (DUH, or NAK with nothing left to fix).
    ``code_refused``: receivers that refused it for its Contact ID code only (they ACK others)."""

    code_refused: tuple[str, ...] = ()


# --------------------------------------------------------------------------- config and input
@dataclass(frozen=True, slots=True)
class ArcReceiver:
    """One ARC receiver (SPEC §3: primary, secondary …).

    ``timeout_s`` bounds connect and the wait for the reply (seconds). ``max_xdata_blocks``
    caps the extended-data blocks per frame (None = no cap). ``key``: AES key for encrypted
    frames — ``bytes`` used as is, or 32/48/64 hex digits (see :mod:`protocol.sia`).
    ``receiver_no``/``line_no`` fill the ``R``/``L`` fields (1-6 hex digits).
    ``protocol`` ``"tcp"`` (default) or ``"udp"`` (SIA DC-09 allows both; over UDP one
    datagram carries the frame and one the reply, and a lost datagram is a timeout).
    Raises ValidationError on construction.
    """

    name: str
    host: str
    port: int
    timeout_s: float = 5.0
    max_xdata_blocks: int | None = None
    key: str | bytes | None = field(default=None, repr=False)
    receiver_no: str = "1"
    line_no: str = "1"
    protocol: str = "tcp"
    #: Seconds between NULL link polls of this receiver (:mod:`relay.linktest`); 0 = none.
    poll_interval_s: float = 0.0
    #: The receiver takes both ADM-CID and SIA-DCS: a frame it refuses in one is tried in the other.
    format_fallback: bool = False

    def __post_init__(self) -> None:
        if self.poll_interval_s < 0:
            raise ValidationError("poll_interval_s", f"must be >= 0, got {self.poll_interval_s}")
        if self.protocol not in ("tcp", "udp"):
            raise ValidationError("protocol", f"must be tcp or udp, got {self.protocol!r}")
        if not 1 <= self.port <= 65535:
            raise ValidationError("port", f"must be 1..65535, got {self.port}")
        if not self.timeout_s > 0:
            raise ValidationError("timeout_s", f"must be > 0, got {self.timeout_s}")
        if self.max_xdata_blocks is not None and self.max_xdata_blocks < 0:
            raise ValidationError("max_xdata_blocks", "must be >= 0 or None")
        if self.key is not None:
            aes_key(self.key)
        SiaFrame("NULL", 0, None, receiver=self.receiver_no, line=self.line_no)  # validates R/L

    @property
    def encrypted(self) -> bool:
        """True when frames to this receiver are AES-encrypted."""
        return bool(self.key)


@dataclass(frozen=True, slots=True)
class ArcAlarm:
    """What to tell the ARC about one event.

    ``account`` 3-16 hex digits; ``fmt`` ``"ADM-CID"`` (default) or ``"SIA-DCS"``;
    ``position`` ``(lat, lon, accuracy_m)`` in degrees/metres (accuracy may be None) → ``X``/``Y``
    blocks; ``occurred_at`` aware datetime of the event → ``H`` block (late delivery);
    ``text`` worker/site → ``I`` block, made ASCII-safe by :func:`protocol.sia.ascii_text`;
    ``place`` ``(building, floor, room)`` from a BLE beacon (issue 12, "" = unknown part) →
    ``O``/``L``/``R`` blocks, ASCII-safe likewise. Raises ValidationError on construction.
    """

    account: str
    contact_id: ContactId
    fmt: str = "ADM-CID"
    position: tuple[float, float, float | None] | None = None
    occurred_at: datetime | None = None
    text: str | None = None
    place: tuple[str, str, str] | None = None

    def __post_init__(self) -> None:
        if self.fmt not in ("ADM-CID", "SIA-DCS"):
            raise ValidationError("fmt", f"must be ADM-CID or SIA-DCS, got {self.fmt!r}")
        object.__setattr__(self, "account", check_account(self.account))
        self.data()  # SIA-DCS: the Contact ID code must have a SIA code
        if self.position is not None:
            lat, lon, _acc = self.position
            format_latitude(lat), format_longitude(lon)
        if self.occurred_at is not None:
            format_timestamp(self.occurred_at)
        if self.text is not None:
            object.__setattr__(self, "text", ascii_text(self.text) or None)
        if self.place is not None:
            place = tuple(ascii_text(p or "", 64) for p in self.place)
            object.__setattr__(self, "place", place if any(place) else None)

    def data(self) -> str:
        """The frame's data: ``#acct|QEEE GG ZZZ`` (ADM-CID) or ``#acct|Nri<p>/<code><zone>``."""
        if self.fmt == "ADM-CID":
            return self.contact_id.body(self.account)
        return self.contact_id.sia_dcs_body(self.account)


def plan_xdata(alarm: ArcAlarm, limit: int | None = None) -> tuple[str, ...]:
    """Extended-data blocks for ``alarm`` with at most ``limit`` blocks (None = all).

    Priority: position (``X`` + ``Y``), then the place (``R`` room, ``L`` floor, ``O``
    building: issue 12), then ``H``, then ``I``; wire order X, Y, O, L, R, H, I (SPEC §4:
    position first). When only one block fits, a single ``I`` block carries position (if any,
    :func:`protocol.sia.format_position_text`, read back by ``parse_position_text``), the
    place (``building / floor / room``) and the text.
    """
    pos, when, text = alarm.position, alarm.occurred_at, alarm.text
    xy = (format_longitude(pos[1]), format_latitude(pos[0])) if pos else ()
    olr = tuple(f"{tag}{value}" for tag, value in zip("OLR", alarm.place or ()) if value)
    h = ("H" + format_timestamp(when),) if when else ()
    i = ("I" + text,) if text else ()
    full = (*xy, *olr, *h, *i)
    if limit is None or limit >= len(full):
        return full
    if limit <= 0:
        return ()
    if limit == 1 and (pos or olr):
        where = " / ".join(p for p in alarm.place or () if p)
        joined = ", ".join(p for p in (where, text) if p) or None
        if pos:
            return ("I" + format_position_text(pos[0], pos[1], pos[2], joined),)
        return ("I" + ascii_text(joined or ""),)
    rest = limit - len(xy)
    kept = set((*olr[::-1], *h, *i)[:rest])  # room before floor before building
    return (*xy, *(b for b in (*olr, *h, *i) if b in kept))


# --------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class Attempt:
    """One frame sent. ``outcome``: ACK, RSP, NAK, DUH, timeout, refused, error (other socket
    error), garbage (unreadable reply), mismatch (ACK for another sequence/account).
    ``clock_offset_s`` is the correction applied to the frame's timestamp."""

    receiver: str
    sequence: int
    outcome: str
    detail: str
    xdata_blocks: int
    clock_offset_s: float
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class ArcResult:
    """A delivered alarm: which receiver ACKed, the reply, how many frames it took
    (``attempts``, all receivers), ``latency_s`` from :meth:`ArcClient.send` to the ACK,
    ``xdata_sent`` blocks in the ACKed frame, ``degraded`` True when that frame carried less
    extended data than the receiver is configured to take (``max_xdata_blocks``) or went in
    the other format: trimmed after a refusal, now or for an earlier alarm; and the log."""

    receiver: str
    sequence: int
    reply: SiaReply
    attempts: int
    latency_s: float
    degraded: bool
    xdata_sent: tuple[str, ...]
    log: tuple[Attempt, ...]


