"""The SMS-fallback records of the device queue: :class:`SmsRecord` and its table (SPEC §2 "SMS fallback").

Split out of :mod:`device.queue` (issue 9): :class:`SmsFallbackRecords` is mixed into
:class:`device.queue.EventQueue` and uses its ``_db()`` connection and ``path``, so a planned
or half-sent SMS is committed (fsync-ed) in the same ``queue.db`` as the event it falls back
for; :mod:`device.queue` re-exports :class:`SmsRecord`. One row per alarm and recipient holds
the text, the concatenation reference and the message reference of every part already sent, so
a restart neither sends a part twice nor forgets one that is due (:mod:`device.fallback` drives it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .queue_errors import QueueError

__all__ = ["SmsFallbackRecords", "SmsRecord"]

_SMS_COLUMNS = ("event_id, kind, number, language, text, reference, parts, part_refs, status, "
                "attempts, next_attempt_at, last_error, created_at, done_at")


@dataclass(frozen=True)
class SmsRecord:
    """One SMS fallback message to one recipient (SPEC §2 "SMS fallback").

    ``status``: ``due`` (to send / resend), ``sent`` (every part accepted by the network),
    ``skipped`` (the relay confirmed the event before any part went out), ``failed`` (the
    number was refused for good, e.g. ``+CMS ERROR: 1`` unassigned number). ``part_refs``
    holds the ``<mr>`` of each part sent so far, in order; ``reference`` is the
    concatenation reference, kept so resent parts join the ones already delivered. Times are
    wall-clock seconds."""

    event_id: str
    kind: str
    number: str
    language: str
    text: str
    reference: int
    parts: int
    part_refs: tuple[int, ...]
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    done_at: float | None

    @property
    def started(self) -> bool:
        """At least one part went out."""
        return bool(self.part_refs)


def _sms_row(row: tuple[object, ...]) -> SmsRecord:
    (event_id, kind, number, language, text, reference, parts, part_refs, status, attempts,
     next_at, last_error, created_at, done_at) = row
    return SmsRecord(str(event_id), str(kind), str(number), str(language), str(text),
                     int(reference), int(parts), tuple(json.loads(str(part_refs))),  # type: ignore[arg-type]
                     str(status), int(attempts), float(next_at),  # type: ignore[arg-type]
                     None if last_error is None else str(last_error), float(created_at),  # type: ignore[arg-type]
                     None if done_at is None else float(done_at))  # type: ignore[arg-type]


class SmsFallbackRecords:
    """The ``sms_fallback`` table's operations of :class:`device.queue.EventQueue` (a mixin,
    no state of its own)."""

    def plan_sms(self, records: list[SmsRecord]) -> int:
        """Store planned SMS messages (status ``due``) in one transaction; a message already
        planned for the same event and number is kept as it is. Returns how many are new."""
        added = 0
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            for r in records:
                cur = conn.execute(
                    f"INSERT INTO sms_fallback ({_SMS_COLUMNS}) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (event_id, number) DO NOTHING",
                    (r.event_id, r.kind, r.number, r.language, r.text, r.reference, r.parts,
                     json.dumps(list(r.part_refs)), r.status, r.attempts, r.next_attempt_at,
                     r.last_error, r.created_at, r.done_at))
                added += cur.rowcount
            conn.execute("COMMIT")
        return added

    def sms_for(self, event_id: str) -> list[SmsRecord]:
        """Every planned SMS of one event, in planning order."""
        with self._db() as conn:
            rows = conn.execute(f"SELECT {_SMS_COLUMNS} FROM sms_fallback WHERE event_id = ? "
                                "ORDER BY pos", (event_id,)).fetchall()
        return [_sms_row(r) for r in rows]

    def sms_due(self, now: float) -> list[SmsRecord]:
        """Messages to send now: status ``due`` and ``next_attempt_at`` reached (or more than
        an hour ahead: the clock was set back), in planning order."""
        with self._db() as conn:
            rows = conn.execute(f"SELECT {_SMS_COLUMNS} FROM sms_fallback WHERE status = 'due' "
                                "AND (next_attempt_at <= ? OR next_attempt_at > ?) ORDER BY pos",
                                (now, now + 3600)).fetchall()
        return [_sms_row(r) for r in rows]

    def sms_part_sent(self, event_id: str, number: str, part_ref: int, now: float) -> SmsRecord:
        """Record that the next part was accepted with message reference ``part_ref``; the
        message becomes ``sent`` with its last part. Returns the updated record.

        Raises:
            QueueError: no such message.
        """
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT part_refs, parts FROM sms_fallback WHERE event_id = ? "
                               "AND number = ?", (event_id, number)).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                raise QueueError(self.path, f"no SMS planned for {event_id} to that number")
            refs = json.loads(row[0]) + [int(part_ref)]
            done = len(refs) >= int(row[1])
            conn.execute("UPDATE sms_fallback SET part_refs = ?, status = ?, done_at = ?, "
                         "last_error = NULL WHERE event_id = ? AND number = ?",
                         (json.dumps(refs), "sent" if done else "due", now if done else None,
                          event_id, number))
            out = conn.execute(f"SELECT {_SMS_COLUMNS} FROM sms_fallback WHERE event_id = ? "
                               "AND number = ?", (event_id, number)).fetchone()
            conn.execute("COMMIT")
        return _sms_row(out)

    def sms_attempt_failed(self, event_id: str, number: str, error: str, next_attempt_at: float,
                           *, permanent: bool = False, now: float | None = None) -> None:
        """Record a failed attempt: tried again at ``next_attempt_at``, or never
        (``permanent``: status ``failed``)."""
        with self._db() as conn:
            conn.execute("UPDATE sms_fallback SET attempts = attempts + 1, last_error = ?, "
                         "next_attempt_at = ?, status = CASE WHEN ? THEN 'failed' ELSE status END, "
                         "done_at = CASE WHEN ? THEN ? ELSE done_at END "
                         "WHERE event_id = ? AND number = ?",
                         (error[:300], next_attempt_at, permanent, permanent,
                          time.time() if now is None else now, event_id, number))

    def sms_skip_unstarted(self, event_id: str, now: float) -> int:
        """The relay confirmed ``event_id``: messages of it that have not started are
        ``skipped`` (a started one is finished, half a message helps nobody). Returns how
        many were skipped."""
        with self._db() as conn:
            return conn.execute("UPDATE sms_fallback SET status = 'skipped', done_at = ? "
                                "WHERE event_id = ? AND status = 'due' AND part_refs = '[]'",
                                (now, event_id)).rowcount

    def sms_prune(self, before: float) -> int:
        """Forget finished messages done before ``before`` (wall seconds) whose event left
        the queue. Returns how many rows were deleted."""
        with self._db() as conn:
            return conn.execute("DELETE FROM sms_fallback WHERE status != 'due' AND done_at < ? "
                                "AND event_id NOT IN (SELECT id FROM events)",
                                (before,)).rowcount
