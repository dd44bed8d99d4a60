"""relay.arc against a real pysiaalarm receiver (threaded TCP, plain and AES accounts) and
against small scripted TCP receivers (NAK with a skewed clock, DUH, garbage, silence)."""

from __future__ import annotations

import queue
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from pysiaalarm import SIAAccount, SIAClient
from pysiaalarm.event import SIAEvent

from protocol.errors import ValidationError
from protocol.sia import (
    ContactId,
    SiaFrame,
    decode_frame,
    encode_frame,
    format_timestamp,
    parse_position,
    parse_position_text,
    wrap_frame,
)
from relay.arc import (
    ArcAlarm,
    ArcClient,
    ArcError,
    ArcReceiver,
    ArcRejectedError,
    ArcUnavailableError,
    MemorySequences,
    plan_xdata,
)

KEY128 = "0123456789ABCDEF"  # pysiaalarm style: the ASCII bytes of the string are the key
KEY256 = "00112233445566778899AABBCCDDEEFF"
POSITION = (55.66857, 12.57613, 8.0)
FIXED_NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z, the scripted receivers' clock


# ----------------------------------------------------------------------------- receivers
class PysiaReceiver:
    """pysiaalarm's threaded TCP server on a free port; events arrive in ``events``."""

    def __init__(self) -> None:
        self.events: queue.Queue[SIAEvent] = queue.Queue()
        accounts = [SIAAccount("1234"), SIAAccount("ABC123", key=KEY128), SIAAccount("BEEF", key=KEY256)]
        self.client = SIAClient("127.0.0.1", 0, accounts, self.events.put)
        self.port: int = self.client.sia_server.server_address[1]

    def event(self) -> SIAEvent:
        return self.events.get(timeout=2)  # pysiaalarm answers first, then calls back

    def receiver(self, name: str = "pysia", **kwargs: object) -> ArcReceiver:
        return ArcReceiver(name, "127.0.0.1", self.port, timeout_s=1.0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pysia() -> Iterator[PysiaReceiver]:
    receiver = PysiaReceiver()
    receiver.client.start()
    try:
        yield receiver
    finally:
        receiver.client.stop()


@pytest.fixture
def arc(pysia: PysiaReceiver) -> PysiaReceiver:
    while not pysia.events.empty():  # leftovers of an earlier test
        pysia.events.get_nowait()
    return pysia


class ScriptedReceiver:
    """A TCP receiver that answers each frame with ``script(frame_bytes, index)`` (None = stay
    silent). Frames are recorded in ``frames``."""

    def __init__(self, script: Callable[[bytes, int], bytes | None]) -> None:
        self.frames: list[bytes] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = b""
                while b"\r" not in data:
                    chunk = self.request.recv(1024)
                    if not chunk:
                        return
                    data += chunk
                outer.frames.append(data)
                answer = script(data, len(outer.frames) - 1)
                if answer is None:
                    time.sleep(0.5)
                else:
                    self.request.sendall(answer)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02})

    def receiver(self, name: str, **kwargs: object) -> ArcReceiver:
        return ArcReceiver(name, "127.0.0.1", self.port, **{"timeout_s": 0.3, **kwargs})  # type: ignore[arg-type]


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


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reply(kind: str, frame: bytes, *, when: datetime | None = None, sequence: int | None = None) -> bytes:
    d = decode_frame(frame)
    seq = d.sequence if sequence is None else sequence
    ts = "_" + format_timestamp(when) if when else ""
    if kind == "NAK":  # DC-09 / pysiaalarm NAK shape: no echo, the receiver's time
        return wrap_frame(f'"NAK"0000R{d.receiver}L{d.line}A0[]{ts}')
    return encode_frame(SiaFrame(kind, seq, d.account, receiver=d.receiver, line=d.line))


def client(*receivers: ArcReceiver, **kwargs: object) -> ArcClient:
    sleeps: list[float] = []
    arc_client = ArcClient(list(receivers), MemorySequences(), backoff_s=0.01, sleep=sleeps.append, **kwargs)  # type: ignore[arg-type]
    arc_client.sleeps = sleeps  # type: ignore[attr-defined]
    return arc_client


PANIC = ArcAlarm("1234", ContactId(1, 120, 1, 5))


# ----------------------------------------------------------------------------- pysiaalarm
def test_plain_adm_cid_decoded_exactly(arc: PysiaReceiver) -> None:
    result = client(arc.receiver()).send(ArcAlarm("1234", ContactId(1, 122, 3, 42)))
    assert (result.receiver, result.sequence, result.reply.kind, result.attempts, result.degraded) == (
        "pysia", 1, "ACK", 1, False)
    event = arc.event()
    assert (event.account, event.event_type, event.event_qualifier, event.ri, event.partition, event.code) == (
        "1234", "122", "1", "042", "03", "HA")
    assert event.sequence == "0001" and event.timestamp is not None


@pytest.mark.parametrize(("account", "key"), [("ABC123", KEY128.encode()), ("BEEF", KEY256.encode().hex())],
                         ids=["aes128-bytes", "aes256-hex"])
def test_encrypted_adm_cid_with_position_as_text(arc: PysiaReceiver, account: str, key: str | bytes) -> None:
    alarm = ArcAlarm(account, ContactId(3, 356, 2, 7), position=POSITION, text="Anna Hansen, Kødbyen")
    result = client(arc.receiver(key=key, max_xdata_blocks=1)).send(alarm)
    assert result.reply.kind == "ACK" and result.reply.encrypted and result.attempts == 1
    assert result.reply.timestamp is not None  # decrypted from pysiaalarm's "*ACK"
    event = arc.event()
    assert event.encrypted and event.account == account
    assert (event.event_type, event.event_qualifier, event.ri, event.partition, event.code) == ("356", "3", "007", "02", "YK")
    (text,) = [x.value for x in event.extended_data if x.identifier == "I"]
    found = parse_position_text(text)
    assert (found.lat, found.lon, found.accuracy_m, found.text) == (55.66857, 12.57613, 8.0, "Anna Hansen, Koedbyen")
    assert not result.degraded and result.xdata_sent == ("I" + text,)  # the configured cap, not a fallback


def test_adm_cid_with_all_extended_data_is_trimmed_after_nak_then_remembered(arc: PysiaReceiver) -> None:
    late = datetime.now(timezone.utc) - timedelta(minutes=5)
    alarm = ArcAlarm("1234", ContactId(1, 120, 1, 5), position=POSITION, occurred_at=late, text="Anna")
    arc_client = client(arc.receiver())
    first = arc_client.send(alarm)
    assert [a.outcome for a in first.log] == ["NAK", "ACK"]
    assert [a.xdata_blocks for a in first.log] == [4, 1]
    assert {a.sequence for a in first.log} == {first.sequence}  # a repeat keeps its sequence
    assert first.degraded
    event = arc.event()
    assert (event.code, event.ri) == ("PA", "005")
    (text,) = [x.value for x in event.extended_data]
    assert parse_position_text(text).lat == POSITION[0] and parse_position_text(text).lon == POSITION[1]
    second = arc_client.send(alarm)  # the receiver's limit is remembered: no NAK round trip
    assert [a.outcome for a in second.log] == ["ACK"] and second.sequence == first.sequence + 1
    assert arc.event().sequence == "0002"


def test_sia_dcs_keeps_every_extended_block(arc: PysiaReceiver) -> None:
    late = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    alarm = ArcAlarm("1234", ContactId(1, 120, 1, 17), fmt="SIA-DCS", position=POSITION, occurred_at=late,
                     text="Anna [site] | B")
    result = client(arc.receiver()).send(alarm)
    assert (result.attempts, result.degraded) == (1, False)
    event = arc.event()
    assert (event.code, event.ri, event.message) == ("PA", "1", "017")
    blocks = {x.identifier: x.value for x in event.extended_data}
    assert set(blocks) == {"X", "Y", "H", "I"}
    lat, lon = parse_position("X" + blocks["X"], "Y" + blocks["Y"])
    assert lat == pytest.approx(POSITION[0], abs=2e-6) and lon == pytest.approx(POSITION[1], abs=2e-6)
    assert blocks["H"] == "03:04:05,01-02-2026" and blocks["I"] == "Anna (site) / B"


def test_clock_skew_against_pysiaalarm_is_corrected(arc: PysiaReceiver) -> None:
    arc_client = client(arc.receiver(), clock=lambda: time.time() - 3600)
    result = arc_client.send(PANIC)
    assert [a.outcome for a in result.log] == ["NAK", "ACK"]
    assert arc_client.clock_offset("pysia") == pytest.approx(3600, abs=5)
    assert arc.event().code == "PA"
    assert [a.outcome for a in arc_client.send(PANIC).log] == ["ACK"]  # offset kept
    arc.event()


def test_link_poll(arc: PysiaReceiver) -> None:
    result = client(arc.receiver()).poll(arc.receiver(), "1234")
    assert (result.reply.kind, result.sequence) == ("ACK", 0)
    event = arc.event()
    assert (event.message_type.value, event.code) == ("NULL", "RP")


def test_unknown_account_gets_bare_nak_and_is_rejected(arc: PysiaReceiver) -> None:
    with pytest.raises(ArcRejectedError) as info:
        client(arc.receiver()).send(ArcAlarm("999", ContactId(1, 120)))
    assert [a.outcome for a in info.value.attempts] == ["NAK"]


# ----------------------------------------------------------------------------- scripted
def test_nak_with_skewed_time_then_ack(scripted) -> None:  # type: ignore[no-untyped-def]
    receiver_time = datetime.fromtimestamp(FIXED_NOW + 3600, timezone.utc)

    def script(frame: bytes, _index: int) -> bytes:
        sent = decode_frame(frame).timestamp
        assert sent is not None
        if abs((sent - receiver_time).total_seconds()) > 20:
            return reply("NAK", frame, when=receiver_time)
        return reply("ACK", frame)

    fake = scripted(script)
    arc_client = client(fake.receiver("fake"), clock=lambda: FIXED_NOW)
    result = arc_client.send(PANIC)
    assert arc_client.clock_offset("fake") == 3600
    assert [a.outcome for a in result.log] == ["NAK", "ACK"] and not result.degraded
    first, second = (decode_frame(f) for f in fake.frames)
    assert first.sequence == second.sequence == result.sequence
    assert second.timestamp == receiver_time and first.contact_id() == second.contact_id()


def test_always_duh_goes_to_next_receiver(scripted, arc: PysiaReceiver) -> None:  # type: ignore[no-untyped-def]
    duh = scripted(lambda frame, _i: reply("DUH", frame))
    result = client(duh.receiver("duh"), arc.receiver()).send(PANIC)
    assert result.receiver == "pysia"
    assert [(a.receiver, a.outcome) for a in result.log] == [("duh", "DUH"), ("pysia", "ACK")]
    assert len(duh.frames) == 1  # not re-sent blindly
    assert arc.event().code == "PA"


def test_all_duh_is_rejected(scripted) -> None:  # type: ignore[no-untyped-def]
    a = scripted(lambda frame, _i: reply("DUH", frame))
    b = scripted(lambda frame, _i: reply("DUH", frame))
    with pytest.raises(ArcRejectedError) as info:
        client(a.receiver("a"), b.receiver("b")).send(PANIC)
    assert [x.outcome for x in info.value.attempts] == ["DUH", "DUH"]
    assert isinstance(info.value, ArcError) and info.value.sequence == 1


def test_primary_down_secondary_gets_it(arc: PysiaReceiver) -> None:
    down = ArcReceiver("primary", "127.0.0.1", closed_port(), timeout_s=0.3)
    arc_client = client(down, arc.receiver("secondary"))
    result = arc_client.send(PANIC)
    assert result.receiver == "secondary"
    assert [(a.receiver, a.outcome) for a in result.log] == [("primary", "refused")] * 3 + [("secondary", "ACK")]
    assert arc_client.sleeps == [0.01, 0.02]  # type: ignore[attr-defined]
    assert arc.event().account == "1234"


def test_all_down_raises_unavailable_with_log() -> None:
    a = ArcReceiver("a", "127.0.0.1", closed_port(), timeout_s=0.3)
    b = ArcReceiver("b", "127.0.0.1", closed_port(), timeout_s=0.3)
    arc_client = client(a, b, attempts_per_receiver=2)
    with pytest.raises(ArcUnavailableError) as info:
        arc_client.send(PANIC)
    assert [(x.receiver, x.outcome) for x in info.value.attempts] == [("a", "refused")] * 2 + [("b", "refused")] * 2
    assert isinstance(info.value, ConnectionError)


def test_silence_garbage_and_foreign_ack_are_not_acks(scripted, arc: PysiaReceiver) -> None:  # type: ignore[no-untyped-def]
    silent = scripted(lambda frame, _i: None)
    garbage = scripted(lambda frame, _i: b"\n\r")  # what pysiaalarm answers to a CRC failure
    foreign = scripted(lambda frame, i: reply("ACK", frame, sequence=decode_frame(frame).sequence + 1))
    receivers = [silent.receiver("silent", timeout_s=0.1), garbage.receiver("garbage"),
                 foreign.receiver("foreign"), arc.receiver()]
    result = client(*receivers, attempts_per_receiver=1).send(PANIC)
    assert [(a.receiver, a.outcome) for a in result.log] == [
        ("silent", "timeout"), ("garbage", "garbage"), ("foreign", "mismatch"), ("pysia", "ACK")]
    assert arc.event().code == "PA"


def test_format_nak_from_scripted_receiver_degrades_to_none(scripted) -> None:  # type: ignore[no-untyped-def]
    def script(frame: bytes, _index: int) -> bytes:
        return reply("NAK" if decode_frame(frame).xdata else "ACK", frame,
                     when=datetime.fromtimestamp(FIXED_NOW, timezone.utc))

    fake = scripted(script)
    alarm = ArcAlarm("1234", ContactId(1, 120, 1, 5), position=POSITION, text="Anna")
    result = client(fake.receiver("fake"), clock=lambda: FIXED_NOW).send(alarm)
    assert [a.xdata_blocks for a in result.log] == [3, 1, 0]
    assert result.degraded and result.xdata_sent == () and result.reply.kind == "ACK"


# ----------------------------------------------------------------------------- pure parts
def test_plan_xdata_priorities() -> None:
    late = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    full = ArcAlarm("1234", ContactId(1, 120), position=POSITION, occurred_at=late, text="Anna")
    ids = lambda blocks: "".join(b[0] for b in blocks)  # noqa: E731
    assert [ids(plan_xdata(full, n)) for n in (None, 4, 3, 2, 1, 0)] == ["XYHI", "XYHI", "XYH", "XY", "I", ""]
    assert plan_xdata(full, 1) == ("I55.66857N 12.57613E +-8m Anna",)
    no_pos = ArcAlarm("1234", ContactId(1, 120), occurred_at=late, text="Anna")
    assert [ids(plan_xdata(no_pos, n)) for n in (None, 2, 1, 0)] == ["HI", "HI", "H", ""]


def test_memory_sequences_wrap_per_account() -> None:
    seq = MemorySequences(start=9998)
    assert [seq.next_sequence("1234") for _ in range(4)] == [9998, 9999, 1, 2]
    assert seq.next_sequence("ABC") == 9998


@pytest.mark.parametrize(
    "build",
    [lambda: ArcAlarm("12", ContactId(1, 120)), lambda: ArcAlarm("1234", ContactId(1, 120), fmt="CID"),
     lambda: ArcAlarm("1234", ContactId(1, 120), position=(91.0, 0.0, None)),
     lambda: ArcAlarm("1234", ContactId(1, 120), occurred_at=datetime(2026, 1, 1)),
     lambda: ArcAlarm("1234", ContactId(1, 999), fmt="SIA-DCS"),
     lambda: ArcReceiver("x", "h", 0), lambda: ArcReceiver("x", "h", 1, key="short"),
     lambda: ArcReceiver("x", "h", 1, receiver_no="XYZ"), lambda: ArcReceiver("x", "h", 1, timeout_s=0),
     lambda: ArcClient([], MemorySequences()),
     lambda: ArcClient([ArcReceiver("x", "h", 1), ArcReceiver("x", "h", 2)], MemorySequences())],
)
def test_bad_config_rejected(build: Callable[[], object]) -> None:
    with pytest.raises(ValidationError):
        build()


def test_receiver_repr_hides_key() -> None:
    assert KEY128 not in repr(ArcReceiver("x", "h", 1, key=KEY128.encode()))
