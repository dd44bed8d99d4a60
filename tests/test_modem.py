"""Modem driver tests through the real serial path: ``Modem`` opens ``serial.Serial(sim.port)``
on the simulator's pty (SPEC §2 modem driver). Reply shapes follow the SIM7600 and Quectel EC25
AT manuals; no test asserts on timing."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modem import sms
from modem.at import (
    CmeError,
    CmsError,
    GnssFix,
    Modem,
    ModemError,
    ModemGone,
    ModemReplyError,
    ModemTimeout,
    SimLocked,
    classify_line,
    parse_cgpsinfo,
    parse_error_line,
    parse_qgpsloc,
    redact,
)
from modem.simulator import ModemSimulator
from protocol.errors import LonewatchError

FAST = 2.0  # default command timeout for tests, seconds (only reached when something is wrong)


class Urcs:
    """A URC handler that tests can wait on."""

    def __init__(self) -> None:
        self.q: queue.Queue[str] = queue.Queue()

    def __call__(self, line: str) -> None:
        self.q.put(line)

    def expect(self, n: int) -> list[str]:
        return [self.q.get(timeout=FAST) for _ in range(n)]

    def drained(self) -> list[str]:
        out = []
        while not self.q.empty():
            out.append(self.q.get_nowait())
        return out


@pytest.fixture
def sim() -> Iterator[ModemSimulator]:
    with ModemSimulator() as s:
        yield s


@pytest.fixture
def quectel() -> Iterator[ModemSimulator]:
    with ModemSimulator("quectel") as s:
        yield s


@pytest.fixture
def urcs() -> Urcs:
    return Urcs()


def make_modem(sim: ModemSimulator, urcs: Urcs | None = None, **kw: object) -> Modem:
    kw.setdefault("default_timeout_s", FAST)
    kw.setdefault("sim_busy_backoff_s", 0.01)
    return Modem(sim.port, urc_handler=urcs, **kw)  # type: ignore[arg-type]


@pytest.fixture
def modem(sim: ModemSimulator, urcs: Urcs) -> Iterator[Modem]:
    with make_modem(sim, urcs) as m:
        m.init()
        yield m


# -- init, echo, errors mode -----------------------------------------------------------------


def test_init_sequence(sim: ModemSimulator) -> None:
    with make_modem(sim) as m:
        assert m.init() == "READY"
        assert m.error_mode == 2
    assert sim.commands() == ["AT", "ATE0", "AT+CMEE=2", "AT+CPIN?"]


def test_echo_before_ate0_is_dropped(sim: ModemSimulator) -> None:
    with make_modem(sim) as m:
        assert m.command("AT+CSQ") == ["+CSQ: 20,99"]  # echo still on: "AT+CSQ" came back first
        assert m.command("ATI")[0] == "Manufacturer: SIMCOM INCORPORATED"


def test_cmee_fallback_to_numeric(urcs: Urcs) -> None:
    with ModemSimulator(verbose_errors=False) as sim, make_modem(sim, urcs) as m:
        m.init()
        assert m.error_mode == 1
        assert sim.commands()[2:4] == ["AT+CMEE=2", "AT+CMEE=1"]
        sim.sim_state = "not inserted"
        with pytest.raises(CmeError) as exc:
            m.sim_state()
        assert (exc.value.code, exc.value.meaning) == (10, "SIM not inserted")


def test_unknown_flavour_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="sim7600"):
        Modem("/dev/null", flavour="huawei")


# -- SIM -----------------------------------------------------------------------------------------


def test_sim_busy_backs_off_then_ready(sim: ModemSimulator) -> None:
    sim.sim_busy_queries = 3
    with make_modem(sim) as m:
        assert m.init() == "READY"
    assert sim.commands().count("AT+CPIN?") == 4


def test_sim_busy_forever_raises(sim: ModemSimulator) -> None:
    sim.sim_busy_queries = 100
    with make_modem(sim, sim_busy_retries=2) as m, pytest.raises(CmeError) as exc:
        m.init()
    assert (exc.value.code, exc.value.meaning) == (14, "SIM busy")


def test_pin_entered_and_never_logged(caplog: pytest.LogCaptureFixture, urcs: Urcs) -> None:
    caplog.set_level(logging.DEBUG)
    with ModemSimulator(sim_state="SIM PIN", pin="4711") as sim, make_modem(sim, urcs) as m:
        assert m.init(pin="4711") == "READY"
        assert 'AT+CPIN="4711"' in sim.commands()
        assert "+CPIN: READY" in urcs.expect(3)  # +CPIN: READY, SMS DONE, PB DONE after OK
    assert "4711" not in caplog.text
    assert "AT+CPIN=***" in caplog.text


def test_wrong_pin_raises_incorrect_password_without_the_pin(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with ModemSimulator(sim_state="SIM PIN", pin="4711") as sim, make_modem(sim) as m:
        with pytest.raises(CmeError) as exc:
            m.init(pin="1111")
    assert (exc.value.code, exc.value.meaning) == (16, "incorrect password")
    assert "1111" not in str(exc.value) and "1111" not in caplog.text


@pytest.mark.parametrize("state", ["SIM PIN", "SIM PUK"])
def test_locked_sim_without_pin(state: str) -> None:
    with ModemSimulator(sim_state=state) as sim, make_modem(sim) as m:
        with pytest.raises(SimLocked) as exc:
            m.init()
    assert exc.value.state == state


def test_bad_pin_format_rejected_before_sending(modem: Modem, sim: ModemSimulator) -> None:
    with pytest.raises(ValueError) as exc:
        modem.enter_pin("12a4")
    assert "12a4" not in str(exc.value)
    assert not any(c.startswith("AT+CPIN=") for c in sim.commands())


# -- signal ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("csq", "dbm"), [(0, -113), (1, -111), (15, -83), (31, -51), (99, None)])
def test_csq_to_dbm(modem: Modem, sim: ModemSimulator, csq: int, dbm: int | None) -> None:
    sim.signal_csq = csq
    sig = modem.signal()
    assert sig.rssi_dbm == dbm
    assert sig.ber is None


# -- registration ------------------------------------------------------------------------------


def test_lte_registered_on_cereg_only(modem: Modem, sim: ModemSimulator) -> None:
    sim.set_registration(creg="not_registered", cgreg="not_registered", cereg="home")
    reg = modem.registration()
    assert (reg.state, reg.technology, reg.registered) == ("home", "CEREG", True)


def test_roaming_on_creg(modem: Modem, sim: ModemSimulator) -> None:
    sim.set_registration(creg="roaming", cgreg="searching", cereg="searching")
    reg = modem.registration()
    assert (reg.state, reg.technology) == ("roaming", "CREG")


@pytest.mark.parametrize(("creg", "cgreg", "cereg", "state"), [
    ("not_registered", "not_registered", "searching", "searching"),
    ("denied", "not_registered", "searching", "denied"),
    ("not_registered", "not_registered", "not_registered", "not_registered"),
    ("unknown", "unknown", "unknown", "unknown"),
])
def test_not_registered_states(modem: Modem, sim: ModemSimulator, creg: str, cgreg: str,
                               cereg: str, state: str) -> None:
    sim.set_registration(creg=creg, cgreg=cgreg, cereg=cereg)
    reg = modem.registration()
    assert reg.state == state and not reg.registered


def test_2g_modem_without_cereg(modem: Modem, sim: ModemSimulator) -> None:
    sim.error_next("AT+CEREG?", "ERROR")
    sim.set_registration(creg="home", cgreg="not_registered", cereg="not_registered")
    assert modem.registration().technology == "CREG"


def test_registration_urcs_do_not_answer_the_query(modem: Modem, sim: ModemSimulator,
                                                  urcs: Urcs) -> None:
    # The URC forms (one field, or <stat>,"lac","ci",AcT) arrive while AT+CEREG? is pending.
    sim.set_registration(creg="not_registered", cgreg="not_registered", cereg="searching")
    sim.urc_during_next("AT+CEREG?", ["+CEREG: 1", '+CEREG: 5,"1A2B","01C3D4E5",7'], "before")
    reg = modem.registration()
    assert reg.state == "searching"
    assert urcs.expect(2) == ["+CEREG: 1", '+CEREG: 5,"1A2B","01C3D4E5",7']


def test_registration_urcs_enabled_by_creg_2(modem: Modem, sim: ModemSimulator,
                                            urcs: Urcs) -> None:
    modem.command("AT+CREG=2")
    sim.set_registration(creg="roaming")
    assert urcs.expect(1) == ['+CREG: 5,"1A2B","01C3D4E5",7']
    assert modem.command("AT+CREG?") == ["+CREG: 2,5"]


# -- GNSS --------------------------------------------------------------------------------------


def test_sim7600_gnss_no_fix_then_fix(modem: Modem, sim: ModemSimulator) -> None:
    modem.start_gnss()
    modem.start_gnss()  # already on: SIM7600 says ERROR, the driver checks AT+CGPS? and is fine
    assert modem.flavour == "sim7600"
    assert modem.gnss() is None
    sim.gnss_fix = (55.66857, 12.57613, 1.2)
    fix = modem.gnss()
    assert fix is not None
    assert fix.lat == pytest.approx(55.66857, abs=1e-6)
    assert fix.lon == pytest.approx(12.57613, abs=1e-6)
    assert fix.accuracy_m is None  # +CGPSINFO carries no HDOP
    assert fix.fixed_at == datetime(2026, 11, 30, 23, 5, 28, tzinfo=timezone.utc)


def test_sim7600_manual_shaped_reply_through_the_port(modem: Modem, sim: ModemSimulator) -> None:
    modem.start_gnss()
    sim.garble_next("AT+CGPSINFO",
                    "+CGPSINFO: 5540.1234,N,01234.5678,E,301126,230528.0,12.3,0.0,")
    fix = modem.gnss()
    assert fix is not None
    assert fix.lat == pytest.approx(55 + 40.1234 / 60)
    assert fix.lon == pytest.approx(12 + 34.5678 / 60)
    assert fix.fixed_at == datetime(2026, 11, 30, 23, 5, 28, tzinfo=timezone.utc)
    assert fix.altitude_m == 12.3


@pytest.mark.parametrize("cmee", ["2", "1"])
def test_quectel_gnss_no_fix_then_fix(quectel: ModemSimulator, cmee: str) -> None:
    with make_modem(quectel) as m:
        m.init()
        m.command(f"AT+CMEE={cmee}")  # 516 comes as "Not fixed now" or as the number
        m.start_gnss()
        m.start_gnss()  # +CME ERROR: 504 session is ongoing → fine
        assert m.flavour == "quectel"
        assert m.gnss() is None
        quectel.gnss_fix = (-33.85678, 151.21529, 1.2)
        fix = m.gnss()
    assert fix == GnssFix(lat=-33.85678, lon=151.21529, accuracy_m=6.0,
                          fixed_at=datetime(2026, 11, 30, 23, 5, 28, tzinfo=timezone.utc),
                          altitude_m=12.3, hdop=1.2)


def test_quectel_gnss_off_is_switched_on_again(quectel: ModemSimulator) -> None:
    """``+CME ERROR: 505`` (session not active) means the engine is off: the driver sends
    ``AT+QGPS=1`` and reports no fix yet, instead of raising on every poll (issue 14)."""
    with make_modem(quectel, flavour="quectel") as m:
        m.init()
        assert m.gnss() is None
        assert m.gnss_restarts == 1
        quectel.gnss_fix = (55.66857, 12.57613, 1.0)
        fix = m.gnss()
    assert fix is not None and fix.lat == pytest.approx(55.66857)
    assert quectel.commands()[-3:] == ["AT+QGPSLOC=2", "AT+QGPS=1", "AT+QGPSLOC=2"]
    assert "ATI" not in quectel.commands()  # flavour given: not asked


def test_gnss_line_parsers_on_manual_examples() -> None:
    fix = parse_qgpsloc("AT+QGPSLOC=2", "+QGPSLOC: 230528.000,55.66857,12.57613,1.2,12.3,2,"
                                        "0.0,0.0,0.0,301126,08")
    assert (fix.lat, fix.lon, fix.accuracy_m) == (55.66857, 12.57613, 6.0)
    assert parse_cgpsinfo("AT+CGPSINFO", "+CGPSINFO: ,,,,,,,,") is None
    south_west = parse_cgpsinfo("AT+CGPSINFO",
                                "+CGPSINFO: 3351.4068,S,07037.8060,W,010126,000000.0,,,")
    assert south_west is not None and south_west.lat < 0 and south_west.lon < 0


@pytest.mark.parametrize("line", [
    "+CGPSINFO: 5590.1234,N,01234.5678,E,301126,230528.0,12.3,0.0,",  # 90 minutes
    "+CGPSINFO: 5540.1234,E,01234.5678,N,301126,230528.0,12.3,0.0,",  # hemispheres swapped
    "+CGPSINFO: 5540.1234,N,01234.5678,E,311326,230528.0,12.3,0.0,",  # month 13
    "+CGPSINFO: 5540.1234,N",
    "+CGPSINFO: banana,N,01234.5678,E,301126,230528.0,12.3,0.0,",
])
def test_garbled_gnss_raises_reply_error(modem: Modem, sim: ModemSimulator, line: str) -> None:
    modem.start_gnss()
    sim.garble_next("AT+CGPSINFO", line)
    with pytest.raises(ModemReplyError) as exc:
        modem.gnss()
    assert exc.value.command == "AT+CGPSINFO" and exc.value.line == line


# -- URCs --------------------------------------------------------------------------------------

URC_MIX = ["RING", '+CMTI: "SM",3', "+CREG: 1", "^RSSI: 12", "RDY", "+CPIN: READY",
           "SMS DONE", "PB DONE", '+QIND: "csq",20,99', "NORMAL POWER DOWN"]


@pytest.mark.parametrize("where", ["before", "between", "after"])
def test_urcs_around_a_reply_are_routed_aside(modem: Modem, sim: ModemSimulator, urcs: Urcs,
                                              where: str) -> None:
    sim.signal_csq = 7
    sim.urc_during_next("AT+CSQ", URC_MIX, where)  # type: ignore[arg-type]
    assert modem.signal().rssi_dbm == -99
    assert urcs.expect(len(URC_MIX)) == URC_MIX
    assert modem.command("AT") == []


def test_two_line_urc_is_delivered_whole(modem: Modem, sim: ModemSimulator, urcs: Urcs) -> None:
    cmt = '+CMT: "+4512345678","","26/11/30,23:05:28+04"'
    sim.urc_during_next("AT+CGMM", [cmt, "OK 1"], "between")  # the SMS text looks like info
    assert modem.command("AT+CGMM") == ["SIMCOM_SIM7600E-H"]
    assert urcs.expect(1) == [f"{cmt}\nOK 1"]


def test_urc_with_no_command_pending(modem: Modem, sim: ModemSimulator, urcs: Urcs) -> None:
    for line in ["+CREG: 0,1", "+CEREG: 1", "NO CARRIER", "+CGPSINFO: ,,,,,,,,"]:
        sim.inject_urc(line)
    assert urcs.expect(4) == ["+CREG: 0,1", "+CEREG: 1", "NO CARRIER", "+CGPSINFO: ,,,,,,,,"]


def test_failing_urc_handler_is_counted_not_fatal(sim: ModemSimulator) -> None:
    seen = threading.Event()

    def boom(line: str) -> None:
        seen.set()
        raise RuntimeError("handler bug")

    with make_modem(sim) as m:
        m.urc_handler = boom
        sim.inject_urc("RING")
        assert seen.wait(FAST)
        assert m.command("AT") == []
        assert m.urc_handler_errors == 1


def test_command_from_urc_handler_is_refused(sim: ModemSimulator) -> None:
    errors: queue.Queue[BaseException] = queue.Queue()
    with make_modem(sim) as m:
        def handler(line: str) -> None:
            try:
                m.command("AT+CSQ")
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.put(exc)
        m.urc_handler = handler
        sim.inject_urc("RING")
        assert isinstance(errors.get(timeout=FAST), RuntimeError)


@pytest.mark.parametrize(("line", "pending", "kind"), [
    ("+CREG: 0,1", "AT+CREG?", "info"),
    ('+CREG: 2,1,"1A2B","01C3D4E5",7', "AT+CREG?", "info"),
    ('+CREG: 1,"1A2B","01C3D4E5",7', "AT+CREG?", "urc"),
    ("+CREG: 1", "AT+CREG?", "urc"),
    ("+CREG: 0,1", None, "urc"),
    ("+CREG: 0,1", "AT+CSQ", "urc"),
    ("+CREG: (0-2)", "AT+CREG=?", "info"),
    ("+CREG: 1", "AT+CREG=1", "urc"),
    ("+CPIN: READY", "AT+CPIN?", "info"),
    ("+CPIN: READY", 'AT+CPIN="1234"', "urc"),
    ("+CGPSINFO: ,,,,,,,,", "AT+CGPSINFO", "info"),
    ("+ICCID: 8945000000000000001", "AT+CICCID", "info"),
    ("NO CARRIER", "AT+CSQ", "urc"),
    ("NO CARRIER", "ATD+4512345678;", "final"),
    ("+CME ERROR: 14", "AT+CPIN?", "final"),
    ("OK", None, "stray"),
])
def test_classify_line(line: str, pending: str | None, kind: str) -> None:
    assert classify_line(line, pending) == kind


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "cls", "code", "meaning"), [
    ("+CME ERROR: 10", CmeError, 10, "SIM not inserted"),
    ("+CME ERROR: 11", CmeError, 11, "SIM PIN required"),
    ("+CME ERROR: 12", CmeError, 12, "SIM PUK required"),
    ("+CME ERROR: 13", CmeError, 13, "SIM failure"),
    ("+CME ERROR: 16", CmeError, 16, "incorrect password"),
    ("+CME ERROR: 30", CmeError, 30, "no network service"),
    ("+CME ERROR: 100", CmeError, 100, "unknown"),
    ("+CME ERROR: SIM not inserted", CmeError, 10, "SIM not inserted"),
    ("+CME ERROR: sim  busy", CmeError, 14, "sim  busy"),
    ("+CME ERROR: Something odd", CmeError, None, "Something odd"),
    ("+CMS ERROR: 330", CmsError, 330, "SMSC address unknown"),
    ("+CMS ERROR: 500", CmsError, 500, "unknown error"),
    ("+CMS ERROR: 42", CmsError, 42, "congestion"),
])
def test_typed_errors_with_meaning(modem: Modem, sim: ModemSimulator, reply: str,
                                   cls: type[CmeError], code: int | None, meaning: str) -> None:
    sim.error_next("AT+CSQ", reply)
    if code == 11:  # "SIM PIN required" makes the driver initialise again and retry once
        sim.error_next("AT+CSQ", reply)
    with pytest.raises(cls) as exc:
        modem.signal()
    assert (exc.value.code, exc.value.meaning, exc.value.command) == (code, meaning, "AT+CSQ")
    assert isinstance(exc.value, ModemError) and isinstance(exc.value, LonewatchError)
    assert modem.signal().rssi_dbm == -73


def test_plain_error(modem: Modem) -> None:
    with pytest.raises(ModemError) as exc:
        modem.command("AT+NOSUCH")
    assert type(exc.value) is ModemError and "AT+NOSUCH" in str(exc.value)


def test_parse_error_line_is_none_for_other_lines() -> None:
    assert parse_error_line("ERROR") is None
    assert redact('AT+CPIN="1234"') == "AT+CPIN=***"
    assert redact("AT+CSQ") == "AT+CSQ"


def test_timeout_then_late_reply_is_not_taken_by_the_next_command(modem: Modem,
                                                                  sim: ModemSimulator) -> None:
    sim.delay_next("AT+CSQ", 0.3)
    with pytest.raises(ModemTimeout) as exc:
        modem.command("AT+CSQ", timeout_s=0.05)
    assert isinstance(exc.value, TimeoutError)
    # The modem still answers AT+CSQ late; the next command must get its own reply.
    assert modem.command("AT+CREG?") == ["+CREG: 0,1"]
    assert modem.signal().rssi_dbm == -73


def test_garbled_reply_then_next_command_works(modem: Modem, sim: ModemSimulator) -> None:
    sim.garble_next("AT+CSQ", "+CSQ: banana,99")
    with pytest.raises(ModemReplyError) as exc:
        modem.signal()
    assert isinstance(exc.value, ValueError)
    assert "AT+CSQ" in str(exc.value) and "banana" in str(exc.value)
    sim.garble_next("AT+CSQ", b"+CSQ: \xff\xfe\x00,")  # not even UTF-8
    with pytest.raises(ModemReplyError):
        modem.signal()
    sim.garble_next("AT+CSQ", "+CSQ: 45,99")
    with pytest.raises(ModemReplyError, match="out of range"):
        modem.signal()
    assert modem.signal().rssi_dbm == -73


# -- the port going away -----------------------------------------------------------------------


def test_port_vanishing_raises_modem_gone(modem: Modem, sim: ModemSimulator) -> None:
    sim.vanish()
    with pytest.raises(ModemGone) as exc:
        for _ in range(50):  # the reader may notice before or during the next command
            modem.command("AT", timeout_s=0.5)
    assert isinstance(exc.value, ConnectionError)
    assert modem.gone
    with pytest.raises(ModemGone):
        modem.signal()


def test_port_vanishing_during_a_command(modem: Modem, sim: ModemSimulator) -> None:
    sim.delay_next("AT+CSQ", 30)
    timer = threading.Timer(0.05, sim.vanish)
    timer.start()
    try:
        with pytest.raises(ModemGone):
            modem.command("AT+CSQ", timeout_s=10)
    finally:
        timer.join()


def test_open_missing_port_raises_modem_gone() -> None:
    with pytest.raises(ModemGone):
        Modem("/dev/lonewatch-no-such-modem").open()


def test_closed_modem_refuses_commands(sim: ModemSimulator) -> None:
    m = make_modem(sim)
    m.open()
    m.close()
    with pytest.raises(ModemGone):
        m.command("AT")


def test_simulator_stop_closes_its_fds() -> None:
    sim = ModemSimulator().start()
    fds = [sim._master, sim._slave, sim._wake_r, sim._wake_w]  # noqa: SLF001 - checking cleanup
    sim.stop()
    for fd in fds:
        assert fd is not None
        with pytest.raises(OSError):
            os.fstat(fd)


# -- SMS: pure PDU encoding (3GPP TS 23.038 / 23.040) --------------------------------------------

DANISH = "Alarm: Åse Ærø-Ødegård trykkede på knappen i kælderen, Søborg"
POLISH = "Alarm: Zażółć gęślą jaźń — pracownik potrzebuje pomocy"
ARABIC = "إنذار: العامل يحتاج إلى مساعدة"
UKRAINIAN = "Тривога: працівник потребує допомоги"


def test_gsm7_alphabet_is_complete() -> None:
    assert len(sms.GSM7_BASIC) == 128
    assert (sms.GSM7_BASIC[0x1D], sms.GSM7_BASIC[0x0C], sms.GSM7_BASIC[0x0F]) == ("æ", "ø", "å")
    assert sms.GSM7_BASIC[0x02] == "$" and sms.GSM7_BASIC[0x24] == "¤"


def test_known_pdu_vector() -> None:
    # "hellohello" to +46708251358: the classic PDU-mode example (TP-VP dropped: we send none).
    [pdu] = sms.encode_submit("+46708251358", "hellohello")
    assert pdu.hex == "0001000B916407281553F800000AE8329BFD4697D9EC37"
    assert pdu.tpdu_length == 22
    decoded = sms.decode_submit("0011000B916407281553F80000AA0AE8329BFD4697D9EC37")  # with VP
    assert (decoded.number, decoded.text) == ("+46708251358", "hellohello")


@pytest.mark.parametrize(("text", "encoding"), [
    (DANISH, "gsm7"), ("Price 5€ [ok] {x} ~^|\\", "gsm7"), (POLISH, "ucs2"),
    (ARABIC, "ucs2"), (UKRAINIAN, "ucs2"), ("Alarm 🚨", "ucs2"),
])
def test_encoding_choice(text: str, encoding: str) -> None:
    assert sms.choose_encoding(text) == encoding


@pytest.mark.parametrize(("text", "sizes"), [
    ("a" * 160, [160]),
    ("a" * 161, [153, 8]),
    ("€" * 80, [160]),                 # extension characters cost two septets
    ("€" * 81, [152, 10]),             # … and an escape pair is never split (76 + 5 chars)
    ("ż" * 70, [70]),
    ("ż" * 71, [67, 4]),
    ("🚨" * 35, [70]),                 # surrogate pairs: two UTF-16 units each
    ("🚨" * 36, [66, 6]),              # … never split
])
def test_split_limits(text: str, sizes: list[int]) -> None:
    assert [sms.length(p) for p in sms.split(text)] == sizes
    assert "".join(sms.split(text)) == text


def test_concatenated_gsm7_header_and_fill_bit() -> None:
    pdus = sms.encode_submit("+4512345678", "h" * 200, reference=0x42)
    assert len(pdus) == 2
    # SMSC 00 | first octet 41 (SUBMIT + UDHI) | MR 00 | DA 0A 91 5421436587 | PID 00 | DCS 00
    # | UDL A0 (7 septets of UDH+fill, 153 of text) | UDH 05 00 03 42 02 01 | one fill bit,
    # then 'h' (septet 0x68) → first text octet D0.
    assert pdus[0].hex.startswith("0041000A915421436587" "0000" "A0" "050003420201" "D0")
    assert pdus[0].tpdu_length == 12 + 140
    assert [sms.decode_submit(p.hex).concat for p in pdus] == [(0x42, 2, 1), (0x42, 2, 2)]


@pytest.mark.parametrize(("number", "text"), [
    ("+45 1234", "x"), ("45-12", "x"), ("", "x"), ("+4512345678", ""),
])
def test_bad_sms_input(number: str, text: str) -> None:
    with pytest.raises(sms.SmsError):
        sms.encode_submit(number, text)


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=400))
def test_pdu_round_trip(text: str) -> None:
    pdus = sms.encode_submit("+4512345678", text, reference=3)
    decoded = [sms.decode_submit(p.hex) for p in pdus]
    assert "".join(d.text for d in decoded) == text
    assert all(d.number == "+4512345678" for d in decoded)
    assert all(p.tpdu_length <= 12 + 140 for p in pdus)  # 12 octets before the user data


# -- SMS through the modem -----------------------------------------------------------------------


def test_send_danish_sms_single_gsm7_part(modem: Modem, sim: ModemSimulator) -> None:
    refs = modem.send_sms("+4512345678", DANISH)
    assert refs == [1]
    assert sim.sent_sms == [("+4512345678", DANISH)]
    assert sms.decode_submit(sim.sent_pdus[0]).encoding == "gsm7"
    assert "AT+CMGF=0" in sim.commands()


def test_send_long_polish_sms_concatenated_ucs2(modem: Modem, sim: ModemSimulator,
                                                urcs: Urcs) -> None:
    text = POLISH * 3
    sim.urc_during_next("AT+CMGS", ['+CMTI: "SM",1'], "before")  # URC before the prompt
    refs = modem.send_sms("+4512345678", text)
    assert len(refs) == len(sim.sent_sms) == 3
    assert "".join(t for _, t in sim.sent_sms) == text
    assert {sms.decode_submit(p).encoding for p in sim.sent_pdus} == {"ucs2"}
    assert urcs.expect(1) == ['+CMTI: "SM",1']
    assert modem.signal().rssi_dbm == -73


def test_sms_cms_error(modem: Modem, sim: ModemSimulator) -> None:
    sim.error_next("AT+CMGS", "+CMS ERROR: 330")
    with pytest.raises(CmsError) as exc:
        modem.send_sms("+4512345678", "test")
    assert (exc.value.code, exc.value.meaning) == (330, "SMSC address unknown")
    assert modem.send_sms("+4512345678", "test") == [1]


def test_sms_prompt_timeout_cancels_text_entry(modem: Modem, sim: ModemSimulator) -> None:
    sim.delay_next("AT+CMGS", 0.3)
    with pytest.raises(ModemTimeout):
        modem.send_sms("+4512345678", "test", timeout_s=0.05)
    assert modem.command("AT+CREG?") == ["+CREG: 0,1"]
    assert sim.sent_sms == []
    assert ("host", "<ESC>") in sim.transcript


def test_auto_flavour_from_the_model_name_alone() -> None:
    # ATI refused; AT+CGMM answers only "EC25" (no maker name): still a Quectel.
    with ModemSimulator("quectel") as sim:
        sim.error_next("ATI", "ERROR")
        with Modem(sim.port, flavour="auto", default_timeout_s=2.0) as modem:
            assert modem.flavour == "quectel"


@pytest.mark.parametrize(
    ("text", "charset", "messages"),
    [
        ("Alarm: Anna Hansen, Vestergade 12", "IRA", 1),
        ("Alarm: Søren Ærø, kælderen", "UCS2", 1),  # æøå sent as UCS2 in text mode
        ("Alarm: Zażółć gęślą jaźń " * 4, "UCS2", 2),  # > 70 units: two separate messages
        ("طلب مساعدة من العامل", "UCS2", 1),  # Arabic arrives intact
    ],
)
def test_text_mode_sms_arrives_intact(text: str, charset: str, messages: int) -> None:
    with ModemSimulator("sim7600") as sim, Modem(sim.port, flavour="sim7600", default_timeout_s=2.0) as modem:
        refs = modem.send_sms_text("+4520110001", text, timeout_s=5.0)
        assert len(refs) == messages
        assert "".join(t for _, t in sim.sent_sms) == text
        assert {n for n, _ in sim.sent_sms} == {"+4520110001"}
        assert ("host", f'AT+CSCS="{charset}"') in sim.transcript
        assert ("host", "AT+CMGF=1") in sim.transcript


def test_text_mode_sms_error_is_typed_and_the_modem_goes_on() -> None:
    with ModemSimulator("sim7600") as sim, Modem(sim.port, flavour="sim7600", default_timeout_s=2.0) as modem:
        sim.submit_error_next("+CMS ERROR: 331")
        with pytest.raises(CmsError) as err:
            modem.send_sms_text("+4520110001", "Alarm", timeout_s=5.0)
        assert err.value.code == 331
        assert modem.send_sms_text("+4520110001", "Alarm", timeout_s=5.0)  # next one goes
        with pytest.raises(sms.SmsError):
            modem.send_sms_text("not a number", "Alarm")
