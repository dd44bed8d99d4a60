"""Relay pipeline on fakeredis (fast unit tests; the integration tests use a real Redis):
validate → dead-letter → dedupe → store → ack ``received``."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from protocol.messages import Alive, Event, Position, Status, encode
from relay.pipeline import Pipeline
from relay.store import DeviceEntry, Store, StoreError


@pytest.fixture
def store() -> Store:
    s = Store(fakeredis.FakeRedis())
    s.register(DeviceEntry("lw-0001", "1234AB", 17, "Anna Hansen", "Laundry"))
    return s


@pytest.fixture
def acks() -> list:
    return []


@pytest.fixture
def pipeline(store: Store, acks: list) -> Pipeline:
    return Pipeline(store, lambda dev, ack: acks.append((dev, ack)))


def _alarm(seq: int = 1, device: str = "lw-0001") -> Event:
    return Event(device, seq, "silent_panic", 1_796_000_000.0, Position(55.1, 12.2, 5.0, 1_796_000_000.0))


def test_new_alarm_is_stored_logged_queued_for_dispatch_and_acked(pipeline: Pipeline, store: Store, acks: list) -> None:
    ev = _alarm()
    handled = pipeline.handle("lonewatch/lw-0001/event", encode(ev))
    assert handled.outcome == "stored"
    stored, rec = store.event(ev.id)
    assert stored == ev and rec["arc"] == "pending"
    assert [e["id"] for e in store.event_log()] == [ev.id]
    assert store.r.xlen("lw:dispatch") == 1
    assert [(d, a.id, a.stage) for d, a in acks] == [("lw-0001", ev.id, "received")]
    assert store.state("lw-0001")["last_event"] == ev.id


def test_resent_event_is_acked_again_but_stored_and_dispatched_once(pipeline: Pipeline, store: Store, acks: list) -> None:
    raw = encode(_alarm())
    assert pipeline.handle("lonewatch/lw-0001/event", raw).outcome == "stored"
    assert pipeline.handle("lonewatch/lw-0001/event", raw).outcome == "duplicate"
    assert store.r.xlen("lw:events") == 1
    assert store.r.xlen("lw:dispatch") == 1
    assert [a.stage for _, a in acks] == ["received", "received"]


def test_resend_after_arc_ack_repeats_the_arc_ack(pipeline: Pipeline, store: Store, acks: list) -> None:
    ev = _alarm()
    pipeline.handle("lonewatch/lw-0001/event", encode(ev))
    store.mark_event(ev.id, arc="acked")
    pipeline.handle("lonewatch/lw-0001/event", encode(ev))
    assert [a.stage for _, a in acks] == ["received", "received", "arc"]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("lonewatch/lw-0001/event", b"\x00\xffgarbage", "invalid: payload is not UTF-8"),
        ("lonewatch/lw-0001/event", b"{}", "invalid: v:"),
        ("lonewatch/lw-0001/event", encode(_alarm(device="lw-0002")), "invalid: device:"),
        ("lonewatch/lw-0002/event", encode(_alarm(device="lw-0002")), "unknown device 'lw-0002'"),
        ("lonewatch/lw-0001/ack", b'{"v":1,"type":"ack","id":"lw-0001:1","stage":"received","ts":1}', "relay → device only"),
        ("not/a/topic", b"{}", "invalid: topic:"),
    ],
)
def test_bad_input_is_dead_lettered_with_reason_and_never_acked(pipeline: Pipeline, store: Store, acks: list, topic: str, payload: bytes, reason: str) -> None:
    handled = pipeline.handle(topic, payload)
    assert handled.outcome == "dead_letter"
    [dl] = store.dead_letters()
    assert dl["reason"].startswith(reason) or reason in dl["reason"]
    assert dl["topic"] == topic
    assert acks == []
    assert store.r.xlen("lw:events") == 0


def test_pipeline_keeps_working_after_bad_input(pipeline: Pipeline, store: Store) -> None:
    for junk in (b"", b"null", b"{" * 5000, "ø".encode("latin-1")):
        pipeline.handle("lonewatch/lw-0001/event", junk)
    assert pipeline.handle("lonewatch/lw-0001/event", encode(_alarm())).outcome == "stored"
    assert pipeline.counts["dead_letter"] == 4


def _on_shift(pipeline: Pipeline) -> None:
    """Positions are stored only on shift (issue 13)."""
    ev = Event("lw-0001", 900, "shift_start", 1.0, None, {})
    assert pipeline.handle("lonewatch/lw-0001/event", encode(ev)).outcome == "stored"


def test_alive_and_status_update_state(pipeline: Pipeline, store: Store, acks: list) -> None:
    _on_shift(pipeline)
    acks.clear()
    alive = Alive("lw-0001", 1.0, 80, -75, "home", Position(55.0, 12.0, 4.0, 1.0), 10.0, "0.1.0", 2)
    assert pipeline.handle("lonewatch/lw-0001/alive", encode(alive)).outcome == "alive"
    assert pipeline.handle("lonewatch/lw-0001/status", encode(Status("lw-0001", "offline", 1.0))).outcome == "status"
    st = store.state("lw-0001")
    assert (st["battery_pct"], st["signal_dbm"], st["status"], st["lat"]) == ("80", "-75", "offline", "55.0")
    assert acks == []


def test_redis_down_raises_store_error_and_acks_nothing(acks: list) -> None:
    dead = Store(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    p = Pipeline(dead, lambda dev, ack: acks.append(ack))
    with pytest.raises(StoreError):
        p.handle("lonewatch/lw-0001/event", encode(_alarm()))
    assert acks == []


def test_sequence_numbers_wrap_9999_to_1(store: Store) -> None:
    store.r.set("lw:arcseq:1234AB", 9998)
    assert [store.next_sequence("1234AB") for _ in range(3)] == [9999, 1, 2]


def test_alive_without_accuracy_is_stored(pipeline: Pipeline, store: Store) -> None:
    # SIM7600 +CGPSINFO reports no HDOP: accuracy unknown must not break the relay.
    _on_shift(pipeline)
    alive = Alive("lw-0001", 1.0, None, None, "home", Position(55.0, 12.0, None, 7.0), 10.0, "0.1.0", 0)
    assert pipeline.handle("lonewatch/lw-0001/alive", encode(alive)).outcome == "alive"
    st = store.state("lw-0001")
    assert (st["accuracy_m"], st["fixed_at"], st["battery_pct"]) == ("", "7.0", "")


def test_redis_refusing_data_is_not_mistaken_for_redis_down() -> None:
    from relay.store import StoreDataError

    class Refusing(fakeredis.FakeRedis):
        def hset(self, *a, **kw):
            raise redis.DataError("Invalid input of type: 'NoneType'")

    s = Store(Refusing())
    with pytest.raises(StoreDataError):
        s.update_status(Status("lw-0001", "online", 1.0))


def test_alive_batch_stores_the_good_and_dead_letters_the_bad(pipeline: Pipeline, store: Store) -> None:
    good = [Alive("lw-0001", float(i), 50 + i, -80, "home", None, float(i), "0.1.0", 0) for i in range(3)]
    items = [
        ("lonewatch/lw-0001/alive", encode(good[0])),
        ("lonewatch/lw-0001/alive", b"{broken"),
        ("lonewatch/lw-0002/alive", encode(Alive("lw-0002", 1.0, 1, -90, "home", None, 1.0, "0.1.0", 0))),
        ("lonewatch/lw-0001/alive", encode(good[1])),
        ("lonewatch/lw-0001/alive", encode(good[2])),
    ]
    outcomes = [h.outcome for h in pipeline.handle_alives(items)]
    assert outcomes == ["alive", "dead_letter", "dead_letter", "alive", "alive"]
    assert store.state("lw-0001")["battery_pct"] == "52"  # the last one, in order
    reasons = [d["reason"] for d in store.dead_letters()]
    assert reasons[0].startswith("invalid: payload is not JSON") and "unknown device 'lw-0002'" in reasons[1]
