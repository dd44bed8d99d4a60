"""The relay side of listen-in (issue 11): ``listen_in`` is Contact ID 606 (SIA-DCS ``LF``), sent
to the ARC like other events; pysiaalarm 3.2.2 ACKs it and reports it as SIA ``YN`` (it has no
606 in its ADM table); it is a separate event after the alarm, so it never holds the alarm
back, and it is no alarm: it opens no escalation to contacts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from protocol.messages import ALARM_KINDS, EVENT_KINDS, Event, alarm_priority, decode, encode
from protocol.sia import ContactId, SiaFrame, contact_id_for, decode_frame, encode_frame, sia_code
from relay.arc import ArcAlarm, ArcClient, ArcReceiver
from relay.dispatch import Dispatcher, contact_id_of
from relay.store import DeviceEntry, Store
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


class KnowsNo606:
    """A SIA DC-09 receiver that ACKs every Contact ID but 606, which it answers DUH."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answers: list[tuple[str, str]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn) -> None:
        with conn:
            data = b""
            while not data.endswith(b"\r"):
                chunk = conn.recv(1024)
                if not chunk:
                    return
                data += chunk
            frame = decode_frame(data)
            code = f"{frame.contact_id().code:03d}"
            kind = "DUH" if code == "606" else "ACK"
            self.answers.append((code, kind))
            conn.sendall(encode_frame(SiaFrame(kind, frame.sequence, frame.account, receiver=frame.receiver or "1",
                                               line=frame.line)))


def test_a_receiver_that_refuses_606_never_holds_back_the_alarm_or_later_events(redis_server, wait_until) -> None:
    store = Store.from_url(redis_server.url)
    store.register(DeviceEntry("lw-0001", "1234AB", 17, "Anna", "Site"))
    arc = KnowsNo606()
    client = ArcClient([ArcReceiver("no606", "127.0.0.1", arc.port, timeout_s=1.0)], store, attempts_per_receiver=1,
                       backoff_s=0.05)
    dispatcher = Dispatcher(store, client, lambda dev, ack: None, name="t", workers=2)
    now = time.time()
    events = [Event("lw-0001", 1, "silent_panic", now), listen_in(2),
              Event("lw-0001", 3, "cancel", now, data={"cancels": "lw-0001:1"})]
    for ev in events:
        assert store.store_event(ev)
    dispatcher.start()
    try:
        assert wait_until(lambda: len(arc.answers) >= 3, 20), arc.answers
        # Issue 14: refused by its code alone at every receiver (that ACKs other codes) → final,
        # recorded per receiver and code, never a lost alarm; the ladder tried it plainer first.
        assert wait_until(lambda: (store.event("lw-0001:2") or (None, {}))[1].get("arc") == "code_refused", 10)
        # The alarm and the cancel after it were ACKed (two dispatch workers: the 606's plainer
        # retries may come before or after the 406).
        assert wait_until(lambda: {("122", "ACK"), ("406", "ACK")} <= set(arc.answers), 10), arc.answers
    finally:
        dispatcher.stop()
        arc.sock.close()
    assert arc.answers[0] == ("122", "ACK")  # the alarm first (per-device order)
    assert arc.answers.count(("406", "ACK")) == 1
    assert set(arc.answers[1:]) - {("406", "ACK")} == {("606", "DUH")}
    from relay.arc import receiver_key

    assert client.caps.snapshot(receiver_key(client.receivers[0])).get("refused:606")
    assert store.event("lw-0001:1")[1].get("arc") == "acked"
    assert store.event("lw-0001:3")[1].get("arc") == "acked"
