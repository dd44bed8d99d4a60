"""Per-device dispatch order (SPEC §3): an ARC sees an alarm before its cancel or restore,
even when several dispatch workers run and the first attempt of the alarm fails."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from protocol.messages import Event
from protocol.sia import decode_frame, wrap_frame
from relay.arc import ArcClient, ArcReceiver
from relay.dispatch import Dispatcher
from relay.store import DeviceEntry, Store

pytestmark = pytest.mark.integration


class FlakyArc:
    """A SIA DC-09 receiver that drops the connection of the first frame it gets (no reply),
    then ACKs everything; records (code, qualifier) in arrival order of the ACKed frames."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple[str, int]] = []
        self.dropped = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while not data.endswith(b"\r"):
                chunk = conn.recv(1024)
                if not chunk:
                    return
                data += chunk
            frame = decode_frame(data)
            with self._lock:
                if self.dropped == 0:
                    self.dropped += 1
                    return  # first frame: connection closed, no reply
                cid = frame.contact_id()
                self.accepted.append((f"{cid.code:03d}", cid.qualifier))
            ack = f'"ACK"{frame.sequence:04d}R{frame.receiver or "1"}L{frame.line}#{frame.account}[]'
            conn.sendall(wrap_frame(ack))

    def close(self) -> None:
        self.sock.close()


def test_restore_never_overtakes_its_alarm(redis_server, wait_until) -> None:
    store = Store.from_url(redis_server.url)
    store.register(DeviceEntry("lw-0001", "1234AB", 17, "Anna", "Site"))
    arc = FlakyArc()
    client = ArcClient([ArcReceiver("flaky", "127.0.0.1", arc.port, timeout_s=1.0)], store, attempts_per_receiver=3, backoff_s=0.4)
    dispatcher = Dispatcher(store, client, lambda dev, ack: None, name="t", workers=4)
    now = time.time()
    for seq, kind in ((1, "low_battery"), (2, "battery_restore")):
        assert store.store_event(Event("lw-0001", seq, kind, now, data={"battery_pct": 9 if seq == 1 else 60}))
    dispatcher.start()
    try:
        assert wait_until(lambda: len(arc.accepted) == 2, 20), arc.accepted
    finally:
        dispatcher.stop()
        arc.close()
    assert arc.dropped == 1
    assert arc.accepted == [("302", 1), ("302", 3)]  # alarm first, then its restore
    assert store.order_head("lw-0001") is None  # nothing left waiting


def _held_by_relay_a(store: Store, older: Event, later: Event) -> None:
    """Store ``older``; relay "a" (alive: its lease key exists) reads its dispatch job and
    leases the event, as a relay in its ARC back-off does; then store ``later``."""
    from relay.lease import LEASES, lease_key

    store.ensure_group()
    store.register(DeviceEntry("lw-0001", "1234AB", 17, "Anna", "Site"))
    assert store.store_event(older)
    store.r.sadd(LEASES, "a")
    store.r.set(lease_key("a"), "1", px=300_000)
    assert [eid for _, eid in store.next_jobs("a-0", block_ms=100, count=1)] == [older.id]
    assert store.lease_event(older.id, "a-0", 300) == "ok"
    assert store.store_event(later)


def test_a_later_alarm_does_not_wait_for_an_older_one_whose_relay_died(redis_server, wait_until) -> None:
    """Issue 15 (seen in a fresh-clone run of test_fault_takeover): relay A holds the device's
    older alarm (its dispatch lease runs for reclaim_idle_s) and is killed -9 in its back-off;
    relay B's only worker is already waiting for that alarm's turn. B must not sit out the
    whole order wait: once A's relay lease (3 s) is gone, B sends the later alarm and then,
    free again, takes A's job over and sends the older one too."""
    from labstack.demo.local_arc import LocalArc
    from labstack.servers import free_port
    from relay.lease import lease_key

    store = Store.from_url(redis_server.url)
    now = time.time()
    older, later = Event("lw-0001", 1, "panic", now), Event("lw-0001", 2, "panic", now + 1)
    _held_by_relay_a(store, older, later)
    port = free_port()
    with LocalArc("1234AB", port) as arc:
        client = ArcClient([ArcReceiver("arc", "127.0.0.1", port, timeout_s=10.0, max_xdata_blocks=1)], store)
        b = Dispatcher(store, client, lambda dev, ack: None, name="b", workers=1)
        b.ORDER_WAIT_S = 120.0  # far beyond this test's waits: only the dead holder may end it
        b.start()
        try:
            time.sleep(1.5)  # b's worker takes the later alarm's job and waits for its turn …
            assert arc.events == []  # … behind a live holder, as it must (SPEC §3 order)
            store.r.delete(lease_key("a"))  # relay "a" is killed -9: its lease lapses
            assert wait_until(lambda: len(arc.events) == 2, 20), arc.events
        finally:
            b.stop()
    assert {store.event(e.id)[1]["arc"] for e in (older, later)} == {"acked"}
    assert store.order_head("lw-0001") is None


def test_a_cancel_never_overtakes_its_alarm_whose_relay_died(redis_server, wait_until) -> None:
    """The shortcut above is for alarms only (found by a hostile trial): a cancel behind its
    alarm, held by a killed relay, waits until the alarm is taken over and ACKed — the ARC sees
    the alarm first (SPEC §3)."""
    from labstack.demo.local_arc import LocalArc
    from labstack.servers import free_port
    from relay.lease import lease_key

    store = Store.from_url(redis_server.url)
    now = time.time()
    alarm = Event("lw-0001", 1, "panic", now)
    cancel = Event("lw-0001", 2, "cancel", now + 1, None, {"cancels": alarm.id})
    _held_by_relay_a(store, alarm, cancel)
    port = free_port()
    with LocalArc("1234AB", port) as arc:
        client = ArcClient([ArcReceiver("arc", "127.0.0.1", port, timeout_s=10.0, max_xdata_blocks=1)], store)
        b = Dispatcher(store, client, lambda dev, ack: None, name="b", workers=2)
        b.ORDER_WAIT_S = 120.0
        b.start()
        try:
            time.sleep(1.0)
            store.r.delete(lease_key("a"))  # relay "a" is killed -9
            assert wait_until(lambda: len(arc.events) == 2, 20), arc.events
        finally:
            b.stop()
    assert [e["code"] for e in arc.events] == ["120", "406"], arc.events
