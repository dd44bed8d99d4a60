"""Channels and texts for contacts (issue 4): templates in six languages, SMS replies, SMS
through the relay's modem (the device's driver, over a pty to the simulator) byte for byte
incl. Arabic UCS2, inbound SMS (SMS-DELIVER PDUs, +CMTI, AT+CMGL/CMGR/CMGD), e-mail through
apprise to a local SMTP server (aiosmtpd), and failures that never leak secrets."""

from __future__ import annotations

import email
import email.header
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from modem import sms
from modem.at import Modem
from modem.simulator import ModemSimulator
from labstack.servers import free_port
from relay.notify import NotifyError
from relay.notify.gateways import AppriseChannel, redact, smtp_url
from relay.notify.sms_modem import ModemSmsChannel, parse_cmgl
from relay.notify.templates import KIND_NAMES, MESSAGES, SMS_NOTE_CHARS, MessageContext, parse_reply, render

LANGS = ("da", "en", "pl", "ro", "uk", "ar")
CTX = MessageContext(kind="silent_panic", worker="Anna Hansen", site="Vaskeriet", address="Vestergade 12",
                     occurred_at=1_796_000_000.0, lat=55.668571, lon=12.576131, escape_routes="Nord " * 60,
                     alarm_system="Panel by the back door", ref=17, alarm_id="lw-0001:5", by="Per Jensen",
                     timezone="Europe/Copenhagen", refs=((17, "Anna Hansen"), (18, "Ole")))
ARABIC = render("alarm", "ar", CTX).body


# ----------------------------------------------------------------------------- templates


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("message", MESSAGES)
def test_every_message_renders_in_every_language(lang: str, message: str) -> None:
    r = render(message, lang, CTX)
    assert "{" not in r.body and "{" not in r.subject and r.body.strip()
    if message == "alarm":
        assert KIND_NAMES[lang]["silent_panic"] in r.body and "Anna Hansen" in r.body
        assert "https://maps.google.com/?q=55.66857,12.57613" in r.body and "17" in r.body
        assert "Vestergade 12" in r.body and "2026-11-30 01:53 CET" in r.body  # site time
    if message == "acknowledged":
        assert "Per Jensen" in r.body


def test_sms_caps_notes_email_keeps_them_and_names_the_alarm() -> None:
    sms_body, mail = render("alarm", "en", CTX).body, render("alarm", "en", CTX, channel="email").body
    assert max(len(line) for line in sms_body.splitlines()) <= len("Escape routes: ") + SMS_NOTE_CHARS
    assert "Nord " * 59 in mail and mail.endswith("lonewatch alarm lw-0001:5")
    no_pos = render("alarm", "da", MessageContext(kind="man_down", worker="Ole", occurred_at=0)).body
    assert "Position: ukendt" in no_pos and "Sted" not in no_pos  # missing fields leave no empty lines
    assert render("alarm", "xx", CTX).body.startswith("ALARM: Silent alarm")  # unknown language → English


@pytest.mark.parametrize(("text", "expected"), [
    ("OK", (True, None)), ("ok 17", (True, 17)), ("OK17", (True, 17)), ("Ja, jeg kommer", (True, None)),
    ("TAK", (True, None)), ("da", (True, None)), ("Так", (True, None)), ("نعم ١٧", (True, 17)), ("18", (True, 18)),
    ("1", (True, None)), ("Nej", (False, None)), ("who is this?", (False, None)), ("", (False, None)),
])
def test_parse_reply(text: str, expected: tuple[bool, int | None]) -> None:
    assert parse_reply(text) == expected


# ----------------------------------------------------------------------------- SMS-DELIVER PDUs


def test_deliver_pdu_of_a_real_phone_decodes() -> None:
    # A widely published SMS-DELIVER ("How are you?" from +31641600986, 2002-08-26 19:37:41).
    d = sms.decode_deliver("07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07")
    assert (d.number, d.text, d.encoding) == ("+31641600986", "How are you?", "gsm7")
    assert d.timestamp == datetime(2002, 8, 26, 19, 37, 41, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["OK", "نعم", "Ja æøå €", "x" * 200, "ТАК " * 40])
def test_deliver_round_trip(text: str) -> None:
    ts = datetime(2026, 11, 30, 23, 5, 28, tzinfo=timezone(timedelta(hours=-5)))
    parts = [sms.decode_deliver(p) for p in sms.encode_deliver("+4520110001", text, timestamp=ts, reference=9)]
    assert "".join(p.text for p in parts) == text and {p.timestamp for p in parts} == {ts}
    assert len(parts) == 1 or [p.concat for p in parts] == [(9, len(parts), i + 1) for i in range(len(parts))]


@pytest.mark.parametrize("pdu", ["", "00", "0791", "07911326040000F0240B91134661", "ZZ"])
def test_bad_deliver_pdus_raise_sms_error(pdu: str) -> None:
    with pytest.raises(sms.SmsError):
        sms.decode_deliver(pdu)


def test_submit_pdu_is_not_a_deliver() -> None:
    with pytest.raises(sms.SmsError, match="not an SMS-DELIVER"):
        sms.decode_deliver(sms.encode_submit("+4520110001", "hi")[0].hex)


def test_parse_cmgl_skips_headers_without_pdu() -> None:
    assert parse_cmgl(["+CMGL: 1,0,,25", "0011AA", "+CMGL: 2,0,,3", "+CMGL: x,0,,3", "+CMGL: 4,1,,2", "FF"]) == [
        (1, "0011AA"), (4, "FF")]


# ----------------------------------------------------------------------------- modem (simulator)


@pytest.fixture
def sim() -> Iterator[ModemSimulator]:
    with ModemSimulator(flavour="sim7600") as s:
        yield s


@pytest.fixture
def driver(sim: ModemSimulator) -> Iterator[Modem]:
    m = Modem(sim.port, flavour="sim7600")
    m.open()
    m.init()
    m.command("AT+CMGF=0")
    yield m
    m.close()


def test_simulator_stores_announces_lists_reads_and_deletes(sim: ModemSimulator, driver: Modem, wait_until) -> None:
    urcs: list[str] = []
    driver.urc_handler = urcs.append
    indexes = sim.deliver_sms("+4520110001", "OK 17")
    assert indexes == [1] and wait_until(lambda: urcs == ['+CMTI: "SM",1'], 5)
    header, pdu = driver.command("AT+CMGL=4")
    assert header.startswith("+CMGL: 1,0,,") and sms.decode_deliver(pdu).text == "OK 17"
    assert driver.command("AT+CMGL=0") == []  # listing marked it read
    assert driver.command("AT+CMGR=1")[0].startswith("+CMGR: 1,,")
    driver.command("AT+CMGD=1")
    assert sim.stored_sms == {}
    with pytest.raises(Exception, match="321"):
        driver.command("AT+CMGR=1")


def test_simulator_inbound_edge_cases(sim: ModemSimulator, driver: Modem) -> None:
    driver.command("AT+CNMI=2,0,0,0,0")  # no announcements
    sim.sms_capacity = 2
    assert sim.deliver_sms("+4520110001", "x" * 200) == [1, 2]  # two parts
    with pytest.raises(OverflowError):
        sim.deliver_sms("+4520110001", "one more")
    driver.command("AT+CMGD=1,4")  # delete all
    assert sim.stored_sms == {}
    driver.command("AT+CMGF=1")
    with pytest.raises(Exception, match="302"):  # text-mode reading is not simulated
        driver.command("AT+CMGL=4")


@pytest.fixture
def channel(sim: ModemSimulator) -> Iterator[ModemSmsChannel]:
    got: list[tuple[str, str, float]] = []
    ch = ModemSmsChannel(sim.port, flavour="sim7600", on_reply=lambda n, t, at: got.append((n, t, at)), poll_s=0.2)
    ch.replies = got  # type: ignore[attr-defined]
    ch.start()
    yield ch
    ch.stop()


def test_arabic_alarm_sms_arrives_byte_for_byte(sim: ModemSimulator, channel: ModemSmsChannel) -> None:
    result = channel.send("+4520110002", "subject unused", ARABIC)
    assert result.ok, result
    parts = [sms.decode_submit(p) for p in sim.sent_pdus]
    assert {p.encoding for p in parts} == {"ucs2"} and len(parts) > 1
    assert {p.number for p in parts} == {"+4520110002"}
    text = "".join(p.text for p in sorted(parts, key=lambda p: p.concat[2]))  # type: ignore[index]
    assert text.encode("utf-8") == ARABIC.encode("utf-8")
    # The user data on the wire is exactly the UTF-16 (UCS2) of the text, right-to-left marks and all.
    wire = b"".join(bytes.fromhex(p)[-len(q.text.encode("utf-16-be")):] for p, q in zip(sim.sent_pdus, parts))
    assert wire == ARABIC.encode("utf-16-be")


def test_danish_sms_goes_gsm7(sim: ModemSimulator, channel: ModemSmsChannel) -> None:
    body = render("acknowledged", "da", CTX).body
    assert channel.send("+4520110001", "", body).ok
    [(number, text)] = sim.sent_sms
    assert (number, text) == ("+4520110001", body) and sms.decode_submit(sim.sent_pdus[0]).encoding == "gsm7"


def test_replies_are_read_joined_and_deleted(sim: ModemSimulator, channel: ModemSmsChannel, wait_until) -> None:
    long_reply = "نعم، أنا في الطريق. " * 6
    sim.deliver_sms("+4520110002", long_reply)
    sim.deliver_sms("+4520110001", "OK 17")
    assert wait_until(lambda: len(channel.replies) == 2, 10)  # type: ignore[attr-defined]
    assert {(n, t) for n, t, _ in channel.replies} == {("+4520110002", long_reply), ("+4520110001", "OK 17")}  # type: ignore[attr-defined]
    assert wait_until(lambda: sim.stored_sms == {}, 5)


def test_a_reply_that_cannot_be_recorded_stays_on_the_sim(sim: ModemSimulator) -> None:
    calls: list[str] = []

    def failing(number: str, text: str, at: float) -> None:
        calls.append(text)
        if len(calls) == 1:
            raise RuntimeError("redis down")

    ch = ModemSmsChannel(sim.port, flavour="sim7600", on_reply=failing, poll_s=60)
    try:
        sim.deliver_sms("+4520110001", "OK")
        assert ch.poll_inbox() == 0 and len(sim.stored_sms) == 1
        assert ch.poll_inbox() == 1 and sim.stored_sms == {} and calls == ["OK", "OK"]
    finally:
        ch.stop()


def test_undecodable_stored_sms_is_dropped_not_fatal(sim: ModemSimulator) -> None:
    ch = ModemSmsChannel(sim.port, flavour="sim7600", on_reply=lambda *a: None, poll_s=60)
    try:
        sim.deliver_sms("+4520110001", "OK")
        sim._stored_sms[1][1] = sms.encode_submit("+4520110001", "not a deliver")[0].hex  # a corrupt store entry
        assert ch.poll_inbox() == 0 and ch.undecodable == 1 and sim.stored_sms == {}
    finally:
        ch.stop()


def test_modem_failure_is_a_delivery_result(sim: ModemSimulator) -> None:
    ch = ModemSmsChannel(sim.port, flavour="sim7600", poll_s=60, send_timeout_s=2)
    try:
        sim.submit_error_next("+CMS ERROR: 331")
        result = ch.send("+4520110001", "", "hello")
        assert not result.ok and "331" in result.detail
        assert not ch.send("+4520110001", "", "").ok  # empty text cannot be encoded
        sim.vanish()
        assert not ch.send("+4520110001", "", "hello").ok
    finally:
        ch.stop()


# ----------------------------------------------------------------------------- e-mail via apprise


class Sink:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    from aiosmtpd.controller import Controller

    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


def test_arabic_email_arrives_intact(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    ch = AppriseChannel("email", smtp_url("127.0.0.1", port, security="none", sender="alarm@lonewatch.example"))
    rendered = render("alarm", "ar", CTX, channel="email")
    result = ch.send("omar@example.org", rendered.subject, rendered.body)
    assert result.ok, result
    [envelope] = sink.messages
    assert envelope.rcpt_tos == ["omar@example.org"] and envelope.mail_from == "alarm@lonewatch.example"
    msg = email.message_from_bytes(envelope.content)
    assert str(email.header.make_header(email.header.decode_header(msg["Subject"]))) == rendered.subject
    [part] = [p for p in msg.walk() if p.get_content_type() == "text/plain"]
    body = part.get_payload(decode=True).decode(part.get_content_charset())
    assert body.replace("\r\n", "\n").rstrip("\n").encode("utf-8") == rendered.body.encode("utf-8")


def test_smtp_down_fails_without_leaking_the_password() -> None:
    url = smtp_url("127.0.0.1", free_port(), security="none", username="relay", password="s3cret-pw",
                   sender="alarm@lonewatch.example")
    result = AppriseChannel("email", url).send("per@example.org", "s", "b")
    assert not result.ok and "s3cret-pw" not in result.detail


def test_bad_channel_configuration_is_refused() -> None:
    with pytest.raises(NotifyError, match="needs {to}"):
        AppriseChannel("sms-gateway", "twilio://sid:token@+4570000000/")
    with pytest.raises(NotifyError, match="does not understand"):
        AppriseChannel("email", "nosuchscheme://x/{to}")
    with pytest.raises(NotifyError):
        smtp_url("h", 25, security="tls", sender="a@b.c")
    assert redact("twilio://ACsid:tok3n@+4570000000/x?pass=abc&to=1") == "twilio://<hidden>@+4570000000/x?pass=<hidden>&to=1"


def test_relay_config_builds_the_channels(tmp_path, smtp: tuple[Sink, int], sim: ModemSimulator) -> None:
    from relay.app import build_escalation
    from relay.config import RelayConfig
    from relay.store import Store

    _, port = smtp
    cfg = RelayConfig.from_dict({
        "relay": {"instance": "t"}, "mqtt": {},
        "notify": {"sms_gateway_url": "json://127.0.0.1:9/{to}", "smtp": {"host": "127.0.0.1", "port": port,
                   "security": "none", "from": "alarm@lonewatch.example"}},
        "modem": {"port": sim.port, "flavour": "sim7600"},
    })
    esc = build_escalation(cfg, Store.from_url("redis://127.0.0.1:9/0"))
    assert [c.name for c in esc.channels["sms"]] == ["sms-modem", "sms-gateway"]
    assert [c.name for c in esc.channels["email"]] == ["email"]
    assert esc.channels["sms"][0].on_reply == esc.handle_reply  # type: ignore[attr-defined]
    assert "json://" not in repr(cfg.notify)  # apprise URLs are secrets
