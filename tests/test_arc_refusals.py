"""ARC delivery never abandons an alarm (issue 14): DUH once, DUH always, a silent receiver, the
other format, a receiver that does not know one code — against scripted TCP receivers and
pysiaalarm, with what each receiver accepted learned in a real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from protocol.messages import Event, Position
from protocol.sia import ContactId, decode_frame
from relay.arc import ArcAlarm, ArcClient, ArcRejectedError, receiver_key
from relay.arc_policy import ArcFaults
from relay.dispatch import Dispatcher
from relay.health import health_report
from relay.receiver_caps import ReceiverCaps
from relay.store import DeviceEntry, Store
from tests.test_arc_client import PysiaReceiver, ScriptedReceiver, reply

pytestmark = pytest.mark.integration

POSITION = (55.66857, 12.57613, 8.0)
DEV = "lw-0001"


@pytest.fixture
def store(redis_server) -> Store:  # type: ignore[no-untyped-def]
    s = Store.from_url(redis_server.url)
    s.register(DeviceEntry(DEV, "1234", 5, "Anna", "Site"))
    return s


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[bytes, int], bytes | None]], ScriptedReceiver]]:
    started: list[ScriptedReceiver] = []

    def start(script: Callable[[bytes, int], bytes | None]) -> ScriptedReceiver:
        receiver = ScriptedReceiver(script)
        receiver.thread.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def pysia() -> Iterator[PysiaReceiver]:
    receiver = PysiaReceiver()
    receiver.client.start()
    try:
        yield receiver
    finally:
        receiver.client.stop()


def client(store: Store, *receivers, **kw) -> ArcClient:  # type: ignore[no-untyped-def]
    return ArcClient(list(receivers), store, backoff_s=0.01, sleep=lambda _s: None, caps=ReceiverCaps(store.r, refresh_s=0), **kw)


def alarm(code: int = 120, fmt: str = "ADM-CID") -> ArcAlarm:
    return ArcAlarm("1234", ContactId(1, code, 1, 5), fmt=fmt, position=POSITION, text="Anna, Site")


def is_sia_dcs(frame: bytes) -> bool:
    return b'"SIA-DCS"' in frame


# ----------------------------------------------------------------------------- the ladder
def test_duh_once_is_resent_with_less_extended_data_and_learned_for_every_relay(store: Store, scripted) -> None:  # type: ignore[no-untyped-def]
    # Takes frames with at most one extended-data block; DUHs the rest (a parser limit).
    fake = scripted(lambda f, _i: reply("ACK" if len(decode_frame(f).xdata) <= 1 else "DUH", f))
    receiver = fake.receiver("arc1")
    result = client(store, receiver).send(alarm())
    assert [a.outcome for a in result.log] == ["DUH", "ACK"]
    assert [a.xdata_blocks for a in result.log] == [3, 1] and result.degraded
    # Another relay (its own client and caps, the same Redis) goes right the first time.
    again = client(store, receiver).send(alarm())
    assert [(a.outcome, a.xdata_blocks) for a in again.log] == [("ACK", 1)]
    assert ReceiverCaps(store.r).snapshot(receiver_key(receiver))["xdata:ADM-CID"] == "1"


def test_silent_receiver_gets_a_simpler_frame_instead_of_the_same_again(store: Store, scripted) -> None:  # type: ignore[no-untyped-def]
    fake = scripted(lambda f, _i: None if decode_frame(f).xdata else reply("ACK", f))  # no answer at all
    result = client(store, fake.receiver("quiet", timeout_s=0.2), attempts_per_receiver=1).send(alarm())
    assert [(a.outcome, a.xdata_blocks) for a in result.log] == [("timeout", 3), ("timeout", 1), ("ACK", 0)]
    frames = [decode_frame(f) for f in fake.frames]
    assert len({f.sequence for f in frames}) == 1  # one alarm, one sequence number
    assert result.xdata_sent == () and result.degraded


def test_other_format_when_the_receiver_allows_it_then_remembered(store: Store, scripted) -> None:  # type: ignore[no-untyped-def]
    fake = scripted(lambda f, _i: reply("ACK" if is_sia_dcs(f) else "DUH", f))
    receiver = fake.receiver("dcs-only", format_fallback=True)
    result = client(store, receiver).send(alarm())
    assert [a.outcome for a in result.log] == ["DUH", "DUH", "DUH", "ACK"]  # 3, 1, 0 blocks, then SIA-DCS
    assert is_sia_dcs(fake.frames[-1]) and not any(is_sia_dcs(f) for f in fake.frames[:3])
    n = len(fake.frames)
    client(store, receiver).send(alarm())
    assert len(fake.frames) == n + 1 and is_sia_dcs(fake.frames[-1])  # first time right


def test_no_format_switch_unless_the_receiver_allows_it(store: Store, scripted) -> None:  # type: ignore[no-untyped-def]
    fake = scripted(lambda f, _i: reply("ACK" if is_sia_dcs(f) else "DUH", f))
    with pytest.raises(ArcRejectedError):
        client(store, fake.receiver("strict")).send(alarm())
    assert not any(is_sia_dcs(f) for f in fake.frames)


def test_a_receiver_that_does_not_know_one_code_does_not_hold_up_the_others(store: Store, scripted, pysia) -> None:  # type: ignore[no-untyped-def]
    picky = scripted(lambda f, _i: reply("DUH" if decode_frame(f).contact_id().code == 601 else "ACK", f))
    receivers = (picky.receiver("picky"), pysia.receiver("pysia"))
    arc = client(store, *receivers)
    assert arc.send(alarm(120)).receiver == "picky"  # it knows panics
    first = arc.send(alarm(601))
    assert first.receiver == "pysia"
    assert ReceiverCaps(store.r).snapshot(receiver_key(receivers[0])).get("refused:601")
    n = len(picky.frames)
    later = client(store, *receivers).send(alarm(601))  # another relay: pysia first for 601
    assert later.receiver == "pysia" and len(picky.frames) == n
    assert client(store, *receivers).send(alarm(120)).receiver == "picky"  # panics still go to it


# ----------------------------------------------------------------------------- dispatcher
def _job(store: Store, kind: str = "panic") -> tuple[str, str, Event]:
    ev = Event(device=DEV, seq=int(time.time() * 1000) % 10**9, kind=kind, ts=time.time(), position=Position(55.6, 12.5, 8.0, time.time()))
    assert store.store_event(ev)
    store.ensure_group()
    [(job_id, event_id)] = store.next_jobs("t-0", block_ms=100)
    return job_id, event_id, ev


def test_duh_always_never_abandons_the_alarm_and_raises_a_visible_fault(store: Store, scripted) -> None:  # type: ignore[no-untyped-def]
    accept = threading.Event()
    fake = scripted(lambda f, _i: reply("ACK" if accept.is_set() else "DUH", f))
    acks: list = []
    d = Dispatcher(store, client(store, fake.receiver("only")), lambda dev, ack: acks.append(ack), name="t", retry_s=0.05)
    job_id, event_id, ev = _job(store)
    t = threading.Thread(target=d.run_job, args=(job_id, event_id), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(fake.frames) < 12:
        time.sleep(0.02)
    assert len(fake.frames) >= 12  # several rounds: not given up after the first DUH
    assert store.event(event_id)[1]["arc"] == "retrying"  # type: ignore[index]
    assert [f["event"] for f in ArcFaults(store.r).list()] == [event_id]
    assert [a.stage for a in acks] == ["arc_failed"] and acks[0].detail["reason"] == "rejected"

    class Svc:  # what /healthz reads
        connected = threading.Event()
        instance = "t"

    Svc.store = store  # type: ignore[attr-defined]
    Svc.connected.set()
    assert any("not taken by any ARC receiver" in p for p in health_report(Svc)["problems"])
    accept.set()
    t.join(10)
    assert not t.is_alive()
    assert store.event(event_id)[1]["arc"] == "acked"  # type: ignore[index]
    assert ArcFaults(store.r).count() == 0 and acks[-1].stage == "arc"


def test_informational_event_every_receiver_refuses_by_code_is_final_not_a_fault(store: Store, scripted) -> None:  # type: ignore[no-untyped-def]
    fake = scripted(lambda f, _i: reply("DUH" if decode_frame(f).contact_id().code == 601 else "ACK", f))
    arc = client(store, fake.receiver("no-601"))
    arc.send(alarm(120))  # the receiver is known to take other codes
    d = Dispatcher(store, arc, lambda *_: None, name="t", retry_s=0.05)
    job_id, event_id, _ev = _job(store, "test")
    d.run_job(job_id, event_id)
    assert store.event(event_id)[1]["arc"] == "code_refused"  # type: ignore[index]
    assert ArcFaults(store.r).count() == 0


def test_demo_arc_refusal_scenario(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from labstack.demo.scenarios import load_all
    from labstack.demo.stack import DemoStack
    from labstack.timeline import Timeline

    fn, _ = load_all()["arc-refusal"]
    tl = Timeline(live=False)
    with DemoStack(tl, tmp_path) as stack:
        ok = fn(stack)
    assert ok, [e for e in tl.steps if e["step"] in ("error", "ladder", "learned", "arc_ack")]
    assert [e["xdata_blocks_per_frame"] for e in tl.steps if e["step"] == "ladder"] == [[3, 1, 0]]
