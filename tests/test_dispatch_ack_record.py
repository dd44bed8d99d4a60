"""An ARC ACK whose record in Redis fails (the master SIGKILLed between the ACK and the write,
or before the write reached a replica; issue 14): the dispatcher keeps the ACK and records it
once Redis answers again, so the ARC gets the alarm once. Only a dispatcher stopped before
Redis took the ACK leaves the job pending, and the later resend repeats the DC-09 sequence
number (the receiver discards it as a repeat). Real Redis; a real TCP receiver that ACKs."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from protocol.messages import Event
from protocol.sia import decode_frame, wrap_frame
from relay.arc import ArcClient, ArcReceiver
from relay.dispatch import Dispatcher
from relay.store import DeviceEntry, Store, StoreError

pytestmark = pytest.mark.integration


class AckingArc:
    """A SIA DC-09 receiver that ACKs every frame; records (code, sequence) of each frame."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.frames: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\r"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                if not data.endswith(b"\r"):
                    continue
                frame = decode_frame(data)
                with self._lock:
                    self.frames.append((f"{frame.contact_id().code:03d}", frame.sequence))
                conn.sendall(wrap_frame(f'"ACK"{frame.sequence:04d}R{frame.receiver or "1"}L{frame.line}#{frame.account}[]'))

    def close(self) -> None:
        self.sock.close()


class AckRecordFails(Store):
    """A Store whose first ``failures`` writes of ``arc="acked"`` raise StoreError, as a
    master killed right after the ARC's ACK does (the write never reaches a replica)."""

    def __init__(self, *a, failures: int, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.failures, self.failed = failures, 0

    def mark_event(self, event_id: str, **fields) -> None:  # type: ignore[no-untyped-def]
        if fields.get("arc") == "acked" and self.failed < self.failures:
            self.failed += 1
            raise StoreError("redis unavailable: ConnectionError: connection reset by peer (test)")
        super().mark_event(event_id, **fields)


def _setup(redis_server, failures: int) -> tuple[AckRecordFails, AckingArc, ArcClient, Event]:  # type: ignore[no-untyped-def]
    import redis

    store = AckRecordFails(redis.Redis.from_url(redis_server.url), failures=failures)
    store.register(DeviceEntry("lw-0001", "1234AB", 17, "Anna", "Site"))
    arc = AckingArc()
    client = ArcClient([ArcReceiver("arc", "127.0.0.1", arc.port, timeout_s=2.0)], store, attempts_per_receiver=1)
    ev = Event("lw-0001", 1, "panic", time.time())
    assert store.store_event(ev)
    return store, arc, client, ev


def test_ack_recorded_after_redis_returns_alarm_sent_once(redis_server, wait_until) -> None:  # type: ignore[no-untyped-def]
    store, arc, client, ev = _setup(redis_server, failures=5)
    acks: list[str] = []
    dispatcher = Dispatcher(store, client, lambda dev, ack: acks.append(ack.stage), name="t", workers=2, reclaim_idle_s=0.3)
    dispatcher.start()
    try:
        assert wait_until(lambda: "arc" in acks, 20), acks
        assert wait_until(lambda: store.dispatch_backlog()["pending"] == 0, 10)
        time.sleep(1.0)  # a second frame (reclaimed job, sibling worker) would come now
    finally:
        dispatcher.stop()
        arc.close()
    assert store.failed == 5  # the ACK's record failed five times, then went through
    assert arc.frames == [("120", arc.frames[0][1])]  # the ARC got the alarm once
    assert store.event(ev.id)[1]["arc"] == "acked"  # type: ignore[index]


def test_stopped_before_ack_recorded_resend_repeats_the_sequence(redis_server, wait_until) -> None:  # type: ignore[no-untyped-def]
    store, arc, client, ev = _setup(redis_server, failures=10**6)
    first = Dispatcher(store, client, lambda dev, ack: None, name="a", workers=1, reclaim_idle_s=0.3)
    first.start()
    try:
        assert wait_until(lambda: len(arc.frames) == 1 and store.failed > 0, 20), arc.frames
    finally:
        first.stop()  # the relay goes away before Redis took the ACK: the job stays pending
    assert store.event(ev.id)[1]["arc"] != "acked"  # type: ignore[index]
    assert store.dispatch_backlog()["pending"] == 1
    store.failures = 0  # Redis is back
    acks: list[str] = []
    second = Dispatcher(store, client, lambda dev, ack: acks.append(ack.stage), name="b", workers=1, reclaim_idle_s=0.3)
    second.start()
    try:
        assert wait_until(lambda: "arc" in acks, 20), acks
    finally:
        second.stop()
        arc.close()
    seq = int(store.event(ev.id)[1]["arc_seq"])  # type: ignore[index]
    assert arc.frames == [("120", seq), ("120", seq)]  # the repeat carries the same DC-09 sequence
    assert store.event(ev.id)[1]["arc"] == "acked"  # type: ignore[index]
