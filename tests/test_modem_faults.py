"""A modem that misbehaves (issue 14, "Modem driver"): each fault produced by the pty simulator
and met by the real driver through ``serial.Serial`` — a restart on the UART, line noise, a
failing GNSS query inside a poll, a stale answer after a timeout, a registration URC with an
unquoted area code, a Linux login console on the port, a PIN in a mangled echo, and both GNSS
number formats. Sources: SIM7600 / Quectel EC25 AT manuals, 3GPP TS 27.007 / 27.005, SPEC §2
and §7. No test asserts on timing; waits are on conditions."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.verify import wait_for
from device.daemon import ModemState
from modem.at import (
    CmsError,
    Modem,
    ModemError,
    ModemTimeout,
    SerialConsoleError,
    classify_line,
    parse_cgpsinfo,
    parse_qgpsloc,
    redact,
)
from modem.framing import LineFramer
from modem.simulator import ModemSimulator
from modem.supervisor import ModemSupervisor
from modem.symptoms import clean_line, console_evidence, reset_sign

FAST = 2.0  # command timeout, seconds (reached only when something is wrong)
PIN = "4711"


class Urcs:
    def __init__(self) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []

    def __call__(self, line: str) -> None:
        self.seen.append(line)
        self.q.put(line)

    def until(self, line: str) -> None:
        while self.q.get(timeout=FAST) != line:
            pass


def make_modem(sim: ModemSimulator, urcs: Urcs | None = None, **kw: object) -> Modem:
    kw.setdefault("default_timeout_s", FAST)
    kw.setdefault("sim_busy_backoff_s", 0.01)
    return Modem(sim.port, urc_handler=urcs, **kw)  # type: ignore[arg-type]


@pytest.fixture
def sim() -> Iterator[ModemSimulator]:
    with ModemSimulator("sim7600") as s:
        yield s


@pytest.fixture
def pinned() -> Iterator[ModemSimulator]:
    """A SIM7600 whose SIM asks for its PIN at every power-on."""
    with ModemSimulator("sim7600", pin=PIN, sim_state="SIM PIN") as s:
        yield s


@pytest.fixture
def urcs() -> Urcs:
    return Urcs()


@pytest.fixture
def modem(sim: ModemSimulator, urcs: Urcs) -> Iterator[Modem]:
    with make_modem(sim, urcs) as m:
        m.init()
        yield m


def after_last(sim: ModemSimulator, marker: str) -> list[str]:
    cmds = sim.commands()
    return cmds[len(cmds) - 1 - cmds[::-1].index(marker) + 1:]


# -- a restart on the UART (the port stays) -------------------------------------------------------


def test_restart_with_boot_urcs_is_initialised_again_and_the_sms_goes(pinned: ModemSimulator,
                                                                      urcs: Urcs) -> None:
    with make_modem(pinned, urcs) as m:
        m.init(pin=PIN)
        m.start_gnss()
        m.send_sms("+4520110001", "before")
        n = len(pinned.commands())
        pinned.reset()  # RDY, +CPIN: SIM PIN; echo on, CMEE 0, GNSS off, SIM locked again
        urcs.until("+CPIN: SIM PIN")
        assert m.send_sms("+4520110001", "alarm after the restart")
        assert m.reinits == 1 and m.last_reset == "RDY"
    assert [t for _, t in pinned.sent_sms] == ["before", "alarm after the restart"]
    redo = pinned.commands()[n:]
    assert redo[:5] == ["AT", "ATE0", "AT+CMEE=2", "AT+CPIN?", f'AT+CPIN="{PIN}"']
    assert "AT+CGPS=1" in redo and redo[-2].startswith("AT+CMGS=") and pinned.sim_state == "READY"


def test_silent_restart_is_found_by_sim_pin_required(pinned: ModemSimulator) -> None:
    """No boot URCs (auto-baud modems send no RDY): the first SMS step answers
    ``+CMS ERROR: 311``; the driver initialises again and sends the part once more."""
    with make_modem(pinned) as m:
        m.init(pin=PIN)
        m.send_sms("+4520110001", "before")
        pinned.reset(boot_urcs=False)
        refs = m.send_sms("+4520110001", "still goes")
        assert len(refs) == 1 and m.reinits == 1 and "311" in (m.last_reset or "")
    assert [t for _, t in pinned.sent_sms] == ["before", "still goes"]


def test_sim_pin_required_that_persists_is_raised_after_one_reinit(sim: ModemSimulator) -> None:
    with make_modem(sim) as m:
        m.init()
        sim.error_next("AT+CMGF", "+CMS ERROR: 311")
        sim.error_next("AT+CMGF", "+CMS ERROR: 311")
        with pytest.raises(CmsError) as exc:
            m.send_sms("+4520110001", "x")
        assert exc.value.code == 311 and m.reinits == 1


def test_restart_without_a_pin_lock_is_found_by_rdy(sim: ModemSimulator, modem: Modem,
                                                    urcs: Urcs) -> None:
    sim.reset()  # RDY, +CPIN: READY, SMS DONE, PB DONE
    urcs.until("PB DONE")
    assert modem.signal().rssi_dbm == -73
    assert modem.reinits == 1 and after_last(sim, "ATE0")[:2] == ["AT+CMEE=2", "AT+CPIN?"]


def test_ready_urcs_after_our_own_pin_entry_are_no_restart(pinned: ModemSimulator,
                                                           urcs: Urcs) -> None:
    with make_modem(pinned, urcs) as m:
        m.init(pin=PIN)  # answered by +CPIN: READY, SMS DONE, PB DONE after the OK
        urcs.until("PB DONE")
        assert m.signal().rssi_dbm == -73
        assert m.reinits == 0


def test_supervisor_poll_after_a_restart_switches_gnss_on_again(pinned: ModemSimulator) -> None:
    steps: list[tuple[str, dict]] = []
    modem = make_modem(pinned)
    sup = ModemSupervisor(modem, sim_pin=PIN, gnss=True,
                          observer=lambda step, fields: steps.append((step, fields)))
    state = ModemState()
    try:
        sup.poll(state)
        pinned.gnss_fix = (55.66857, 12.57613, 1.0)
        sup.poll(state)
        assert state.position is not None
        pinned.reset()
        assert wait_for(lambda: modem._reset_reason is not None, 5)  # noqa: SLF001
        pinned.gnss_fix = (55.7, 12.6, 1.0)
        sup.poll(state)
        assert state.modem_ready and state.signal_dbm == -73 and state.registration == "home"
        sup.poll(state)  # the fix of the switched-on engine
        assert state.position is not None and state.position.lat == pytest.approx(55.7)
        assert ("modem_reinit", {"reason": "RDY"}) in steps
        assert after_last(pinned, f'AT+CPIN="{PIN}"').count("AT+CGPS=1") == 1
    finally:
        sup.close()


# -- line noise ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [
    (b"\x00", b""), (b"", b"\x00"), (b"\xff", b""), (b"\x00\xff\x00", b"\xfe\x00"), (b"\x1b", b"\x7f"),
])
def test_noise_glued_to_ok_still_ends_the_command(modem: Modem, sim: ModemSimulator,
                                                  before: bytes, after: bytes) -> None:
    sim.noise_next("AT+CSQ", before, after)
    assert modem.signal().rssi_dbm == -73  # no timeout: the noisy OK was the final result code
    sim.noise_next("AT+CMGS", before, after)
    assert len(modem.send_sms("+4520110001", "noisy line")) == 1  # +CMGS: <mr> then x00OK
    assert modem.command("AT+CGMM") == ["SIMCOM_SIM7600E-H"]  # and nothing late is owed


def test_line_cleaning() -> None:
    assert clean_line(b"\x00OK") == "OK" and clean_line(b"OK\xff") == "OK"
    assert clean_line(b"+CSQ: 2\x000,99") == "+CSQ: 20,99"
    assert clean_line(b"\xff\xfe") == "" and clean_line(b"\x00") == ""
    framer = LineFramer()
    assert framer.feed(b"\r\n\x00OK\r\n\xff\r\n+CME ERROR: 10\x00\r\n\x00> ") == ["OK", "+CME ERROR: 10"]
    assert framer.tail_text == ">"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_any_bytes_give_clean_lines(data: bytes) -> None:
    for line in LineFramer().feed(data + b"\r\n"):
        assert line and line == line.strip()
        assert not any((ord(ch) < 32 and ch != "\t") or ord(ch) == 127 for ch in line)
        assert classify_line(line, "AT+CSQ") in ("final", "info", "urc", "stray")


# -- one failed query does not spoil the others ----------------------------------------------------


def test_gnss_session_not_active_in_a_poll_keeps_signal_and_registration() -> None:
    with ModemSimulator("quectel") as q:
        modem = make_modem(q, flavour="quectel")
        sup = ModemSupervisor(modem, gnss=True)
        state = ModemState()
        try:
            sup.poll(state)
            modem.command("AT+QGPSEND")  # the engine goes off (as after a restart)
            q.signal_csq = 10
            sup.poll(state)  # +CME ERROR: 505 → AT+QGPS=1, no fix yet; the rest is read
            assert state.signal_dbm == -93 and state.registration == "home" and state.modem_ready
            assert q.commands()[-2:] == ["AT+QGPSLOC=2", "AT+QGPS=1"] and modem.gnss_restarts == 1
        finally:
            sup.close()


def test_each_reading_failing_alone_leaves_only_itself_unknown(sim: ModemSimulator) -> None:
    modem = make_modem(sim)
    sup = ModemSupervisor(modem, gnss=True)
    state = ModemState()
    try:
        sim.gnss_fix = (55.66857, 12.57613, 1.0)
        sup.poll(state)
        position = state.position
        assert position is not None
        sim.garble_next("AT+CGPSINFO", "+CGPSINFO: banana")
        sup.poll(state)
        assert (state.signal_dbm, state.registration, state.position) == (-73, "home", position)
        sim.error_next("AT+CGPSINFO", "+CME ERROR: 3")
        sup.poll(state)
        assert (state.signal_dbm, state.registration) == (-73, "home")
        sim.garble_next("AT+CSQ", "+CSQ: banana")
        sup.poll(state)
        assert (state.signal_dbm, state.registration) == (None, "home")
        sim.error_next("AT+CEREG?", "+CME ERROR: 3")
        sim.error_next("AT+CGREG?", "+CME ERROR: 3")
        sim.error_next("AT+CREG?", "+CME ERROR: 3")
        sup.poll(state)
        assert (state.signal_dbm, state.registration) == (-73, "unknown")
        sup.poll(state)
        assert (state.signal_dbm, state.registration) == (-73, "home") and state.modem_ready
    finally:
        sup.close()


def test_sim7600_gnss_found_off_is_switched_on(modem: Modem, sim: ModemSimulator) -> None:
    modem.start_gnss()
    modem.command("AT+CGPS=0")
    assert modem.gnss() is None  # ,,,,,,,, and AT+CGPS? says 0
    assert sim.commands()[-3:] == ["AT+CGPSINFO", "AT+CGPS?", "AT+CGPS=1"]
    assert modem.gnss_restarts == 1


# -- a stale answer after a timeout ------------------------------------------------------------------


def test_late_answer_that_comes_before_the_next_command_is_drained_for_free(modem: Modem,
                                                                            sim: ModemSimulator) -> None:
    sim.delay_next("AT+CEREG?", 0.5)
    with pytest.raises(ModemTimeout):
        modem.command("AT+CEREG?", timeout_s=0.05)
    assert wait_for(lambda: modem._owed == 0, 5)  # noqa: SLF001 - the late OK was drained
    assert modem.signal().rssi_dbm == -73
    assert sim.commands()[-2:] == ["AT+CEREG?", "AT+CSQ"]  # no re-synchronisation needed


def test_lost_final_does_not_cost_the_next_command_its_timeout(modem: Modem,
                                                               sim: ModemSimulator) -> None:
    """The ``OK`` of a command is lost on the line: the next command (the alarm SMS, with its
    60 s timeout) must not first wait that long for it."""
    sim.drop_final_next("AT+CSQ")
    with pytest.raises(ModemTimeout):
        modem.command("AT+CSQ", timeout_s=0.2)
    result: list[list[int]] = []
    sender = threading.Thread(target=lambda: result.append(modem.send_sms("+4520110001", "alarm",
                                                                          timeout_s=60)))
    sender.start()
    # The SMS reaches the modem long before 60 s pass: after one "AT" round trip.
    assert wait_for(lambda: any(c.startswith("AT+CMGS=") for c in sim.commands()), 10)
    sender.join(60)
    assert len(result) == 1 and sim.sent_sms == [("+4520110001", "alarm")]
    assert after_last(sim, "AT+CSQ")[0] == "AT"  # the re-synchronisation probe


def test_late_answer_during_the_next_command_is_not_taken_as_its_answer(modem: Modem,
                                                                        sim: ModemSimulator) -> None:
    sim.delay_next("AT+CEREG?", 0.6)
    with pytest.raises(ModemTimeout):
        modem.command("AT+CEREG?", timeout_s=0.1)
    assert modem.signal().rssi_dbm == -73  # not "+CEREG: 0,1" + its OK
    assert modem.command("AT+CGMM") == ["SIMCOM_SIM7600E-H"]


def test_a_modem_still_busy_makes_the_next_command_time_out_then_recovers(modem: Modem,
                                                                          sim: ModemSimulator) -> None:
    sim.delay_next("AT+COPS?", 1.0)
    with pytest.raises(ModemTimeout):
        modem.command("AT+COPS?", timeout_s=0.1)
    with pytest.raises(ModemTimeout, match="busy"):
        modem.command("AT+CSQ", timeout_s=0.1)
    assert modem.signal().rssi_dbm == -73


# -- registration URCs with an unquoted numeric area code ----------------------------------------


@pytest.mark.parametrize("urc", ['+CEREG: 1,4660,"01C3D4E5",7', "+CEREG: 1,5,01C3D4E5,7",
                                 "+CEREG: 5,2345,1A2B3C4D,7", "+CEREG: 2"])
def test_cereg_urc_with_unquoted_area_code_is_not_the_answer(modem: Modem, sim: ModemSimulator,
                                                             urcs: Urcs, urc: str) -> None:
    sim.set_registration(creg="not_registered", cgreg="not_registered", cereg="home")
    sim.urc_during_next("AT+CEREG?", [urc], "before")
    reg = modem.registration()
    assert (reg.state, reg.technology) == ("home", "CEREG")
    urcs.until(urc)


@pytest.mark.parametrize(("line", "kind"), [
    ("+CEREG: 0,1", "info"), ('+CEREG: 2,1,"1A2B","01C3D4E5",7', "info"), ("+CEREG: 2,4", "info"),
    ("+CEREG: 1,1,1A2B,01C3D4E5,7", "urc"), ("+CEREG: 1,4660", "urc"), ("+CEREG: 12,1", "urc"),
])
def test_cereg_answer_shapes(line: str, kind: str) -> None:
    assert classify_line(line, "AT+CEREG?") == kind


# -- a Linux login console on the UART -------------------------------------------------------------


def test_login_console_is_reported_as_such(sim: ModemSimulator) -> None:
    sim.serial_console = True
    with make_modem(sim) as m:
        with pytest.raises(SerialConsoleError) as exc:
            m.init()  # "AT" is taken as a user name: "Password: " comes back, no line end
        assert exc.value.evidence == "Password:" and isinstance(exc.value, ModemError)
        assert "console" in str(exc.value) and m.console_seen == "Password:"
        with pytest.raises(SerialConsoleError) as again:
            m.command("AT")  # taken as the password: "Login incorrect"
        assert again.value.evidence in ("Login incorrect", "raspberrypi login:")


@pytest.mark.parametrize("text", ["raspberrypi login:", "Password:", "Login incorrect",
                                  "Debian GNU/Linux 12 raspberrypi ttyS0", "pi@raspberrypi:~ $",
                                  "root@lw-0001:/#", "Last login: Mon Nov 30 10:00:00 2026"])
def test_console_shapes(text: str) -> None:
    assert console_evidence(text) == text.strip()


@pytest.mark.parametrize("text", ["OK", "+CSQ: 20,99", "Manufacturer: SIMCOM INCORPORATED", "EC25",
                                  "Revision: EC25EFAR06A06M4G", "+CPIN: SIM PIN", "RDY", "> ",
                                  "+CMGL: 1,0,,24", "07914581000000F0040B914502110100F0"])
def test_modem_lines_are_no_console(text: str) -> None:
    assert console_evidence(text) is None


# -- the PIN never in a log, however it is echoed ---------------------------------------------------


@pytest.mark.parametrize("echo", [f'at+cpin="{PIN}"', f'T+CPIN="{PIN}"', f'AT+CPIN= "{PIN}"',
                                  f'\x00AT+CPIN="{PIN}"\x00', f'\u00ffAT+CPIN="{PIN}"', f"+CPIN={PIN}"])
def test_mangled_pin_echo_is_never_logged(pinned: ModemSimulator, urcs: Urcs,
                                          caplog: pytest.LogCaptureFixture, echo: str) -> None:
    caplog.set_level(logging.DEBUG)
    pinned.urc_during_next("AT+CPIN=", [echo], "before")
    with make_modem(pinned, urcs) as m:
        assert m.init(pin=PIN) == "READY"
        assert m.signal().rssi_dbm == -73
    assert PIN not in caplog.text
    assert not any(PIN in line for line in urcs.seen)


def test_known_pin_is_scrubbed_from_any_logged_line(pinned: ModemSimulator,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with make_modem(pinned) as m:
        m.init(pin=PIN)
        pinned.garble_next("AT+CGMM", f"model {PIN}")
        assert m.command("AT+CGMM") == [f"model {PIN}"]  # the data is intact …
    assert PIN not in caplog.text  # … the log is not


def test_redact_finds_secret_commands_anywhere() -> None:
    assert redact('AT+CPIN="1234"') == "AT+CPIN=***"
    assert redact('\x00at+cpin= "1234"') == "\x00at+cpin=***"
    assert redact('T+CPWD="SC","1234","5678"') == "T+CPWD=***"
    assert redact("+CPIN: READY") == "+CPIN: READY" and redact("AT+CLCK?") == "AT+CLCK?"


# -- both GNSS number formats -----------------------------------------------------------------------


def test_quectel_ddmm_reply_to_mode_2_is_read() -> None:
    with ModemSimulator("quectel") as q, make_modem(q, flavour="quectel") as m:
        m.init()
        m.start_gnss()
        q.gnss_format = "other"  # +QGPSLOC: …,5540.1142N,01234.5678E,…
        q.gnss_fix = (55.66857, -12.57613, 1.2)
        fix = m.gnss()
    assert fix is not None and fix.accuracy_m == 6.0
    assert fix.lat == pytest.approx(55.66857, abs=1e-5) and fix.lon == pytest.approx(-12.57613, abs=1e-5)


def test_sim7600_decimal_degrees_reply_is_read(modem: Modem, sim: ModemSimulator) -> None:
    modem.start_gnss()
    sim.gnss_format = "other"  # +CGPSINFO: 55.668570,N,12.576130,E,…
    sim.gnss_fix = (-33.85678, 151.21529, 1.0)
    fix = modem.gnss()
    assert fix is not None
    assert (fix.lat, fix.lon) == (pytest.approx(-33.85678), pytest.approx(151.21529))


def test_manual_examples_in_both_formats() -> None:
    # Quectel EC25 GNSS manual, AT+QGPSLOC=0 example; the same position in mode 2.
    ddmm = parse_qgpsloc("AT+QGPSLOC=2", "+QGPSLOC: 061951.000,3150.7223N,11711.9293E,0.7,62.2,2,"
                                         "0.00,0.0,0.0,110513,09")
    deg = parse_qgpsloc("AT+QGPSLOC=2", "+QGPSLOC: 061951.000,31.84537,117.19882,0.7,62.2,2,"
                                        "0.00,0.0,0.0,110513,09")
    assert ddmm.lat == pytest.approx(deg.lat, abs=1e-5) and ddmm.lon == pytest.approx(deg.lon, abs=1e-5)
    split = parse_qgpsloc("AT+QGPSLOC=2", "+QGPSLOC: 061951.000,3150.7223,S,11711.9293,W,0.7,62.2,2,"
                                          "0.00,0.0,0.0,110513,09")
    assert (split.lat, split.lon) == (pytest.approx(-ddmm.lat), pytest.approx(-ddmm.lon))
    nmea = parse_cgpsinfo("AT+CGPSINFO", "+CGPSINFO: 3150.722300,N,11711.929300,E,110513,061951.0,62.2,0.0,")
    dec = parse_cgpsinfo("AT+CGPSINFO", "+CGPSINFO: 31.845372,N,117.198822,E,110513,061951.0,62.2,0.0,")
    assert nmea is not None and dec is not None
    assert nmea.lat == pytest.approx(dec.lat, abs=1e-5) and nmea.lon == pytest.approx(dec.lon, abs=1e-5)


@pytest.mark.parametrize("line", ["+QGPSLOC: 061951.000,9150.7223N,11711.9293E,0.7,62.2,2,0,0,0,110513,09",
                                  "+QGPSLOC: 061951.000,3150.7223E,11711.9293N,0.7,62.2,2,0,0,0,110513,09",
                                  "+QGPSLOC: 061951.000,91.5,117.1,0.7,62.2,2,0,0,0,110513,09",
                                  "+QGPSLOC: 061951.000,N,11711.9293E,0.7,62.2,2,0,0,0,110513,09"])
def test_bad_coordinates_in_either_format_are_reply_errors(line: str) -> None:
    from modem.at import ModemReplyError

    with pytest.raises(ModemReplyError):
        parse_qgpsloc("AT+QGPSLOC=2", line)


def test_reset_signs() -> None:
    assert reset_sign("RDY") == "strong" and reset_sign("+CPIN: SIM PIN") == "strong"
    assert reset_sign("+CPIN: NOT READY") == "strong" and reset_sign("SMS DONE") == "weak"
    assert reset_sign("+QIND: PB DONE") == "weak" and reset_sign("+CPIN: READY") == "weak"
    assert reset_sign("RING") is None and reset_sign('+CMTI: "SM",1') is None


def test_relay_sms_channel_survives_a_modem_restart(pinned: ModemSimulator) -> None:
    """The relay's ``sms-modem`` channel (contacts' SMS) on the same driver: after a restart
    its own settings (PDU mode, new-SMS indications) are restored by the re-init hook."""
    from relay.notify.sms_modem import ModemSmsChannel

    ch = ModemSmsChannel(pinned.port, flavour="sim7600", sim_pin=PIN, poll_s=60, send_timeout_s=FAST)
    try:
        assert ch.send("+4520110001", "", "first").ok
        n = len(pinned.commands())
        pinned.reset()
        assert wait_for(lambda: ch._modem._reset_reason is not None, 5)  # noqa: SLF001
        result = ch.send("+4520110001", "", "after the restart")
        assert result.ok, result
        redo = pinned.commands()[n:]
        assert f'AT+CPIN="{PIN}"' in redo and "AT+CNMI=2,1,0,0,0" in redo
        assert [t for _, t in pinned.sent_sms] == ["first", "after the restart"]
    finally:
        ch.stop()
