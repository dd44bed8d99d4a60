"""Issue 15 "same id, different content": never dropped, never silent (relay/conflicts.py).

The attack from the issue: a ``silent_panic`` that reuses a stored event's id was acked as a
duplicate and reached nobody. Now the relay compares content: a conflicting alarm is
delivered under a derived id, the device is told (``received`` ack with ``conflict`` and
``next_seq``), an operator-visible fault names the device, and the copy is dead-lettered.
Device side: the queue's sequence moves past the relay's high-water mark.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from device.queue import EventQueue
from labstack.demo.stack import LocalArc
from labstack.servers import free_port
from protocol.messages import Event, encode
from relay.conflicts import DERIVED_BASE, derived_seq
from relay.faults import ID_REUSED, faults
from relay.pipeline import Pipeline
from relay.status_report import collect
from relay.store import DeviceEntry, Store

from .relayrig import ACCOUNT, ScriptedDevice, arc_codes, register, relay_dict, running_relay

A = "lw-0001"
T0 = 1_796_000_000.0
TOPIC = f"lonewatch/{A}/event"


@pytest.fixture
def rig(redis_server):
    store = Store.from_url(redis_server.url)
    store.register(DeviceEntry(A, "1234AB", 1, "Anna", "Site"))
    acks: list = []
    return store, Pipeline(store, lambda dev, ack: acks.append(ack)), acks


def test_conflicting_alarm_is_delivered_under_a_derived_id(rig):
    store, pipeline, acks = rig
    for seq in range(1, 8):
        pipeline.handle(TOPIC, encode(Event(A, seq, "test", T0 + seq, data={"source": "doctor"})))
    acks.clear()
    panic = Event(A, 5, "silent_panic", T0 + 100)  # id A:5 again, other content
    handled = pipeline.handle(TOPIC, encode(panic))
    assert handled.outcome == "stored" and handled.event.kind == "silent_panic"
    derived = handled.event
    assert derived.id == f"{A}:{derived_seq(panic)}" and derived.seq >= DERIVED_BASE
    stored, rec = store.event(derived.id)
    assert stored.kind == "silent_panic" and rec["arc"] == "pending"  # queued for dispatch
    assert store.event(f"{A}:5")[0].kind == "test"  # the first version is kept as it was
    (ack,) = acks
    assert (ack.id, ack.stage) == (f"{A}:5", "received")
    assert ack.detail["delivered_as"] == derived.id and ack.detail["next_seq"] == 8
    assert "reused" in store.dead_letters()[-1]["reason"]
    fault = faults(store, A)[ID_REUSED]
    assert "event ids reused: check its state" in fault["text"] and A in fault["text"]
    assert any("event ids reused" in f for f in collect(store)[0].faults)
    # The device resends the same conflicting alarm: same derived id, delivered once.
    again = pipeline.handle(TOPIC, encode(panic))
    assert again.event.id == derived.id
    assert store.r.xlen("lw:dispatch") == 1 and store.r.xlen("lw:dispatch:routine") == 7
    assert faults(store, A)[ID_REUSED]["count"] == 2


def test_conflicting_routine_event_is_dead_lettered_and_the_device_told(rig):
    store, pipeline, acks = rig
    pipeline.handle(TOPIC, encode(Event(A, 3, "panic", T0)))
    acks.clear()
    handled = pipeline.handle(TOPIC, encode(Event(A, 3, "test", T0 + 9, data={"source": "doctor"})))
    assert handled.outcome == "dead_letter" and "not delivered" in handled.reason
    (ack,) = acks
    assert ack.detail["delivered_as"] is None and ack.detail["next_seq"] == 4
    assert ID_REUSED in faults(store, A)


def test_identical_resend_is_not_a_conflict(rig):
    store, pipeline, acks = rig
    raw = encode(Event(A, 3, "panic", T0))
    pipeline.handle(TOPIC, raw)
    assert pipeline.handle(TOPIC, raw).outcome == "duplicate"
    assert faults(store, A) == {} and all("conflict" not in a.detail for a in acks)


def test_device_queue_moves_its_sequence_past_the_relays_mark(tmp_path: Path):
    q = EventQueue(tmp_path / "queue.db")
    try:
        first = q.next_sequence()
        assert q.raise_sequence(first + 100) == first + 99
        assert q.next_sequence() == first + 100
        assert q.raise_sequence(5) == first + 100  # never backwards
        assert q.next_sequence() == first + 101
    finally:
        q.close()


def test_reused_id_alarm_reaches_the_arc_end_to_end(mosquitto, broker_users, redis_server, wait_until):
    """Real broker, relay and ARC (pysiaalarm): a device whose state was lost sends a silent
    panic under an id already used by a test event; the ARC gets the 122 and the device gets
    ``received`` (with the conflict) and ``arc`` (for the derived id)."""
    port = free_port()
    store = register(redis_server.url, (A, 17))
    with LocalArc(ACCOUNT, port) as arc, running_relay(relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, port)):
        dev = ScriptedDevice(A, mosquitto.port, broker_users[A])
        try:
            first = dev.event("test", {"source": "doctor"})
            assert dev.wait_ack(first.id, "received")
            dev.seq = first.seq  # the state loss: the counter is back where it was
            panic = dev.event("silent_panic")
            assert panic.id == first.id
            derived = f"{A}:{derived_seq(panic)}"
            assert dev.wait_ack(derived, "arc", timeout_s=15)
            assert wait_until(lambda: ("122", 1, 17) in arc_codes(arc), 10)  # pysiaalarm records a frame after its ACK
            conflict = [a for a in dev.acks if a.id == panic.id and a.detail.get("conflict")]
            assert conflict and conflict[0].detail["delivered_as"] == derived
            assert ID_REUSED in faults(store, A)
        finally:
            dev.close()
