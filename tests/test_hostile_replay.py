"""Hostile input at the relay: duplicated and replayed events (the same event id re-sent,
re-sent after the ARC ACKed) never raise a second ARC alarm; an id replayed with other
content is a conflict (issue 15): a conflicting *alarm* is delivered once under its derived
id, a conflicting routine event is not delivered (relay/conflicts.py).

Property-based over random message orders: the real pipeline (:class:`relay.pipeline.Pipeline`
on fakeredis with the store's Lua scripts), the real dispatcher (:meth:`Dispatcher.run_job`)
and the real SIA DC-09 client, sending to a real pysiaalarm receiver
(:class:`bench.arcrecorder.ArcRecorder`). The ARC must receive exactly one message per
distinct event id plus one per distinct conflicting alarm, whatever was re-sent in between.
"""

from __future__ import annotations

import time

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.arcrecorder import ArcRecorder
from protocol.messages import Event, Position, encode
from relay.arc import ArcClient, ArcReceiver
from relay.dispatch import Dispatcher
from labstack.servers import free_port
from relay.pipeline import Pipeline
from relay.store import DeviceEntry, Store

ACCOUNTS = {"lw-0001": "1234", "lw-0002": "ABCD"}


@pytest.fixture(scope="module")
def arc():
    with ArcRecorder(ACCOUNTS.values(), free_port()) as rec:
        yield rec


def _event(dev: str, seq: int, kind: str, ts_shift: float, with_pos: bool) -> Event:
    pos = Position(55.67, 12.58, 8.0, 1_796_000_000.0) if with_pos else None
    return Event(dev, seq, kind, 1_796_000_000.0 + ts_shift, position=pos)


messages = st.lists(
    st.tuples(
        st.sampled_from(sorted(ACCOUNTS)),
        st.integers(1, 4),  # few sequence numbers: many collisions = duplicates and replays
        st.sampled_from(["panic", "silent_panic", "man_down", "test"]),
        st.floats(0, 600),  # a replay may carry another time …
        st.booleans(),  # … or another position
        st.booleans(),  # dispatch everything pending after this message?
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages)
def test_duplicates_and_replays_never_raise_a_second_arc_alarm(arc: ArcRecorder, msgs) -> None:
    store = Store(fakeredis.FakeRedis())
    for i, (dev, account) in enumerate(sorted(ACCOUNTS.items()), start=1):
        store.register(DeviceEntry(dev, account, i, "Worker", "Site"))
    acks: list = []
    pipeline = Pipeline(store, lambda dev, ack: acks.append(ack))
    client = ArcClient([ArcReceiver("arc", "127.0.0.1", arc.port, timeout_s=2.0, max_xdata_blocks=1)], store,
                       attempts_per_receiver=2, backoff_s=0.05)
    dispatcher = Dispatcher(store, client, lambda dev, ack: acks.append(ack), name="hostile", workers=1)
    dispatcher.test_period_s = 0  # replays, not the test-signal gate (tests/test_fair_shares.py)
    store.ensure_group()
    before = len(arc.frames)

    def dispatch_all() -> None:
        while jobs := store.next_jobs("hostile-0", block_ms=1, count=50):
            for job_id, event_id in jobs:
                dispatcher.run_job(job_id, event_id, "hostile-0")

    first: dict[str, tuple] = {}
    conflicts: set[tuple] = set()
    for dev, seq, kind, shift, with_pos, flush in msgs:
        ev = _event(dev, seq, kind, shift, with_pos)
        content = (ev.kind, ev.ts, ev.position)
        first.setdefault(ev.id, content)
        if content != first[ev.id] and ev.is_alarm:
            conflicts.add((ev.id, content))
        assert pipeline.handle(f"lonewatch/{dev}/event", encode(ev)).outcome in ("stored", "duplicate", "dead_letter")
        if flush:
            dispatch_all()
    dispatch_all()

    # pysiaalarm ACKs before it records the frame: wait for the records (never for more).
    deadline = time.monotonic() + 5
    while len({(f.account, f.sequence) for f in arc.frames[before:]}) < len(first) + len(conflicts) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    new = arc.frames[before:]
    keys = [(f.account, f.sequence) for f in new]
    assert len(set(keys)) == len(first) + len(conflicts), f"ARC messages {keys} for events {sorted(first)}"
    # Each ARC message is the first-stored version of its event, or a conflicting alarm.
    codes = sorted(f.code for f in {(f.account, f.sequence): f for f in new}.values())
    cid = {"panic": "120", "silent_panic": "122", "man_down": "101", "test": "601"}
    want = sorted([cid[c[0]] for c in first.values()] + [cid[c[0]] for _, c in conflicts])
    assert codes == want
    assert sum(a.stage == "received" for a in acks) == len(msgs)
