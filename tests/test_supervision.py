"""Supervision (SPEC §3): lost contact / restore, relay-side check-in timers, low battery,
the outbox that never leaves a stored event undispatched, and relay-raised event ids.

Unit tests run the real Lua scripts on fakeredis and move time by sweeping "in the future";
the integration tests run a relay on real Mosquitto + Redis with pysiaalarm as the ARC.
"""

from __future__ import annotations

import time

import fakeredis
import pytest

from protocol.errors import ValidationError
from protocol.messages import Alive, Event, Position, Status, decode, decode_for_topic, encode
from labstack.demo.stack import LocalArc
from relay.dispatch import contact_id_of
from labstack.servers import free_port
from relay.store import DISPATCH, DeviceEntry, Store, StoreError, SupervisionPolicy, device_key, event_key
from relay.fairshare import ROUTINE_STREAM
from relay.supervision import Supervisor

from .relayrig import ScriptedDevice, arc_codes, register, relay_dict, running_relay

DEV = "lw-0001"


@pytest.fixture
def store() -> Store:
    s = Store(fakeredis.FakeRedis())
    s.supervision = SupervisionPolicy(alive_interval_s=10, missed_alives=3, grace_s=5, checkin_grace_s=5)  # 35 s
    s.register(DeviceEntry(DEV, "1234AB", 17, "Anna Hansen", "Laundry"))
    return s


def _alive(device: str = DEV) -> Alive:
    now = time.time()
    return Alive(device, now, 80, -70, "home", Position(55.1, 12.2, 3.0, now), 1.0, "t", 0)


def _ev(kind: str, seq: int, data: dict | None = None, ts: float | None = None) -> Event:
    return Event(DEV, seq, kind, time.time() if ts is None else ts, None, data or {})


def _jobs(store: Store) -> list[str]:
    """Every dispatch job's event id, urgent and routine stream (issue 15), in storing order."""
    queued = {f[b"id"].decode() for s in (DISPATCH, ROUTINE_STREAM) for _, f in store.r.xrange(s)}
    logged = [f[b"id"].decode() for _, f in store.r.xrange("lw:events")]
    return [eid for eid in logged if eid in queued]


def _kinds_queued(store: Store) -> list[str]:
    out = []
    for eid in _jobs(store):
        rec = store.event(eid)
        out.append(rec[0].kind if rec else "?")
    return out


# --- lost contact -------------------------------------------------------------------------


def test_lost_contact_is_raised_once_by_two_sweepers_with_position_and_deadline(store: Store) -> None:
    store.store_event(_ev("shift_start", 1))
    store.update_alive(_alive())
    heard = float(store.supervision_state(DEV)["heard"])
    a, b = Supervisor(store, workers=1), Supervisor(store, workers=1)
    a.sweep_once(heard + 30)
    assert _kinds_queued(store) == ["shift_start"]  # not yet due
    later = heard + 36
    a.sweep_once(later)
    b.sweep_once(later)
    a.sweep_once(later + 10)
    assert _kinds_queued(store) == ["shift_start", "lost_contact"]
    ev, rec = store.event(f"{DEV}:r1")
    assert (ev.kind, ev.origin, ev.id, rec["arc"], rec["queued"]) == ("lost_contact", "relay", f"{DEV}:r1", "pending", "1")
    assert ev.position is not None and ev.position.lat == 55.1
    assert ev.data["deadline"] == pytest.approx(heard + 35, abs=0.01)
    assert a.counts["raised:lost_contact"] + b.counts["raised:lost_contact"] == 1
    assert store.supervision_state(DEV)["lost"] == "1"


def test_restore_when_heard_again_once(store: Store) -> None:
    store.store_event(_ev("shift_start", 1))
    Supervisor(store, workers=1).sweep_once(time.time() + 60)
    store.update_alive(_alive())
    store.update_alive(_alive())
    assert _kinds_queued(store) == ["shift_start", "lost_contact", "contact_restore"]
    restore, _ = store.event(f"{DEV}:r2")
    assert restore.data["restores"] == f"{DEV}:r1"
    cid = contact_id_of(restore, 17, 1)
    assert (cid.code, cid.qualifier, cid.zone) == (356, 3, 17)
    # supervised again: silence after the restore is a new lost contact
    Supervisor(store, workers=1).sweep_once(time.time() + 60)
    assert _kinds_queued(store)[-1] == "lost_contact"


def test_an_event_also_counts_as_heard_and_restores(store: Store) -> None:
    store.store_event(_ev("shift_start", 1))
    Supervisor(store, workers=1).sweep_once(time.time() + 60)
    store.store_event(_ev("test", 2))
    assert _kinds_queued(store) == ["shift_start", "lost_contact", "test", "contact_restore"]


@pytest.mark.parametrize(
    ("events", "override", "raised"),
    [
        ([], {}, False),  # never on shift (default mode on_shift)
        (["shift_start", "shift_end"], {}, False),  # shift over
        ([], {"mode": "always"}, True),
        (["shift_start"], {"mode": "off"}, False),
    ],
    ids=["off-shift", "shift-ended", "always", "mode-off"],
)
def test_lost_contact_only_while_supervised(store: Store, events: list[str], override: dict, raised: bool) -> None:
    if override:
        store.set_supervision(DEV, **override)
    for i, kind in enumerate(events, 1):
        store.store_event(_ev(kind, i))
    store.update_alive(_alive())
    Supervisor(store, workers=1).sweep_once(time.time() + 100)
    assert ("lost_contact" in _kinds_queued(store)) is raised


def test_per_device_interval_override(store: Store) -> None:
    store.set_supervision(DEV, alive_interval_s=1, missed_alives=2, grace_s=0.5, mode="always")
    store.update_alive(_alive())
    heard = float(store.supervision_state(DEV)["heard"])
    Supervisor(store, workers=1).sweep_once(heard + 2.4)
    assert "lost_contact" not in _kinds_queued(store)
    Supervisor(store, workers=1).sweep_once(heard + 2.6)
    assert "lost_contact" in _kinds_queued(store)
    with pytest.raises(ValueError):
        store.set_supervision(DEV, mode="sometimes")


def test_offline_status_alone_is_no_alarm_and_does_not_count_as_heard(store: Store) -> None:
    store.store_event(_ev("shift_start", 1))
    heard = float(store.supervision_state(DEV)["heard"])
    store.update_status(Status(DEV, "offline", time.time()))
    Supervisor(store, workers=1).sweep_once(heard + 30)
    assert _kinds_queued(store) == ["shift_start"]
    store.update_status(Status(DEV, "online", time.time()))
    Supervisor(store, workers=1).sweep_once(heard + 36)  # the retained `online` did not move the deadline
    assert _kinds_queued(store) == ["shift_start", "lost_contact"]


# --- check-in -----------------------------------------------------------------------------


def test_relay_raises_missed_checkin_when_the_device_stays_silent(store: Store) -> None:
    start = _ev("checkin_start", 1, {"duration_s": 60})
    store.store_event(start)
    t0 = time.time()
    Supervisor(store, workers=1).sweep_once(t0 + 64)  # 60 s + 5 s grace not yet over
    assert _kinds_queued(store) == ["checkin_start"]
    Supervisor(store, workers=1).sweep_once(t0 + 66)
    Supervisor(store, workers=1).sweep_once(t0 + 67)
    assert _kinds_queued(store) == ["checkin_start", "missed_checkin"]
    ev, _ = store.event(f"{DEV}:r1")
    assert ev.origin == "relay" and ev.data["checkin"] == start.id
    assert (contact_id_of(ev, 17, 1).code, contact_id_of(ev, 17, 1).qualifier) == (102, 1)


def test_checkin_done_disarms_the_relay_timer(store: Store) -> None:
    store.store_event(_ev("checkin_start", 1, {"duration_s": 60}))
    store.store_event(_ev("checkin_done", 2))
    Supervisor(store, workers=1).sweep_once(time.time() + 100)
    assert _kinds_queued(store) == ["checkin_start", "checkin_done"]


def test_device_missed_checkin_first_means_the_relay_raises_none(store: Store) -> None:
    store.store_event(_ev("checkin_start", 1, {"duration_s": 60}))
    store.store_event(_ev("missed_checkin", 2))
    Supervisor(store, workers=1).sweep_once(time.time() + 100)
    assert _kinds_queued(store) == ["checkin_start", "missed_checkin"]
    assert store.event(f"{DEV}:2")[1]["arc"] == "pending"  # the device's own goes to the ARC


def test_device_missed_checkin_after_the_relay_raised_is_logged_not_dispatched(store: Store) -> None:
    store.store_event(_ev("checkin_start", 1, {"duration_s": 60}))
    Supervisor(store, workers=1).sweep_once(time.time() + 70)
    assert store.store_event(_ev("missed_checkin", 2)) is True
    assert _kinds_queued(store) == ["checkin_start", "missed_checkin"]  # one 102: the relay's
    _, rec = store.event(f"{DEV}:2")
    assert (rec["arc"], rec["duplicate_of"]) == ("suppressed", f"{DEV}:r1")
    assert [e["kind"] for e in store.event_log()] == ["checkin_start", "missed_checkin", "missed_checkin"]


def test_checkin_start_arriving_after_the_devices_missed_checkin_is_not_armed(store: Store) -> None:
    """The device's queue sends alarms first: its missed_checkin can overtake the start."""
    t = time.time() - 100
    store.store_event(_ev("missed_checkin", 2, ts=t + 60))
    store.store_event(_ev("checkin_start", 1, {"duration_s": 60}, ts=t))
    Supervisor(store, workers=1).sweep_once(time.time() + 100)
    assert _kinds_queued(store) == ["missed_checkin", "checkin_start"]


# --- low battery mapping ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "code", "qualifier"),
    [("low_battery", 302, 1), ("battery_restore", 302, 3), ("lost_contact", 356, 1), ("contact_restore", 356, 3),
     ("missed_checkin", 102, 1)],
)
def test_contact_id_of_supervision_kinds(kind: str, code: int, qualifier: int) -> None:
    origin = "relay" if kind in ("lost_contact", "contact_restore") else "device"
    cid = contact_id_of(Event(DEV, 1, kind, 1.0, origin=origin), 17, 1)
    assert (cid.code, cid.qualifier, cid.zone) == (code, qualifier, 17)


# --- outbox: a stored event is never left undispatched ------------------------------------


def test_event_stored_by_a_relay_that_died_before_queueing_is_queued_by_a_sweep(store: Store) -> None:
    ev = _ev("panic", 5)
    store.supervision = SupervisionPolicy(requeue_after_s=2)
    # The relay ran the store script and died: no log entry, no dispatch job, no index write.
    keys = [event_key(ev.id), device_key(DEV, "state"), device_key(DEV, "sup"), device_key(DEV, "unqueued")]
    store._store_event(keys=keys, args=[encode(ev), f"{time.time():.3f}", ev.id, DEV, "panic", device_key(DEV, "event:"),
                                        60, 3, 5, "on_shift", 5, f"{ev.ts:.3f}", 0, 3600])  # fmt: skip
    store.r.zadd("lw:deadlines", {f"q:{DEV}": time.time() + 2})  # written before the script
    assert _jobs(store) == []
    Supervisor(store, workers=1).sweep_once(time.time() + 1)
    assert _jobs(store) == []  # its relay may still be queueing it
    sup = Supervisor(store, workers=1)
    sup.sweep_once(time.time() + 3)
    assert _jobs(store) == [ev.id] and sup.counts["requeued"] == 1
    Supervisor(store, workers=1).sweep_once(time.time() + 30)
    assert _jobs(store) == [ev.id]  # once


def test_resend_of_an_unqueued_event_queues_it(store: Store) -> None:
    ev = _ev("panic", 5)
    real = store._enqueue
    calls = []

    def dies_once(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise StoreError("redis unavailable: simulated")
        return real(*a, **kw)

    store._enqueue = dies_once  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        store.store_event(ev)  # no `received` ack goes out: the device resends
    assert store.store_event(ev) is False  # a duplicate …
    assert _jobs(store) == [ev.id]  # … that completed the outbox step


def test_relay_raised_alarm_survives_a_sweeper_dying_before_queueing(store: Store) -> None:
    store.supervision = SupervisionPolicy(alive_interval_s=10, missed_alives=3, grace_s=5, requeue_after_s=2)
    store.store_event(_ev("shift_start", 1))
    from relay.sweep_batch import BatchSweep

    real = BatchSweep._enqueue_many
    BatchSweep._enqueue_many = lambda *a, **kw: (_ for _ in ()).throw(StoreError("simulated"))  # type: ignore[method-assign]
    t = time.time() + 40
    try:
        with pytest.raises(StoreError):
            Supervisor(store, workers=1).sweep_once(t)
    finally:
        BatchSweep._enqueue_many = real  # type: ignore[method-assign]
    Supervisor(store, workers=1).sweep_once(t + 3)  # raised already: not again, but queued now
    Supervisor(store, workers=1).sweep_once(t + 10)  # the claim's lease is over: swept again
    assert _kinds_queued(store) == ["shift_start", "lost_contact"]
    assert store.supervision_state(DEV)["rseq"] == "1"


# --- relay-raised ids and the wire --------------------------------------------------------


def test_relay_raised_events_have_their_own_ids_and_never_come_from_a_device() -> None:
    ev = Event(DEV, 1, "lost_contact", 1.0, None, {"deadline": 1.0}, origin="relay")
    assert ev.id == f"{DEV}:r1" != Event(DEV, 1, "panic", 1.0).id
    assert decode(encode(ev)) == ev and ev.is_alarm
    assert b"origin" not in encode(Event(DEV, 1, "panic", 1.0))  # device events: as before
    with pytest.raises(ValidationError, match="origin"):
        decode_for_topic(f"lonewatch/{DEV}/event", encode(ev))
    with pytest.raises(ValidationError, match="kind"):
        decode(encode(Event(DEV, 1, "panic", 1.0)).replace(b'"panic"', b'"lost_contact"'))


# --- integration: real relay, broker, Redis, ARC ------------------------------------------


@pytest.mark.integration
def test_lost_contact_and_restore_reach_the_arc(mosquitto, redis_server, broker_users, wait_until) -> None:
    port = free_port()
    register(redis_server.url, (DEV, 17))
    sup = {"alive_interval_s": 1, "missed_alives": 1, "grace_s": 0.5}
    cfg = relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, port, supervision=sup)
    with LocalArc("1234AB", port) as arc, running_relay(cfg) as relay:
        dev = ScriptedDevice(DEV, mosquitto.port, broker_users[DEV])
        try:
            start = dev.event("shift_start")
            assert dev.wait_ack(start.id, "received")
            dev.alive()
            assert wait_until(lambda: ("356", 1, 17) in arc_codes(arc), 10), arc_codes(arc)
            state = relay.store.supervision_state(DEV)
            # pysiaalarm has the frame once it ACKed; the relay writes "acked" a moment later.
            assert wait_until(lambda: relay.store.event(state["lost_event"])[1]["arc"] == "acked", 10)
            lost, rec = relay.store.event(state["lost_event"])
            print(f"lost contact raised {lost.data['late_s']:.3f} s after the deadline")
            assert lost.origin == "relay"
            assert not any(a.id == lost.id for a in dev.acks)  # the device is not told
            dev.alive()
            assert wait_until(lambda: ("356", 3, 17) in arc_codes(arc), 10), arc_codes(arc)
            # low battery and its restore (SPEC §3 table: 302 q1 / q3)
            dev.event("low_battery", {"battery_pct": 9})
            dev.event("battery_restore", {"battery_pct": 60})
            dev.event("shift_end")
            assert wait_until(lambda: ("302", 3, 17) in arc_codes(arc), 10), arc_codes(arc)
            codes = arc_codes(arc)
            assert codes.count(("356", 1, 17)) == 1 and codes.count(("302", 1, 17)) == 1
            assert codes.index(("302", 1, 17)) < codes.index(("302", 3, 17))
        finally:
            dev.close()


@pytest.mark.integration
def test_missed_checkin_reaches_the_arc_once_when_the_device_is_destroyed(mosquitto, redis_server, broker_users, wait_until) -> None:
    port = free_port()
    register(redis_server.url, (DEV, 17))
    cfg = relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, port)
    with LocalArc("1234AB", port) as arc, running_relay(cfg) as relay:
        dev = ScriptedDevice(DEV, mosquitto.port, broker_users[DEV])
        start = dev.event("checkin_start", {"duration_s": 60})
        assert dev.wait_ack(start.id, "received")
        dev.close()  # destroyed: it will never say checkin_done nor missed_checkin
        relay.supervisor.clock = lambda: time.time() + 66  # 60 s + 5 s grace have passed
        assert wait_until(lambda: ("102", 1, 17) in arc_codes(arc), 10), arc_codes(arc)
        time.sleep(0.5)  # sweeps go on: still one
        assert arc_codes(arc).count(("102", 1, 17)) == 1


@pytest.mark.integration
def test_demo_lost_contact_scenario() -> None:
    import json

    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "demo", "--scenario", "lost-contact", "--json"],
                          capture_output=True, text=True, timeout=110)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    acks = [(s["code"], s["qualifier"]) for s in steps if s["step"] == "arc_ack" and s["kind"] in ("lost_contact", "contact_restore")]
    assert acks == [("356", 1), ("356", 3)]
    [lag] = [s for s in steps if s["step"] == "lost_contact_lag"]
    print(f"lost-contact demo: ARC ACK {lag['arc_ack_after_deadline_s']} s after the deadline")
