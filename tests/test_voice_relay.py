"""The relay side of listen-in (issue 11): ``listen_in`` is Contact ID 606 (SIA-DCS ``LF``), sent
to the ARC like other events; pysiaalarm 3.2.2 ACKs it and reports it as SIA ``YN`` (it has no
606 in its ADM table); it is a separate event after the alarm, so it never holds the alarm
back, and it is no alarm: it opens no escalation to contacts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from protocol.messages import ALARM_KINDS, EVENT_KINDS, Event, alarm_priority, decode, encode
from protocol.sia import ContactId, contact_id_for, sia_code
from relay.arc import ArcAlarm
from relay.dispatch import contact_id_of
from relay.escalation import escalation_action
from tests.test_arc_client import PysiaReceiver, client


@pytest.fixture
def arc() -> Iterator[PysiaReceiver]:
    receiver = PysiaReceiver()
    receiver.client.start()
    try:
        yield receiver
    finally:
        receiver.client.stop()


def listen_in(seq: int = 8) -> Event:
    return Event(device="lw-0001", seq=seq, kind="listen_in", ts=1_800_000_000.0,
                 data={"alarm": "lw-0001:7", "numbers": 2})


def test_listen_in_is_a_device_event_with_cid_606() -> None:
    assert "listen_in" in EVENT_KINDS and "listen_in" not in ALARM_KINDS
    assert contact_id_for("listen_in") == (606, 1)
    assert sia_code(606, 1) == "LF"
    ev = listen_in()
    assert decode(encode(ev)) == ev
    cid = contact_id_of(ev, zone=17, partition=1)
    assert cid == ContactId(qualifier=1, code=606, partition=1, zone=17)
    # Behind its alarm in the device queue only by position, never behind routine events.
    assert alarm_priority("listen_in") == alarm_priority("silent_panic") < alarm_priority("test")


def test_listen_in_is_not_escalated_to_contacts() -> None:
    assert escalation_action(listen_in()) is None
    alarm = Event(device="lw-0001", seq=7, kind="silent_panic", ts=1_800_000_000.0)
    assert escalation_action(alarm) == "open"


def test_pysiaalarm_acks_606_and_reports_it_as_yn(arc: PysiaReceiver) -> None:
    result = client(arc.receiver()).send(ArcAlarm("1234", ContactId(1, 606, 1, 17)))
    assert result.reply.kind == "ACK"
    event = arc.event()
    assert (event.account, event.event_type, event.event_qualifier, event.ri) == ("1234", "606", "1", "017")
    assert event.code == "YN"  # pysiaalarm 3.2.2 maps unknown ADM codes to "invalid report"
