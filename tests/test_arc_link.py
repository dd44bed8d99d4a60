"""ARC link (SPEC §3/§4, issue 4): UDP transport, sequence numbers kept per event, NULL link
polls per receiver and the periodic test 602 once per period however many relays run —
against pysiaalarm receivers (TCP and UDP)."""

from __future__ import annotations

import socket
import time

import fakeredis
import pytest
from pysiaalarm import CommunicationsProtocol, SIAAccount, SIAClient

from protocol.errors import ValidationError
from protocol.sia import ContactId
from relay.arc import ArcAlarm, ArcClient, ArcReceiver, ArcUnavailableError, MemorySequences
from labstack.demo.stack import LocalArc, decoded_sia_event
from relay.linktest import LinkTester
from labstack.servers import free_port
from relay.store import DeviceEntry, Store

ACCOUNT = "1234AB"
ALARM = ArcAlarm(ACCOUNT, ContactId(1, 356, 1, 17), position=(55.67, 12.58, 4.0), text="Anna, Site")


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def udp_arc():
    port = _udp_port()
    events: list[dict] = []
    client = SIAClient("127.0.0.1", port, [SIAAccount(account_id=ACCOUNT)], lambda e: events.append(decoded_sia_event(e)),
                       protocol=CommunicationsProtocol.UDP)  # fmt: skip
    client.start()
    try:
        yield port, events
    finally:
        client.stop()


def test_udp_receiver_takes_alarms_and_polls(udp_arc, wait_until) -> None:
    port, events = udp_arc
    receiver = ArcReceiver("udp", "127.0.0.1", port, timeout_s=10.0, max_xdata_blocks=1, protocol="udp")  # no resend under load
    client = ArcClient([receiver], MemorySequences())
    result = client.send(ALARM)
    assert result.reply.kind == "ACK" and result.receiver == "udp"
    assert client.poll(receiver, ACCOUNT).reply.kind == "ACK"
    assert wait_until(lambda: len(events) == 2, 5)
    # pysiaalarm records a frame after it ACKs it, on its own thread: the poll's record can come
    # first, so pick the alarm out by what it is, not by where it stands.
    alarms = [e for e in events if e["code"] is not None]
    polls = [e for e in events if e["code"] is None]
    assert len(alarms) == 1 and len(polls) == 1
    assert (alarms[0]["code"], alarms[0]["qualifier"], alarms[0]["zone"]) == ("356", 1, 17)
    assert alarms[0]["lat"] == pytest.approx(55.67, abs=1e-4)


def test_udp_receiver_silent_is_unavailable_then_the_next_receiver_gets_it() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    tcp_port = free_port()
    try:
        dead = ArcReceiver("primary", "127.0.0.1", silent.getsockname()[1], timeout_s=0.3, protocol="udp")
        with LocalArc(ACCOUNT, tcp_port) as arc:
            live = ArcReceiver("secondary", "127.0.0.1", tcp_port, timeout_s=2.0, max_xdata_blocks=1)
            result = ArcClient([dead, live], MemorySequences(), attempts_per_receiver=1).send(ALARM)
            assert result.receiver == "secondary" and result.log[0].outcome == "timeout"
            assert arc.wait_event(2.0) is not None
        with pytest.raises(ArcUnavailableError):
            ArcClient([dead], MemorySequences(), attempts_per_receiver=1).send(ALARM)
    finally:
        silent.close()


def test_receiver_protocol_is_validated() -> None:
    with pytest.raises(ValidationError, match="protocol"):
        ArcReceiver("x", "127.0.0.1", 1, protocol="sctp")
    with pytest.raises(ValidationError, match="poll_interval_s"):
        ArcReceiver("x", "127.0.0.1", 1, poll_interval_s=-1)


def test_send_with_a_given_sequence_repeats_it(wait_until) -> None:
    port = free_port()
    with LocalArc(ACCOUNT, port) as arc:
        # A generous receiver timeout: under load a slow ACK would make the client resend (the
        # same frame, legitimately), and this test counts frames.
        client = ArcClient([ArcReceiver("p", "127.0.0.1", port, max_xdata_blocks=1, timeout_s=10.0)], MemorySequences())
        assert client.send(ALARM, sequence=42).sequence == 42
        assert client.send(ALARM, sequence=42).sequence == 42  # a resend: same number
        assert client.send(ALARM).sequence == 1  # the counter was not used
        # pysiaalarm hands frames to its callback from its own threads: compare as a multiset.
        assert wait_until(lambda: sorted(e["sequence"] for e in arc.events) == ["0001", "0042", "0042"], 15), arc.events
    for bad in (0, 10000, True, "7"):
        with pytest.raises(ValidationError, match="sequence"):
            client.send(ALARM, sequence=bad)  # type: ignore[arg-type]


def test_event_sequence_is_taken_once_and_kept() -> None:
    r = fakeredis.FakeRedis()
    a, b = Store(r), Store(r)  # two relays
    a.r.hset("lw:{lw-0001}:event:lw-0001:7", "arc", "pending")
    first = a.event_sequence("lw-0001:7", ACCOUNT)
    assert b.event_sequence("lw-0001:7", ACCOUNT) == first  # the other relay resends with it
    assert a.event_sequence("lw-0001:8", ACCOUNT) == first + 1
    r.set(f"lw:arcseq:{ACCOUNT}", 9999)
    assert a.event_sequence("lw-0001:9", ACCOUNT) == 1  # wraps 9999 → 1


def test_null_polls_report_a_receiver_that_fails_and_recovers() -> None:
    port = free_port()
    receiver = ArcReceiver("primary", "127.0.0.1", port, timeout_s=0.5, poll_interval_s=60)
    seen = []
    lt = LinkTester(ArcClient([receiver], MemorySequences(), attempts_per_receiver=1), Store(fakeredis.FakeRedis()),
                    account=ACCOUNT, poll_intervals={"primary": 60}, on_poll=seen.append)  # fmt: skip
    assert lt.status()["primary"].ok is None
    st = lt.poll_once(receiver)  # nobody listens
    assert (st.ok, st.failures) == (False, 1) and "primary" in st.error
    assert lt.poll_once(receiver).failures == 2
    with LocalArc(ACCOUNT, port) as arc:
        st = lt.poll_once(receiver)
        assert (st.ok, st.failures, st.error) == (True, 0, "")
        assert arc.wait_event(2.0, sequence="0000") is not None  # a NULL frame
    assert [s.ok for s in seen] == [False, False, True]


def test_null_polls_run_on_their_interval(wait_until) -> None:
    port = free_port()
    with LocalArc(ACCOUNT, port) as arc:
        receiver = ArcReceiver("primary", "127.0.0.1", port, timeout_s=1.0)
        lt = LinkTester(ArcClient([receiver], MemorySequences()), Store(fakeredis.FakeRedis()), account=ACCOUNT,
                        poll_intervals={"primary": 0.1})  # fmt: skip
        lt.start()
        try:
            assert wait_until(lambda: sum(e["sequence"] == "0000" for e in arc.events) >= 3, 5)
        finally:
            lt.stop()
        assert lt.status()["primary"].ok is True


def test_periodic_test_is_sent_once_per_period_however_many_relays(wait_until) -> None:
    port = free_port()
    r = fakeredis.FakeRedis()
    with LocalArc(ACCOUNT, port) as arc:
        receiver = ArcReceiver("primary", "127.0.0.1", port, max_xdata_blocks=1)
        relays = [LinkTester(ArcClient([receiver], MemorySequences()), Store(r), account=ACCOUNT, test_mode="relay",
                             test_interval_s=3600) for _ in range(3)]  # fmt: skip
        now = 3600.0 * 498_889  # the start of a period
        assert sum(lt.test_once(now) for lt in relays) == 1
        assert sum(lt.test_once(now + 1800) for lt in relays) == 0  # same period
        assert sum(lt.test_once(now + 3600) for lt in relays) == 1  # next period
        assert wait_until(lambda: [(e["code"], e["zone"]) for e in arc.events] == [("602", 0), ("602", 0)], 5)


def test_periodic_test_per_device_uses_each_devices_account_and_zone(wait_until) -> None:
    port = free_port()
    store = Store(fakeredis.FakeRedis())
    for dev, zone in (("lw-0001", 17), ("lw-0002", 18)):
        store.register(DeviceEntry(dev, ACCOUNT, zone, "W", "S"))
    results = []
    with LocalArc(ACCOUNT, port) as arc:
        receiver = ArcReceiver("primary", "127.0.0.1", port, max_xdata_blocks=1)
        lt = LinkTester(ArcClient([receiver], MemorySequences()), store, account=ACCOUNT, test_mode="device",
                        test_interval_s=86400, on_test=lambda ok, d: results.append(ok))  # fmt: skip
        assert lt.test_once(time.time()) == 2
        assert wait_until(lambda: sorted((e["code"], e["zone"]) for e in arc.events) == [("602", 17), ("602", 18)], 5)
    assert results == [True, True] and lt.last_test is not None and lt.last_test[1] is True
    assert lt.test_once(time.time()) == 0  # already sent this period


def test_failed_periodic_test_is_reported() -> None:
    receiver = ArcReceiver("primary", "127.0.0.1", free_port(), timeout_s=0.3)
    lt = LinkTester(ArcClient([receiver], MemorySequences(), attempts_per_receiver=1), Store(fakeredis.FakeRedis()),
                    account=ACCOUNT, test_mode="relay")  # fmt: skip
    assert lt.test_once(1_796_000_000.0) == 1
    assert lt.last_test is not None and lt.last_test[1] is False
    with pytest.raises(ValueError):
        LinkTester(lt.arc, lt.store, account=ACCOUNT, test_mode="sometimes")
