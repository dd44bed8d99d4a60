"""The durable on-device event queue (SPEC §2 "Delivery guarantees"): survives restarts,
power cuts (SIGKILL), never reuses a sequence, alarms first, resend timing, corrupt files."""

from __future__ import annotations

import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from device.queue import (
    PRIORITY_ALARM,
    PRIORITY_EVENT,
    EventQueue,
    QueueCorruptError,
    QueuedEvent,
    QueueError,
)
from protocol.errors import LonewatchError


@pytest.fixture
def qpath(tmp_path: Path) -> Path:
    return tmp_path / "state" / "queue.db"


@pytest.fixture
def q(qpath: Path):
    queue = EventQueue(qpath)
    yield queue
    queue.close()


def test_put_get_and_persistence_across_reopen(qpath):
    q = EventQueue(qpath)
    assert q.put("lw-0001:1", "panic", b'{"kind":"panic"}', priority=PRIORITY_ALARM, now=1000.0)
    q.close()
    q = EventQueue(qpath)
    assert q.get("lw-0001:1") == QueuedEvent("lw-0001:1", "panic", b'{"kind":"panic"}',
                                             PRIORITY_ALARM, 1000.0, 0, None)
    assert q.depth() == 1 and q.get("nope") is None
    q.close()


def test_files_are_private(qpath, q):
    q.put("e1", "test", b"x", priority=PRIORITY_EVENT)
    assert stat.S_IMODE(qpath.stat().st_mode) == 0o600
    assert stat.S_IMODE(qpath.parent.stat().st_mode) == 0o700
    for side in (Path(f"{qpath}-wal"), Path(f"{qpath}-shm")):
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) == 0o600


def test_wal_and_full_sync(q):
    with q._db() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_sequence_is_monotonic_and_survives_restart(qpath):
    q = EventQueue(qpath, sequence_floor=0)
    seen = [q.next_sequence() for _ in range(5)]
    assert seen == [1, 2, 3, 4, 5]
    q.close()
    q = EventQueue(qpath)
    assert q.next_sequence() == 6
    q.close()
    q = EventQueue(qpath, sequence_floor=3)  # a lower floor never moves the counter back
    assert q.next_sequence() == 7
    q.close()


def test_new_database_starts_sequence_at_wall_clock(qpath):
    before = int(time.time())
    with EventQueue(qpath) as q:
        assert q.next_sequence() > before


def test_sequence_unique_across_threads(q):
    out: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        got = [q.next_sequence() for _ in range(50)]
        with lock:
            out.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 200 and len(set(out)) == 200


_KILL_SEQ = """
import sys, time
from device.queue import EventQueue
q = EventQueue(sys.argv[1])
for _ in range(3):
    s = q.next_sequence()
print(s, flush=True)
time.sleep(60)
"""


def test_sequence_never_repeats_after_sigkill(qpath):
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SEQ, str(qpath)],
                            stdout=subprocess.PIPE, text=True)
    try:
        last = int(proc.stdout.readline())  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with EventQueue(qpath) as q:
        assert q.next_sequence() == last + 1


_KILL_PUT = """
import sys, time
from device.queue import EventQueue, PRIORITY_ALARM
q = EventQueue(sys.argv[1])
q.put("lw-0001:42", "panic", b"payload-42", priority=PRIORITY_ALARM)
print("put", flush=True)
time.sleep(60)
"""


def test_event_survives_sigkill_right_after_put(qpath):
    proc = subprocess.Popen([sys.executable, "-c", _KILL_PUT, str(qpath)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "put"  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    with EventQueue(qpath) as q:
        ev = q.get("lw-0001:42")
        assert ev is not None and ev.payload == b"payload-42" and ev.kind == "panic"


def test_due_orders_alarms_first_then_oldest(q):
    q.put("e1", "checkin_start", b"1", priority=PRIORITY_EVENT, now=100.0)
    q.put("e2", "panic", b"2", priority=PRIORITY_ALARM, now=101.0)
    q.put("e3", "shift_start", b"3", priority=PRIORITY_EVENT, now=99.0)  # clock set back
    q.put("e4", "cancel", b"4", priority=PRIORITY_ALARM, now=102.0)
    assert [e.id for e in q.due(now=200.0, resend_after_s=10)] == ["e2", "e4", "e1", "e3"]
    assert [e.id for e in q.pending()] == ["e2", "e4", "e1", "e3"]
    assert [e.id for e in q.due(now=200.0, resend_after_s=10, limit=2)] == ["e2", "e4"]


def test_resend_timing_follows_now(q):
    q.put("e1", "panic", b"1", priority=PRIORITY_ALARM, now=1000.0)
    q.put("e2", "test", b"2", priority=PRIORITY_EVENT, now=1000.0)
    assert q.mark_attempt("e1", 1000.0)
    assert [e.id for e in q.due(1000.0, 10.0)] == ["e2"]  # e1 just tried
    assert q.mark_attempt("e2", 1005.0)
    assert q.due(1009.9, 10.0) == []
    assert [e.id for e in q.due(1010.0, 10.0)] == ["e1"]
    assert [e.id for e in q.due(1015.0, 10.0)] == ["e1", "e2"]
    q.mark_attempt("e1", 1010.0)
    ev = q.get("e1")
    assert ev is not None and ev.attempts == 2 and ev.last_attempt_at == 1010.0
    # the clock stepped back past the last attempt: resend rather than wait for hours
    assert [e.id for e in q.due(500.0, 10.0)] == ["e1", "e2"]
    assert q.mark_attempt("gone", 1.0) is False


def test_ack_is_idempotent(q):
    q.put("e1", "panic", b"1", priority=PRIORITY_ALARM)
    assert q.ack("e1") is True
    assert q.ack("e1") is False
    assert q.ack("never") is False
    assert q.depth() == 0 and q.get("e1") is None


def test_duplicate_put_is_a_noop(q):
    assert q.put("e1", "panic", b"first", priority=PRIORITY_ALARM, now=1.0) is True
    q.mark_attempt("e1", 2.0)
    assert q.put("e1", "panic", b"second", priority=PRIORITY_EVENT, now=3.0) is False
    ev = q.get("e1")
    assert ev == QueuedEvent("e1", "panic", b"first", PRIORITY_ALARM, 1.0, 1, 2.0)
    assert q.depth() == 1


def test_acked_event_is_not_resurrected_by_order(q):
    q.put("e1", "panic", b"1", priority=PRIORITY_ALARM)
    q.ack("e1")
    q.put("e2", "panic", b"2", priority=PRIORITY_ALARM)
    assert [e.id for e in q.pending()] == ["e2"]


def test_depth_and_oldest_age(q):
    assert q.depth() == 0 and q.oldest_unacked_age(100.0) is None
    q.put("e1", "test", b"", priority=PRIORITY_EVENT, now=50.0)
    q.put("e2", "panic", b"", priority=PRIORITY_ALARM, now=90.0)
    assert q.depth() == 2
    assert q.oldest_unacked_age(100.0) == 50.0
    assert q.oldest_unacked_age(10.0) == 0.0  # never negative
    q.ack("e1")
    assert q.oldest_unacked_age(100.0) == 10.0


def test_put_rejects_bad_arguments(q):
    with pytest.raises(ValueError):
        q.put("", "panic", b"", priority=0)
    with pytest.raises(TypeError):
        q.put("e", "panic", "not bytes", priority=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        q.put("e", "panic", b"", priority=True)
    assert q.put("e", "panic", bytearray(b"ok"), priority=0)
    assert q.get("e").payload == b"ok"  # type: ignore[union-attr]


def test_closed_queue_raises(qpath):
    q = EventQueue(qpath)
    q.close()
    q.close()  # idempotent
    with pytest.raises(QueueError, match="closed"):
        q.depth()


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an sqlite database, it is garbage\n" * 100)


def test_corrupt_file_is_a_clear_error_and_left_alone(qpath):
    _corrupt(qpath)
    before = qpath.read_bytes()
    with pytest.raises(QueueCorruptError) as info:
        EventQueue(qpath)
    err = info.value
    assert isinstance(err, QueueError) and isinstance(err, LonewatchError)
    assert str(qpath) in str(err) and err.path == str(qpath)
    assert qpath.read_bytes() == before
    assert list(qpath.parent.glob("*.corrupt-*")) == []


def test_open_or_recover_moves_corrupt_file_aside(qpath):
    _corrupt(qpath)
    before = qpath.read_bytes()
    q = EventQueue.open_or_recover(qpath)
    try:
        assert q.recovered_from is not None
        assert q.recovered_from.name.startswith("queue.db.corrupt-")
        assert q.recovered_from.read_bytes() == before
        assert q.depth() == 0
        q.put("e1", "panic", b"1", priority=PRIORITY_ALARM)
        assert q.next_sequence() > int(time.time()) - 5
    finally:
        q.close()
    # a healthy file is simply opened
    with EventQueue.open_or_recover(qpath) as q2:
        assert q2.recovered_from is None and q2.depth() == 1


def test_recovery_keeps_sequence_above_salvaged_value(qpath):
    future = int(time.time()) + 10_000_000
    with EventQueue(qpath, sequence_floor=future) as q:
        q.put("e1", "panic", b"x" * 5000, priority=PRIORITY_ALARM)
        q.put("e2", "panic", b"y" * 5000, priority=PRIORITY_ALARM)
    # damage the events table's pages, keep the header and the first pages
    conn = sqlite3.connect(qpath)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(qpath.read_bytes())
    assert len(data) > 4 * page_size
    for i in range(3 * page_size, len(data)):
        data[i] = 0xA5
    qpath.write_bytes(bytes(data))
    with pytest.raises(QueueCorruptError):
        EventQueue(qpath)
    with EventQueue.open_or_recover(qpath) as q:
        assert q.recovered_from is not None
        assert q.next_sequence() > future


def test_newer_schema_is_refused(qpath):
    EventQueue(qpath).close()
    conn = sqlite3.connect(qpath)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(QueueError, match="newer firmware") as info:
        EventQueue(qpath)
    assert not isinstance(info.value, QueueCorruptError)
    with pytest.raises(QueueError, match="newer firmware"):
        EventQueue.open_or_recover(qpath)  # not corruption: never moved aside


def test_uncreatable_path_is_a_queue_error(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(QueueError, match="cannot create") as info:
        EventQueue(blocker / "queue.db")
    assert str(blocker / "queue.db") in str(info.value)
