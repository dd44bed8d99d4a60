"""The durable on-device event queue (SPEC §2 "Delivery guarantees").

Every event is written here — committed and fsync-ed — *before* its first send attempt, and
leaves only when the relay's application-level ``received`` ack arrives (:meth:`EventQueue.ack`).
SQLite in ``state_dir/queue.db``: ``journal_mode=WAL``, ``synchronous=FULL`` (each commit is on
stable storage when the call returns, so a power cut loses nothing that was acknowledged to the
caller). One connection guarded by a lock: safe to share between threads.

Ordering: lower ``priority`` first (:data:`PRIORITY_ALARM` = 0 before :data:`PRIORITY_EVENT`),
then first queued first. Insertion order, not wall time, decides "oldest": the device clock may
be wrong before NTP (SPEC §7).

Sequence numbers (:meth:`EventQueue.next_sequence`) are committed before they are returned, so a
crash can skip a number but never hand one out twice. A *new* database starts its counter at
the current Unix time in seconds (and a recovered one above whatever could be salvaged): event
ids are ``<device>:<seq>`` and the relay deduplicates by id, so a reflashed device or a lost
database must not reuse old sequence numbers — that would make the relay drop new alarms as
duplicates. (Devices queue far fewer than one event per second.)

Times: ``now`` / ``created_at`` / ``last_attempt_at`` are wall-clock seconds (``time.time()``).

The same file keeps the device's other durable state, so one fsync-ed commit covers it:
``state`` (small named JSON values: open alarm, running check-in, on-shift flag, battery low
flag …, :meth:`EventQueue.get_state` / :meth:`EventQueue.set_state`) and ``sms_fallback`` (one
row per alarm and recipient of the SMS fallback with the text, the concatenation reference and
the message reference of every part already sent, :class:`SmsRecord`), so a restart neither
sends an SMS part twice nor forgets one that is due. Schema 2 adds these tables to a schema-1
file in place.

This module holds :class:`EventQueue` (schema, opening and recovery, events, device state);
the ``sms_fallback`` operations and :class:`SmsRecord` are in :mod:`device.queue_sms` (mixed
in), the errors in :mod:`device.queue_errors` (issue 9 split); every name is re-exported here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from .queue_errors import QueueCorruptError, QueueError
from .queue_sms import SmsFallbackRecords, SmsRecord

__all__ = [
    "PRIORITY_ALARM",
    "PRIORITY_EVENT",
    "EventQueue",
    "QueueCorruptError",
    "QueueError",
    "QueuedEvent",
    "SmsRecord",
]

PRIORITY_ALARM = 0
"""Alarms and their cancels (same priority, so a cancel never overtakes its alarm)."""
PRIORITY_EVENT = 10
"""Everything else (check-in, shift, battery, test)."""

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt_at REAL
);
CREATE INDEX IF NOT EXISTS events_order ON events (priority, pos);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sms_fallback (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    number TEXT NOT NULL,
    language TEXT NOT NULL,
    text TEXT NOT NULL,
    reference INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    part_refs TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL DEFAULT 'due',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    done_at REAL,
    UNIQUE (event_id, number)
);
"""
_COLUMNS = "id, kind, payload, priority, created_at, attempts, last_attempt_at"
_CORRUPT_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


@dataclass(frozen=True)
class QueuedEvent:
    """One queued event. ``payload`` is the encoded message as sent; ``created_at`` and
    ``last_attempt_at`` (None = never attempted) are wall-clock seconds."""

    id: str
    kind: str
    payload: bytes
    priority: int
    created_at: float
    attempts: int
    last_attempt_at: float | None


def _row(row: tuple[object, ...]) -> QueuedEvent:
    id_, kind, payload, priority, created_at, attempts, last = row
    return QueuedEvent(str(id_), str(kind), bytes(payload), int(priority),  # type: ignore[arg-type]
                       float(created_at), int(attempts),  # type: ignore[arg-type]
                       None if last is None else float(last))  # type: ignore[arg-type]


def _is_corrupt(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in _CORRUPT_CODES


class EventQueue(SmsFallbackRecords):
    """Durable FIFO-by-priority of outgoing events in one SQLite file.

    Args:
        path: the database file (``state_dir/queue.db``); it and its parent directory are
            created if missing (file 0600, directory 0700).
        sequence_floor: the sequence counter is raised to at least this value; a new database
            starts at ``int(time.time())`` when None.

    Raises:
        QueueCorruptError: the file is damaged or not a SQLite database (left untouched).
        QueueError: cannot be opened (permissions, I/O) or was made by newer firmware.
    """

    def __init__(self, path: str | PathLike[str], *, sequence_floor: int | None = None) -> None:
        self.path = Path(path)
        #: Where a corrupt predecessor was moved by :meth:`open_or_recover`, else None.
        self.recovered_from: Path | None = None
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Create the file ourselves so it is 0600 from the first byte; SQLite gives the
            # -wal and -shm files the database file's permissions.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise QueueError(self.path, f"cannot create: {exc.strerror or exc}") from exc
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise QueueError(self.path, f"cannot open: {exc}") from exc
        try:
            self._setup(conn, sequence_floor)
        except sqlite3.Error as exc:
            conn.close()
            if _is_corrupt(exc):
                raise QueueCorruptError(self.path, f"event queue database is corrupt ({exc})"
                                        ) from exc
            raise QueueError(self.path, f"cannot open: {exc}") from exc
        except QueueError:
            conn.close()
            raise
        self._conn = conn

    def _setup(self, conn: sqlite3.Connection, sequence_floor: int | None) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise QueueError(self.path, f"cannot switch to WAL journal (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        check = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            raise QueueCorruptError(self.path, "event queue database is corrupt ("
                                    + "; ".join(str(c) for c in check[:3]) + ")")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise QueueError(self.path, f"made by newer firmware (schema {version}, "
                             f"this firmware knows {SCHEMA_VERSION})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            start = int(time.time()) if sequence_floor is None else sequence_floor
            conn.execute("INSERT INTO counters (name, value) VALUES ('sequence', ?) "
                         "ON CONFLICT (name) DO NOTHING", (start,))
            if sequence_floor is not None:
                conn.execute("UPDATE counters SET value = max(value, ?) WHERE name = 'sequence'",
                             (sequence_floor,))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    @classmethod
    def open_or_recover(cls, path: str | PathLike[str]) -> EventQueue:
        """Open ``path``; if it is corrupt, move it (and its -wal/-shm) aside to
        ``queue.db.corrupt-<UTC timestamp>`` and start a fresh queue whose sequence counter
        is above anything the old file may have handed out. ``recovered_from`` tells where
        the old file went (its events could not be trusted and are not re-sent).

        Raises:
            QueueError: the file cannot be opened for a reason other than corruption, or
                cannot be moved aside.
        """
        try:
            return cls(path)
        except QueueCorruptError:
            pass
        src = Path(path)
        salvaged = _salvage_sequence(src)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = src.with_name(f"{src.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = src.with_name(f"{src.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.replace(src, aside)
            for suffix in ("-wal", "-shm"):
                side = Path(f"{src}{suffix}")
                if side.exists():
                    os.replace(side, f"{aside}{suffix}")
        except OSError as exc:
            raise QueueError(src, f"corrupt, and cannot move it aside: {exc.strerror or exc}"
                             ) from exc
        queue = cls(src, sequence_floor=max(salvaged + 1, int(time.time())))
        queue.recovered_from = aside
        return queue

    # ------------------------------------------------------------------ operations

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise QueueError(self.path, "event queue is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if _is_corrupt(exc):
                    raise QueueCorruptError(self.path, f"event queue database is corrupt ({exc})"
                                            ) from exc
                raise QueueError(self.path, str(exc)) from exc

    def next_sequence(self) -> int:
        """Next event sequence number: strictly increasing across restarts and crashes (gaps
        possible, repeats never). Committed to disk before it is returned."""
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            (value,) = conn.execute("UPDATE counters SET value = value + 1 "
                                    "WHERE name = 'sequence' RETURNING value").fetchone()
            conn.execute("COMMIT")
            return int(value)

    def raise_sequence(self, at_least: int) -> int:
        """Move the sequence counter so the next :meth:`next_sequence` is ≥ ``at_least``
        (never backwards). The relay asks for this when it saw this device's event ids come
        again with other content — the device's state was lost (issue 15). Returns the
        counter's value.

        Raises:
            QueueError: the database failed.
        """
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            (value,) = conn.execute("UPDATE counters SET value = MAX(value, ?) WHERE name = 'sequence' "
                                    "RETURNING value", (int(at_least) - 1,)).fetchone()
            conn.execute("COMMIT")
            return int(value)

    def put(self, event_id: str, kind: str, payload: bytes, *, priority: int,
            now: float | None = None) -> bool:
        """Store an event durably (committed and fsync-ed when this returns).

        ``now`` (wall seconds, default ``time.time()``) becomes ``created_at``. A duplicate
        ``event_id`` is a no-op (the stored event is kept as it was). Returns True if stored
        now, False if it was already there.

        Raises:
            TypeError / ValueError: bad argument types / empty id.
            QueueError: the database failed (disk full, I/O error, closed).
        """
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("event_id must be a non-empty string")
        if not isinstance(kind, str):
            raise TypeError("kind must be a string")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError("payload must be bytes")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError("priority must be an int")
        created = time.time() if now is None else float(now)
        with self._db() as conn:
            cur = conn.execute(
                "INSERT INTO events (id, kind, payload, priority, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (event_id, kind, bytes(payload), priority, created))
            return cur.rowcount == 1

    def due(self, now: float, resend_after_s: float, limit: int = 50) -> list[QueuedEvent]:
        """Events to send now: never attempted, or last attempted ``resend_after_s`` seconds
        or more before ``now`` (or "in the future": the clock was set back). Alarms first
        (lower priority value), then first queued. At most ``limit``."""
        with self._db() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE last_attempt_at IS NULL "
                "OR last_attempt_at <= ? OR last_attempt_at > ? "
                "ORDER BY priority, pos LIMIT ?",
                (now - resend_after_s, now, limit)).fetchall()
        return [_row(r) for r in rows]

    def mark_attempt(self, event_id: str, now: float) -> bool:
        """Record a send attempt at ``now`` (attempts += 1). Returns whether the event exists."""
        with self._db() as conn:
            cur = conn.execute("UPDATE events SET attempts = attempts + 1, last_attempt_at = ? "
                               "WHERE id = ?", (now, event_id))
            return cur.rowcount == 1

    def ack(self, event_id: str) -> bool:
        """The relay has it (``received``): delete. Returns whether it was still queued, so a
        repeated ack is harmless."""
        with self._db() as conn:
            return conn.execute("DELETE FROM events WHERE id = ?", (event_id,)).rowcount == 1

    def get(self, event_id: str) -> QueuedEvent | None:
        with self._db() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?",
                               (event_id,)).fetchone()
        return None if row is None else _row(row)

    def depth(self) -> int:
        """Number of unacknowledged events (reported in alive messages)."""
        with self._db() as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def oldest_unacked_age(self, now: float) -> float | None:
        """Seconds since the first-queued unacknowledged event was created (never negative);
        None when the queue is empty."""
        with self._db() as conn:
            row = conn.execute("SELECT created_at FROM events ORDER BY pos LIMIT 1").fetchone()
        return None if row is None else max(0.0, now - float(row[0]))

    def pending(self) -> list[QueuedEvent]:
        """All unacknowledged events, in send order."""
        with self._db() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY priority, pos"
                                ).fetchall()
        return [_row(r) for r in rows]

    # ------------------------------------------------------------------ device state

    def get_state(self, name: str, default: object = None) -> object:
        """A named JSON value of the device state (``default`` when unset)."""
        with self._db() as conn:
            row = conn.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_state(self, name: str, value: object) -> None:
        """Store (committed, fsync-ed) a named JSON-serialisable value; None deletes it."""
        with self._db() as conn:
            if value is None:
                conn.execute("DELETE FROM state WHERE name = ?", (name,))
            else:
                conn.execute("INSERT INTO state (name, value) VALUES (?, ?) ON CONFLICT (name) "
                             "DO UPDATE SET value = excluded.value", (name, json.dumps(value)))

    def put_with_state(self, event_id: str, kind: str, payload: bytes, *, priority: int,
                       state: dict[str, object], now: float | None = None) -> bool:
        """:meth:`put` and :meth:`set_state` for every item of ``state`` in one transaction:
        both are on disk, or neither (e.g. a check-in start and the running check-in)."""
        created = time.time() if now is None else float(now)
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT INTO events (id, kind, payload, priority, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (event_id, kind, bytes(payload), priority, created))
            for name, value in state.items():
                if value is None:
                    conn.execute("DELETE FROM state WHERE name = ?", (name,))
                else:
                    conn.execute("INSERT INTO state (name, value) VALUES (?, ?) ON CONFLICT "
                                 "(name) DO UPDATE SET value = excluded.value",
                                 (name, json.dumps(value)))
            conn.execute("COMMIT")
            return cur.rowcount == 1

    # ------------------------------------------------------------------ SMS fallback: device/queue_sms.py

    def close(self) -> None:
        """Close the database (idempotent); later calls raise :class:`QueueError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> EventQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _salvage_sequence(path: Path) -> int:
    """Best effort: the sequence counter from a damaged database, 0 if unreadable."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return 0
    try:
        row = conn.execute("SELECT value FROM counters WHERE name = 'sequence'").fetchone()
        return int(row[0]) if row and isinstance(row[0], int) else 0
    except sqlite3.Error:
        return 0
    finally:
        conn.close()
