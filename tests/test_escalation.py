"""Escalation to contacts (issue 4) on a real Redis: policies, timing by explicit clock,
exactly-once steps across two relay instances, restart, acknowledgement by SMS reply and CLI,
cancel/restore, delivery failures; the dispatcher hooks with a DUH receiver; and the demo
scenarios ``escalation`` and ``arc-down`` end to end (real Mosquitto, Redis, pysiaalarm and
two modem simulators)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from protocol.messages import Event
from relay.arc import ArcClient, ArcReceiver, ArcRejectedError, ArcUnavailableError
from relay.dispatch import Dispatcher
from relay.escalation import Escalation, EscalationSettings, escalation_action
from labstack.servers import RedisServer
from relay.notify import Delivery
from relay.registry import RegistryDoc, RegistryStore
from relay.store import Store
from tests.test_arc_client import ScriptedReceiver, reply

T0 = 1_800_000_000.0
PHONES = ("+4520110001", "+4520110002", "+4520110003")


@pytest.fixture
def store(redis_module: RedisServer) -> Store:
    s = Store.from_url(redis_module.url)
    s.r.flushall()
    return s


class FakeChannel:
    """Records what it sends; fails the first ``fail`` sends (-1: always)."""

    def __init__(self, name: str, fail: int = 0) -> None:
        self.name, self.fail = name, fail
        self.sent: list[tuple[str, str, str]] = []

    def send(self, to: str, subject: str, body: str) -> Delivery:
        if self.fail:
            self.fail -= 1 if self.fail > 0 else 0
            return Delivery(self.name, False, "no network service")
        self.sent.append((to, subject, body))
        return Delivery(self.name, True, "ok")


def registry(policy: str = "arc_then_contacts", after: int = 60, contacts: int = 2) -> dict[str, Any]:
    people = [{"name": f"Contact {i + 1}", "role": "manager", "phone": PHONES[i], "language": lang}
              for i, lang in zip(range(contacts), ("da", "ar", "pl"))]
    people[0]["email"] = "first@example.org"
    return {
        "workers": [{"name": "Anna Hansen", "number": 17, "language": "da"}],
        "sites": [{"name": "Vaskeriet", "address": "Vestergade 12", "escape_routes": "North stairs",
                   "policy": policy, "escalate_after_s": after, "account": "1234", "lat": 55.6, "lon": 12.5,
                   "contacts": people}],
        "devices": [{"id": "lw-0001", "worker": "Anna Hansen", "site": "Vaskeriet"}],
    }


def engine(store: Store, doc: dict[str, Any] | None = None, *, name: str = "r1", sms: list | None = None,
           **settings: Any) -> Escalation:
    reg = RegistryStore(store)
    if doc is not None:
        reg.save(RegistryDoc.from_dict(doc), replace=True)
    esc = Escalation(store, reg, {"sms": sms if sms is not None else [FakeChannel("sms-modem")],
                                  "email": [FakeChannel("email")]},
                     name=name, settings=EscalationSettings(retry_s=0.01, **settings))
    esc.alarms.ensure_groups()
    return esc


def drain(esc: Escalation, kinds: tuple[str, ...] = ("sms", "email")) -> int:
    done = 0
    for kind in kinds:
        while jobs := esc.alarms.next_jobs(kind, "test", block_ms=1, reclaim_idle_ms=600_000):
            for job_id, job in jobs:
                esc.run_job(kind, job_id, job)
                done += 1
    return done


def alarm_event(seq: int = 1, kind: str = "panic", **data: Any) -> Event:
    return Event(device="lw-0001", seq=seq, kind=kind, ts=T0, data=data)


def whats(esc: Escalation, alarm_id: str) -> list[str]:
    return [e["what"] for e in esc.alarms.history(alarm_id)]


def sms_sent(esc: Escalation) -> list[tuple[str, str, str]]:
    return esc.channels["sms"][0].sent  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- policies and timing


def test_arc_then_contacts_tells_in_order_after_the_timeout(store: Store) -> None:
    esc = engine(store, registry(after=60))
    ev = alarm_event()
    assert esc.on_event(ev) is True  # also to the ARC
    assert esc.tick(now=T0) == 1
    drain(esc)
    [(to, _subject, body)] = sms_sent(esc)
    assert to == PHONES[0] and body.startswith("ALARM: Overfaldsalarm\nMedarbejder: Anna Hansen\nSted: Vaskeriet")
    assert "Adresse: Vestergade 12" in body and "Flugtveje: North stairs" in body
    assert "maps.google.com/?q=55.60000,12.50000" in body and "(ref 1)" in body
    assert esc.channels["email"][0].sent[0][0] == "first@example.org"  # type: ignore[attr-defined]
    assert esc.tick(now=T0 + 59) == 0  # not yet: the first contact has 60 s
    assert esc.tick(now=T0 + 61) == 1
    drain(esc)
    assert [s[0] for s in sms_sent(esc)] == [PHONES[0], PHONES[1]]
    assert sms_sent(esc)[1][2].startswith("إنذار: إنذار استغاثة")  # the second contact reads Arabic
    assert whats(esc, ev.id)[:3] == ["opened", "escalated", "sent"]


def test_contacts_only_keeps_the_event_from_the_arc(store: Store) -> None:
    esc = engine(store, registry(policy="contacts_only"))
    assert esc.on_event(alarm_event()) is False
    assert esc.on_event(alarm_event(2, "cancel", cancels="lw-0001:1")) is False
    assert esc.tick(now=T0) == 0  # the cancel closed it before its first step


def test_arc_only_tells_contacts_only_when_the_arc_fails(store: Store) -> None:
    from relay.arc import ArcResult

    esc = engine(store, registry(policy="arc_only"))
    ok, duh, down = alarm_event(1), alarm_event(2), alarm_event(3)
    for ev in (ok, duh, down):
        assert esc.on_event(ev) is True
    assert esc.tick(now=T0 + 1000) == 0  # nobody is told while the ARC may take them
    result = ArcResult("primary", 1, None, 1, 0.01, False, (), ())  # type: ignore[arg-type]
    esc.arc_outcome(ok, result)
    assert esc.alarms.get(ok.id).state == "with_arc"  # type: ignore[union-attr]
    esc.arc_outcome(duh, ArcRejectedError("every ARC receiver refused sequence 0002"))
    for _ in range(3):  # retry rounds are recorded once
        esc.arc_outcome(down, ArcUnavailableError("no ARC receiver reachable"))
    assert esc.tick(now=T0 + 1000) == 2
    assert whats(esc, duh.id)[:3] == ["opened", "arc_rejected", "escalated"]
    assert whats(esc, down.id).count("arc_unreachable") == 1
    esc.arc_outcome(down, result)  # the ARC came back: recorded, escalation goes on
    assert "arc_acked" in whats(esc, down.id) and esc.alarms.get(down.id).state == "open"  # type: ignore[union-attr]


def test_open_is_idempotent_and_unknown_kinds_do_nothing(store: Store) -> None:
    esc = engine(store, registry())
    ev = alarm_event()
    esc.on_event(ev)
    esc.on_event(ev)  # the dispatch job ran twice (relay died before XACK)
    assert whats(esc, ev.id) == ["opened"]
    assert escalation_action(alarm_event(5, "shift_start")) is None
    esc.on_event(alarm_event(5, "shift_start"))
    assert esc.alarms.get("lw-0001:5") is None


def test_unanswered_after_every_round_stays_listed(store: Store) -> None:
    esc = engine(store, registry(after=10), max_rounds=2)
    ev = alarm_event()
    esc.on_event(ev)
    steps = sum(esc.tick(now=T0 + 11 * i) for i in range(8))
    assert steps == 4  # 2 contacts × 2 rounds
    alarm = esc.alarms.get(ev.id)
    assert alarm is not None and alarm.state == "unanswered"
    assert [a.id for a in esc.alarms.recent(10, open_only=True)] == [ev.id]
    assert whats(esc, ev.id)[-1] == "unanswered"


def test_each_step_happens_once_with_two_relays_racing(store: Store, redis_module: RedisServer) -> None:
    one = engine(store, registry(after=60, contacts=3))
    two = engine(Store.from_url(redis_module.url), name="r2")
    events = [alarm_event(i) for i in range(1, 21)]
    for ev in events:
        one.on_event(ev)
    taken: list[int] = []
    barrier = threading.Barrier(2)

    def race(esc: Escalation) -> None:
        barrier.wait()
        taken.append(esc.tick(now=T0))

    threads = [threading.Thread(target=race, args=(e,)) for e in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 20
    assert all(one.alarms.get(ev.id).step == 1 for ev in events)  # type: ignore[union-attr]


def test_a_restarted_relay_continues_with_the_next_contact(store: Store, redis_module: RedisServer) -> None:
    first = engine(store, registry(after=60))
    ev = alarm_event()
    first.on_event(ev)
    first.tick(now=T0)
    drain(first)
    del first  # killed
    second = engine(Store.from_url(redis_module.url), name="r1")
    assert second.tick(now=T0 + 30) == 0
    assert second.tick(now=T0 + 61) == 1
    drain(second)
    assert [s[0] for s in sms_sent(second)] == [PHONES[1]]


# ----------------------------------------------------------------------------- acknowledgements


def test_sms_reply_acknowledges_and_everyone_told_hears_who(store: Store) -> None:
    esc = engine(store, registry(after=10))
    ev = alarm_event()
    esc.on_event(ev)
    esc.tick(now=T0)
    esc.tick(now=T0 + 11)
    drain(esc)
    assert esc.handle_reply(PHONES[1], "نعم") == f"{ev.id}: acked (Contact 2)"
    alarm = esc.alarms.get(ev.id)
    assert alarm is not None and (alarm.state, alarm.get("acked_by"), alarm.get("ack_via")) == ("acked", "Contact 2", "sms")
    assert esc.tick(now=T0 + 100) == 0
    drain(esc)
    news = [(to, body) for to, _s, body in sms_sent(esc)[2:]]
    assert news == [(PHONES[0], "KVITTERET: Alarmen fra Anna Hansen (ref 1) er kvitteret af Contact 2."),
                    (PHONES[1], "تم التأكيد: أكّد Contact 2 استلام إنذار Anna Hansen (المرجع 1).")]
    assert esc.ack(ev.id, "Per", "cli") == ("already", "Contact 2")


@pytest.mark.parametrize(("text", "outcome"), [
    ("ok 2", "lw-0001:2: acked"),
    ("OK", "ambiguous: 2 open alarms"),
    ("who is this?", "reply kept in the history"),
])
def test_replies_with_two_open_alarms(store: Store, text: str, outcome: str) -> None:
    esc = engine(store, registry())
    for seq in (1, 2):
        esc.on_event(alarm_event(seq))
    esc.tick(now=T0)
    drain(esc)
    assert esc.handle_reply(PHONES[0], text).startswith(outcome)
    if outcome.startswith("ambiguous"):
        assert {a.state for a in esc.alarms.recent(5)} == {"open"}
        drain(esc)
        assert sms_sent(esc)[-1][2] == ('Flere alarmer er åbne: 2 (Anna Hansen), 1 (Anna Hansen). '
                                        'Svar OK og ref, f.eks. "OK 2".')


def test_replies_from_strangers_and_late_replies_are_kept(store: Store) -> None:
    esc = engine(store, registry(), default_region="DK")
    ev = alarm_event()
    esc.on_event(ev)
    esc.tick(now=T0)
    assert esc.handle_reply("+4599999999", "OK") == "no alarm was told to this number"
    assert esc.handle_reply("20110001", "ja").endswith("acked (Contact 1)")  # national format
    assert esc.handle_reply(PHONES[0], "OK").startswith("no open alarm")
    assert whats(esc, ev.id)[-1] == "reply"
    inbox = store.r.xrange("lw:{esc}:inbox")
    assert len(inbox) == 3


def test_cancel_and_restore_tell_the_contacts_already_told(store: Store) -> None:
    esc = engine(store, registry(after=10, contacts=3))
    ev = alarm_event()
    esc.on_event(ev)
    esc.tick(now=T0)
    esc.tick(now=T0 + 11)
    drain(esc)
    esc.on_event(alarm_event(2, "cancel", cancels=ev.id))
    assert esc.alarms.get(ev.id).state == "cancelled"  # type: ignore[union-attr]
    assert esc.tick(now=T0 + 100) == 0  # the third contact is never told
    drain(esc)
    told = [(to, body.split(":")[0]) for to, _s, body in sms_sent(esc)[2:]]
    assert told == [(PHONES[0], "AFMELDT"), (PHONES[1], "أُلغي")]

    lost = Event(device="lw-0001", seq=9, kind="lost_contact", ts=T0)
    esc.on_event(lost)
    esc.tick(now=T0 + 200)
    drain(esc)
    # The relay's supervision restores (origin relay, issue 15: a device's data never does).
    esc.on_event(Event(device="lw-0001", seq=10, kind="contact_restore", ts=T0 + 300, data={"restores": lost.id},
                       origin="relay"))
    assert esc.alarms.get(lost.id).state == "restored"  # type: ignore[union-attr]
    drain(esc)
    assert sms_sent(esc)[-1][2].startswith("GENOPRETTET: Mistet forbindelse til enheden – Anna Hansen")


def test_a_cancel_that_overtakes_its_alarm_stops_it(store: Store) -> None:
    esc = engine(store, registry())
    esc.on_event(alarm_event(2, "cancel", cancels="lw-0001:1"))
    esc.on_event(alarm_event(1))
    assert esc.tick(now=T0 + 1) == 0
    alarm = esc.alarms.get("lw-0001:1")
    assert alarm is not None and alarm.state == "cancelled"


# ----------------------------------------------------------------------------- delivery


def test_failed_channel_falls_back_and_total_failure_is_recorded(store: Store) -> None:
    modem, gateway = FakeChannel("sms-modem", fail=-1), FakeChannel("sms-gateway")
    esc = engine(store, registry(), sms=[modem, gateway])
    ev = alarm_event()
    esc.on_event(ev)
    esc.tick(now=T0)
    drain(esc, ("sms",))
    assert gateway.sent[0][0] == PHONES[0]
    entries = [(e["what"], e.get("channel")) for e in esc.alarms.history(ev.id)][2:]
    assert entries == [("send_failed", "sms-modem"), ("sent", "sms-gateway")]

    gateway.fail = -1
    esc.tick(now=T0 + 61)
    drain(esc, ("sms",))
    assert whats(esc, ev.id)[-1] == "undelivered"
    assert whats(esc, ev.id).count("send_failed") == 1 + 2 * 3  # 3 attempts on both channels


def test_alarm_sms_not_sent_once_acknowledged(store: Store) -> None:
    esc = engine(store, registry())
    ev = alarm_event()
    esc.on_event(ev)
    esc.tick(now=T0)
    esc.ack(ev.id, "Per Jensen", "cli")
    drain(esc, ("sms",))
    assert sms_sent(esc) == []  # neither the alarm nor the news about an alarm never received
    assert whats(esc, ev.id)[-2:] == ["skipped", "skipped"]


def test_a_dead_senders_job_is_taken_over(store: Store, redis_module: RedisServer) -> None:
    dead = engine(store, registry())
    ev = alarm_event()
    dead.on_event(ev)
    dead.tick(now=T0)
    assert dead.alarms.next_jobs("sms", "dead-sms", block_ms=1, reclaim_idle_ms=600_000)  # taken, never done
    other = engine(Store.from_url(redis_module.url), name="r2")
    assert other.alarms.next_jobs("sms", "r2-sms", block_ms=1, reclaim_idle_ms=600_000) == []
    time.sleep(0.3)
    [(job_id, job)] = other.alarms.next_jobs("sms", "r2-sms", block_ms=1, reclaim_idle_ms=200)
    other.run_job("sms", job_id, job)
    assert sms_sent(other)[0][0] == PHONES[0]


def test_threads_escalate_without_being_driven(store: Store, wait_until) -> None:
    esc = engine(store, registry(after=1), poll_s=0.05)
    esc.start()
    try:
        esc.on_event(alarm_event())
        assert wait_until(lambda: len(sms_sent(esc)) >= 2, 10)
    finally:
        esc.stop()
    assert [s[0] for s in sms_sent(esc)[:2]] == [PHONES[0], PHONES[1]]


# ----------------------------------------------------------------------------- dispatcher hooks


def _dispatch(store: Store, esc: Escalation, arc: ArcClient | None, kind: str = "panic") -> Event:
    ev = Event(device="lw-0001", seq=7, kind=kind, ts=time.time())
    assert store.store_event(ev)
    d = Dispatcher(store, arc, lambda *_: None, name="t", escalation=esc, retry_s=0.05)
    store.ensure_group()
    [(job_id, event_id)] = store.next_jobs("t-0", block_ms=10)
    d.run_job(job_id, event_id)
    return ev


def test_duh_from_every_receiver_escalates_an_arc_only_alarm(store: Store) -> None:
    esc = engine(store, registry(policy="arc_only"))
    duh = ScriptedReceiver(lambda frame, _i: reply("DUH", frame))
    duh.thread.start()
    try:
        receiver = ArcReceiver("duh", "127.0.0.1", duh.server.server_address[1], timeout_s=2)
        arc = ArcClient([receiver], store, attempts_per_receiver=1, backoff_s=0.01)
        ev = Event(device="lw-0001", seq=7, kind="panic", ts=time.time())
        assert store.store_event(ev)
        d = Dispatcher(store, arc, lambda *_: None, name="t", escalation=esc, retry_s=0.05)
        store.ensure_group()
        [(job_id, event_id)] = store.next_jobs("t-0", block_ms=10)
        # Issue 14: the dispatcher never gives up on a refused alarm; the contacts are told meanwhile.
        t = threading.Thread(target=d.run_job, args=(job_id, event_id), daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and whats(esc, ev.id)[:2] != ["opened", "arc_rejected"]:
            time.sleep(0.02)
        d._stop.set()
        t.join(10)
    finally:
        duh.server.shutdown()
        duh.server.server_close()
    assert store.event(ev.id)[1]["arc"] == "retrying"  # type: ignore[index]
    assert whats(esc, ev.id)[:2] == ["opened", "arc_rejected"]
    assert esc.tick() == 1


def test_contacts_only_alarm_is_not_sent_to_the_arc(store: Store) -> None:
    esc = engine(store, registry(policy="contacts_only"))
    unreachable = ArcReceiver("gone", "127.0.0.1", 9, timeout_s=0.2)
    ev = _dispatch(store, esc, ArcClient([unreachable], store, attempts_per_receiver=1))
    assert store.event(ev.id)[1]["arc"] == "no_arc"  # type: ignore[index]
    assert whats(esc, ev.id) == ["opened"]


def test_no_arc_configured_escalates_an_arc_only_alarm(store: Store) -> None:
    esc = engine(store, registry(policy="arc_only"))
    ev = _dispatch(store, esc, None)
    assert whats(esc, ev.id)[:2] == ["opened", "arc_none"] and esc.tick() == 1


# ----------------------------------------------------------------------------- demo scenarios


@pytest.mark.integration
@pytest.mark.parametrize("name", ["escalation", "arc-down"])
def test_demo_scenario(name: str, tmp_path: Path) -> None:
    from labstack.demo.scenarios import load_all
    from labstack.demo.stack import DemoStack
    from labstack.timeline import Timeline

    fn, _ = load_all()[name]
    tl = Timeline(live=False)
    with DemoStack(tl, tmp_path) as stack:
        ok = fn(stack)
    assert ok, [e for e in tl.steps if e["step"] in ("error", "contact_sms", "arc_ack", "arc_problem")]
    if name == "escalation":
        sms = [e for e in tl.steps if e["step"] == "contact_sms"]
        assert [e["to"] for e in sms[:2]] == ["+4520110001", "+4520110002"]
        assert sms[1]["first_line"] == "إنذار: إنذار صامت"  # Arabic, intact through UCS2 PDUs
