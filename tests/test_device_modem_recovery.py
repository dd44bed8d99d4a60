"""Modem recovery (SPEC §2 "the port vanishing (USB re-enumeration) → reopen, then power-cycle
the modem via a GPIO if wired"), per-command timeouts, and modem behaviour from the public
SIM7600 / Quectel EC25 manuals — all through the real serial path to the pty simulator."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device.daemon import ModemState
from modem import sms
from modem.at import COMMAND_TIMEOUTS_S, CmeError, Modem, ModemGone, ModemTimeout
from modem.port import PortLocator, UsbIdentity, interface_of, parse_usb_spec
from modem.power import ModemPower
from modem.simulator import ModemSimulator
from modem.supervisor import ModemSupervisor


@pytest.fixture
def sim() -> Iterator[ModemSimulator]:
    with ModemSimulator("sim7600") as s:
        yield s


@dataclass
class FakePortInfo:
    """What ``serial.tools.list_ports.comports()`` lists for a USB serial interface."""

    device: str
    vid: int | None = 0x1E0E
    pid: int | None = 0x9001
    location: str | None = "1-1.3:1.2"


class Udev:
    """Keeps a stable name (a symlink, as the udev rule makes) pointing at the modem's pty."""

    def __init__(self, path: Path, sim: ModemSimulator) -> None:
        self.path, self.sim = path, sim
        self.update()

    def update(self) -> None:
        tmp = self.path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.sim.port)
        os.replace(tmp, self.path)


def test_usb_spec_parsing_and_interface_numbers() -> None:
    assert parse_usb_spec("usb:1e0e:9001:02") == UsbIdentity(0x1E0E, 0x9001, 2)
    assert parse_usb_spec("usb:2C7C:0125") == UsbIdentity(0x2C7C, 0x0125, None)
    assert parse_usb_spec("/dev/ttyUSB2") is None and parse_usb_spec("usb:xyz:1:2") is None
    assert interface_of(FakePortInfo("/dev/ttyUSB2", location="1-1.3:1.2")) == 2
    assert interface_of(FakePortInfo("/dev/ttyUSB2", location=None)) is None


def test_reappearing_under_a_stable_udev_name_is_reopened_and_reinitialised(tmp_path: Path, sim: ModemSimulator) -> None:
    udev = Udev(tmp_path / "lonewatch-modem", sim)
    urcs: list[str] = []
    modem = Modem(str(udev.path), default_timeout_s=2.0, urc_handler=urcs.append)
    sup = ModemSupervisor(modem, gnss=True)
    state = ModemState()
    sup.poll(state)
    assert state.modem_ready and state.signal_dbm == -73
    old = sim.port
    sim.vanish()
    new = sim.reappear()  # re-enumerated: another pty, echo on again, boot URCs pending
    udev.update()
    assert new != old and not os.path.exists(old)
    sup.poll(state)  # notices the port is gone
    sup.poll(state)  # reopens through the stable name and initialises again
    try:
        assert state.modem_ready and state.signal_dbm == -73
        assert os.path.realpath(modem.device_path) == new
        after = sim.commands()[sim.commands().index("AT", 5):]
        assert "ATE0" in after and "AT+CMEE=2" in after and "AT+CGPS=1" in after
        assert "RDY" in urcs and "PB DONE" in urcs  # the boot URCs went aside, not into answers
    finally:
        modem.close()


def test_usb_id_lookup_finds_the_new_node(sim: ModemSimulator) -> None:
    ports = [FakePortInfo("/dev/ttyS0", vid=None, pid=None, location=None), FakePortInfo(sim.port)]
    modem = Modem("usb:1e0e:9001:02", default_timeout_s=2.0, comports=lambda: list(ports))
    with modem:
        modem.init()
        assert modem.device_path == sim.port
        sim.vanish()
        new = sim.reappear()
        ports[1] = FakePortInfo(new)
        with pytest.raises(ModemGone):
            modem.signal()
        modem.reopen()
        modem.init()
        assert modem.device_path == new and modem.signal().rssi_dbm == -73


def test_plain_path_learns_its_usb_identity_and_follows_it(sim: ModemSimulator) -> None:
    ports = [FakePortInfo(sim.port, location="1-1:1.3")]
    modem = Modem(sim.port, default_timeout_s=2.0, comports=lambda: list(ports))
    with modem:
        modem.init()
        assert modem.locator.identity == UsbIdentity(0x1E0E, 0x9001, 3)
        sim.vanish()
        ports[0] = FakePortInfo(sim.reappear(), location="1-1:1.3")
        modem.reopen()
        modem.init()
        assert modem.device_path == ports[0].device


def test_locator_without_a_match_keeps_the_configured_path() -> None:
    loc = PortLocator("usb:2c7c:0125:02", comports=lambda: [FakePortInfo("/dev/ttyUSB0")])
    assert loc.locate() == "usb:2c7c:0125:02"  # opening it then fails with ModemGone
    with pytest.raises(ModemGone):
        Modem("usb:2c7c:0125:02", comports=lambda: []).open()


class PowerGlue:
    """The modem's supply wired to a GPIO (a hardware model for the test): the supervisor's
    MockPin going low cuts the simulator's power, high brings it back on a new pty."""

    def __init__(self, factory: MockFactory, pin: int, sim: ModemSimulator, udev: Udev) -> None:
        self.pin, self.sim, self.udev = factory.pin(pin), sim, udev
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        powered = True
        while not self._stop.wait(0.01):
            level = bool(self.pin.state)
            if level != powered:
                powered = level
                self.sim.power(level)
                if level:
                    self.udev.update()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


def test_hung_modem_is_power_cycled_through_the_gpio(tmp_path: Path, sim: ModemSimulator) -> None:
    factory = MockFactory()
    udev = Udev(tmp_path / "lonewatch-modem", sim)
    power = ModemPower(26, mode="switch", off_s=0.3, pin_factory=factory)
    glue = PowerGlue(factory, 26, sim, udev)
    steps: list[str] = []
    modem = Modem(str(udev.path), default_timeout_s=0.3)
    sup = ModemSupervisor(modem, gnss=False, power=power, failures_before_power_cycle=2,
                          timeouts_before_reinit=2, observer=lambda step, fields: steps.append(step))
    state = ModemState()
    try:
        sup.poll(state)
        assert state.modem_ready
        sim.hung = True  # the firmware stops answering; the port stays
        boots = sim.boots
        for _ in range(8):
            sup.poll(state)
            if "modem_power_cycle" in steps:
                break
        assert "modem_power_cycle" in steps and power.cycles == 1
        assert factory.pin(26).states[-1].state is True  # the supply is on again
        deadline = time.monotonic() + 10
        while not state.modem_ready and time.monotonic() < deadline:
            sup.poll(state)
        assert state.modem_ready and sim.boots == boots + 1 and state.signal_dbm == -73
    finally:
        glue.stop()
        sup.close()


def test_pwrkey_mode_presses_the_key_twice() -> None:
    factory = MockFactory()
    power = ModemPower(4, mode="pwrkey", off_s=0.05, pin_factory=factory, presses_s=(0.1, 0.05))
    pin = factory.pin(4)
    assert pin.state is False  # the key is released while the modem runs
    power.cycle()
    presses = [s.state for s in pin.states[1:]]
    assert presses == [True, False, True, False]
    power.close()
    with pytest.raises(ValueError):
        ModemPower(5, mode="relay", pin_factory=factory)


def test_per_command_timeouts(sim: ModemSimulator) -> None:
    modem = Modem(sim.port, default_timeout_s=0.5, sms_timeout_s=42.0)
    assert modem.timeout_for("AT+CSQ") == 0.5
    assert modem.timeout_for("AT+COPS?") == COMMAND_TIMEOUTS_S["+COPS"] == 180.0
    assert modem.timeout_for("AT+CMGS=23") == 42.0
    with modem:
        modem.init()
        sim.delay_next("AT+CPIN?", 1.0)  # slower than the default, within +CPIN's 5 s
        assert modem.sim_state() == "READY"
        sim.delay_next("AT+CSQ", 1.5)
        with pytest.raises(ModemTimeout):
            modem.signal()


def test_sms_step_waits_the_sms_timeout(sim: ModemSimulator) -> None:
    with Modem(sim.port, default_timeout_s=0.3, sms_timeout_s=3.0) as modem:
        modem.init()
        sim.delay_next("AT+CMGS", 1.0)  # the network is slow: longer than any other command
        refs = modem.send_sms("+4512345678", "Hjælp i kælderen")
        assert len(refs) == 1


# -- behaviour taken from the manuals' examples --------------------------------------------


def test_sim7600_manual_cgpsinfo_example(sim: ModemSimulator) -> None:
    """SIM7500/SIM7600 Series AT Command Manual, AT+CGPSINFO example."""
    with Modem(sim.port, default_timeout_s=2.0, flavour="sim7600") as modem:
        modem.init()
        sim.garble_next("AT+CGPSINFO", "+CGPSINFO: 3113.343286,N,12121.234064,E,250311,072809.3,44.1,0.0,0")
        fix = modem.gnss()
    assert fix is not None
    assert fix.lat == pytest.approx(31 + 13.343286 / 60) and fix.lon == pytest.approx(121 + 21.234064 / 60)
    assert fix.fixed_at == datetime(2011, 3, 25, 7, 28, 9, 300000, tzinfo=timezone.utc)
    assert fix.altitude_m == 44.1


def test_quectel_manual_qgpsloc_example(sim: ModemSimulator) -> None:
    """Quectel EC25 GNSS AT Commands Manual, AT+QGPSLOC=2 example (decimal degrees)."""
    sim.flavour = "quectel"
    with Modem(sim.port, default_timeout_s=2.0, flavour="quectel") as modem:
        modem.init()
        modem.start_gnss()
        sim.gnss_fix = (1.0, 1.0, 1.0)  # a fix, so the reply is info + OK; its line is the manual's
        sim.garble_next("AT+QGPSLOC=2", "+QGPSLOC: 061951.000,31.84537,117.19882,0.7,62.2,2,0.00,0.0,0.0,110513,09")
        fix = modem.gnss()
    assert fix is not None and (fix.lat, fix.lon, fix.hdop) == (31.84537, 117.19882, 0.7)
    assert fix.accuracy_m == 3.5
    assert fix.fixed_at == datetime(2013, 5, 11, 6, 19, 51, tzinfo=timezone.utc)


def test_quectel_manual_cereg_with_location_and_act(sim: ModemSimulator) -> None:
    """EC25 AT Commands Manual, AT+CEREG? with <n>=2: stat 1 on E-UTRAN (AcT 7)."""
    with Modem(sim.port, default_timeout_s=2.0) as modem:
        modem.init()
        sim.garble_next("AT+CEREG?", '+CEREG: 2,1,"D509","80D413D",7')
        sim.set_registration(cgreg="not_registered", creg="not_registered")
        reg = modem.registration()
    assert (reg.state, reg.technology, reg.act) == ("home", "CEREG", 7)


def test_manual_sim_not_inserted_and_unknown_signal(sim: ModemSimulator) -> None:
    """27.007 / EC25 manual: ``+CME ERROR: 10`` for a missing SIM; ``+CSQ: 99,99`` unknown."""
    with Modem(sim.port, default_timeout_s=2.0) as modem:
        modem.init()
        sim.error_next("AT+CPIN?", "+CME ERROR: 10")
        with pytest.raises(CmeError) as exc:
            modem.sim_state()
        assert (exc.value.code, exc.value.meaning) == (10, "SIM not inserted")
        sim.signal_csq = 99
        signal = modem.signal()
    assert signal.rssi_dbm is None and signal.ber is None


def test_manual_cmgs_pdu_transcript(sim: ModemSimulator) -> None:
    """27.005 §3.5.1 / EC25 manual: AT+CMGF=0, AT+CMGS=<length>, ``> `` prompt, PDU + Ctrl-Z,
    ``+CMGS: <mr>``, ``OK`` — one exchange per part of a concatenated UCS2 message."""
    text = "Pomoc! Pracownik upadł w piwnicy, proszę przyjechać natychmiast. " * 2
    with Modem(sim.port, default_timeout_s=2.0) as modem:
        modem.init()
        reference = modem.next_sms_reference()
        pdus = sms.encode_submit("+48601234567", text, reference=reference)
        refs = [modem.send_pdu(p) for p in pdus]
    host = sim.commands()
    assert "AT+CMGF=0" in host
    assert [c for c in host if c.startswith("AT+CMGS=")] == [f"AT+CMGS={p.tpdu_length}" for p in pdus]
    assert len(refs) == len(pdus) == 2
    decoded = [sms.decode_submit(p) for p in sim.sent_pdus]
    assert {d.concat[0] for d in decoded} == {reference} and "".join(d.text for d in decoded) == text
