"""``lonewatch doctor``, ``test-alarm``, ``status`` and ``lab`` against a real installation:
:class:`labstack.installer_lab.Lab` (Mosquitto with the production TLS config, Redis, a relay, pysiaalarm
as the ARC), a device provisioned into it, the modem simulator on a pty and gpiozero
MockFactory pins pressed like a finger."""

from __future__ import annotations

import json
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from device.config import load_device_config, write_device_config
from device.doctor import CLOCK_LIMIT_S, Doctor, RoundTrip
from protocol.messages import Alive, Event, encode
from installer import pki
from cli.main import main
from labstack.installer_lab import Lab
from installer.provision import ProvisionRequest, provision
from relay.store import Store

from .mqtt_probe import Probe

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(tmp_path_factory.mktemp("lab")) as running:
        yield running


def _provision(lab: Lab, tmp: Path, device: str, zone: int, *, register: bool = True) -> Path:
    info = lab.info
    out = tmp / device
    provision(ProvisionRequest(
        device_id=device, worker=f"Worker {zone}", site="Vestergade 12", broker_dir=info.broker_dir, out_dir=out,
        broker_host="localhost", broker_port=info.broker_port, account=info.account, zone=zone,
        redis_url=info.redis_url if register else None, device_dir=str(out), state_dir=str(out / "state"),
    ))  # fmt: skip
    return out / "device.toml"


@pytest.fixture(scope="module")
def device_toml(lab, tmp_path_factory) -> Path:
    return _provision(lab, tmp_path_factory.mktemp("devices"), "lw-0042", 42)


def _doctor(*args: str) -> tuple[int, dict]:
    r = CliRunner().invoke(main, ["doctor", *args, "--json"])
    return r.exit_code, json.loads(r.stdout[r.stdout.index("{"):])


def _by_name(doc: dict) -> dict[str, dict]:
    return {c["check"]: c for c in doc["checks"]}


# --------------------------------------------------------------------------- doctor


def test_doctor_passes_every_check_on_a_good_installation(lab, device_toml):
    code, doc = _doctor("-c", str(device_toml), "--simulate")
    checks = _by_name(doc)
    assert code == 0 and doc["failures"] == 0
    assert [c["check"] for c in doc["checks"]] == ["config", "button", "modem.port", "modem.sim", "modem.registration",
                                                  "modem.signal", "modem.gnss", "modem.voice", "broker", "relay", "clock"]
    assert all(c["status"] == "pass" for c in doc["checks"]), doc
    assert checks["broker"]["tls"].startswith("TLSv1.")
    assert abs(checks["clock"]["offset_s"]) < CLOCK_LIMIT_S
    stored = Store.from_url(lab.info.redis_url).event(checks["relay"]["event"])
    assert stored is not None and stored[0].kind == "test"


def test_doctor_human_output_has_the_prompt_and_one_line_per_check(device_toml):
    r = CliRunner().invoke(main, ["doctor", "-c", str(device_toml), "--simulate", "--skip", "modem"])
    assert r.exit_code == 0, r.output
    assert ">>> Press the panic button now (GPIO 17)" in r.output
    assert "PASS button" in r.output and "skip modem.port" in r.output and "all checks passed" in r.output


def test_wrong_password_fails_the_broker_check_with_the_fix(device_toml, tmp_path):
    cfg = load_device_config(device_toml)
    bad = tmp_path / "device.toml"
    write_device_config(replace(cfg, mqtt=replace(cfg.mqtt, password="not-the-password")), bad)
    code, doc = _doctor("-c", str(bad), "--simulate", "--skip", "button", "--skip", "modem")
    checks = _by_name(doc)
    assert code == 1 == doc["failures"]
    assert checks["broker"]["status"] == "fail" and "re-run `lonewatch provision`" in checks["broker"]["fix"]
    assert checks["relay"]["status"] == "skip" and checks["clock"]["status"] == "skip"


def test_a_foreign_ca_fails_the_broker_check(device_toml, tmp_path):
    pki.init_ca(tmp_path / "other-ca")
    cfg = load_device_config(device_toml)
    bad = tmp_path / "device.toml"
    write_device_config(replace(cfg, mqtt=replace(cfg.mqtt, ca_file=str(tmp_path / "other-ca" / "ca.crt"))), bad)
    code, doc = _doctor("-c", str(bad), "--skip", "button", "--skip", "modem")
    broker = _by_name(doc)["broker"]
    assert code == 1 and "certificate rejected" in broker["detail"] and "project CA" in broker["fix"]


def test_no_broker_listening(device_toml, tmp_path):
    from labstack.servers import free_port

    cfg = load_device_config(device_toml)
    bad = tmp_path / "device.toml"
    write_device_config(replace(cfg, mqtt=replace(cfg.mqtt, port=free_port())), bad)
    code, doc = _doctor("-c", str(bad), "--skip", "button", "--skip", "modem")
    assert code == 1 and "nothing listens" in _by_name(doc)["broker"]["detail"]


def test_no_broker_listening_names_the_port_change_and_the_labs_port_now(lab, device_toml, tmp_path):
    # A device provisioned against a lab whose broker moved (lab restarted over a new
    # directory, broker reconfigured): the fix names the likely cause and the lab's port now
    # (issue 15). The lab's lab-state.json is found next to the device's directories.
    from labstack.servers import free_port

    cfg = load_device_config(device_toml)
    old_port = free_port()
    bad = tmp_path / "device.toml"
    write_device_config(replace(cfg, mqtt=replace(cfg.mqtt, port=old_port)), bad)
    code, doc = _doctor("-c", str(bad), "--skip", "button", "--skip", "modem")
    broker = _by_name(doc)["broker"]
    assert code == 1 and f"nothing listens on localhost:{old_port}" in broker["detail"]
    assert "port likely changed since lw-0042 was provisioned" in broker["fix"]
    assert "`lonewatch provision` for lw-0042" in broker["fix"]
    assert f"the lab in {lab.dir.resolve()} uses port {lab.info.broker_port} now" in broker["fix"]
    state = json.loads((lab.dir / "lab-state.json").read_text())
    assert state["relay_password"] not in broker["fix"] and state["redis_password"] not in broker["fix"]


def test_port_change_hint_without_a_lab_and_over_damaged_state(tmp_path):
    from device.doctor_hints import find_lab_ports, port_changed_fix

    dev = tmp_path / "site" / "devices" / "lw-0007"
    dev.mkdir(parents=True)
    plain = port_changed_fix("localhost", 18830, "lw-0007", [dev])
    assert "port likely changed" in plain and "the lab in" not in plain
    # A damaged or foreign file next to the device gives no hint and no error.
    (tmp_path / "site" / "lab").mkdir()
    (tmp_path / "site" / "lab" / "lab-state.json").write_text("{not json")
    (tmp_path / "site" / "other").mkdir()
    (tmp_path / "site" / "other" / "lab-state.json").write_text('{"broker_port": "x"}')
    assert find_lab_ports([dev]) == {}
    (tmp_path / "site" / "lab" / "lab-state.json").write_text('{"broker_port": 24001, "relay_password": "s3cret"}')
    assert find_lab_ports([dev]) == {(tmp_path / "site" / "lab").resolve(): 24001}
    fix = port_changed_fix("127.0.0.1", 18830, "lw-0007", [dev])
    assert "uses port 24001 now" in fix and "s3cret" not in fix
    # The lab's own port, nothing listening: the lab is not running.
    assert "is not running" in port_changed_fix("localhost", 24001, "lw-0007", [dev])
    # A broker on another host: a lab on this machine says nothing about it.
    assert "the lab in" not in port_changed_fix("broker.example.net", 18830, "lw-0007", [dev])


def test_an_unregistered_device_fails_the_relay_round_trip(lab, tmp_path):
    toml = _provision(lab, tmp_path, "lw-0099", 99, register=False)
    code, doc = _doctor("-c", str(toml), "--skip", "button", "--skip", "modem", "--relay-timeout", "1.5")
    checks = _by_name(doc)
    assert code == 1 and checks["broker"]["status"] == "pass"
    assert checks["relay"]["status"] == "fail" and "registered" in checks["relay"]["fix"]
    assert checks["clock"]["status"] == "skip"
    letters = Store.from_url(lab.info.redis_url).dead_letters()
    assert any("lw-0099" in d["topic"] and "unknown device" in d["reason"] for d in letters)


def test_exit_code_counts_the_failures(device_toml, tmp_path):
    cfg = load_device_config(device_toml)
    bad = tmp_path / "device.toml"
    write_device_config(replace(cfg, mqtt=replace(cfg.mqtt, password="wrong"), modem=replace(cfg.modem, port="/dev/nonexistent-modem")), bad)
    code, doc = _doctor("-c", str(bad), "--skip", "button")
    assert code == doc["failures"] == 2
    assert {c["check"] for c in doc["checks"] if c["status"] == "fail"} == {"modem.port", "broker"}


@pytest.fixture
def sim_cfg(device_toml):
    return load_device_config(device_toml)


def test_modem_problems_each_fail_with_their_fix(sim_cfg):
    from modem.simulator import ModemSimulator

    cfg = replace(sim_cfg, modem=replace(sim_cfg.modem, flavour="sim7600"))
    with ModemSimulator(flavour="sim7600", sim_state="SIM PIN") as sim:
        checks = {c.name: c for c in Doctor(replace(cfg, modem=replace(cfg.modem, port=sim.port))).run(frozenset({"button", "broker", "clock"}))}
    assert checks["modem.sim"].status == "fail" and "sim_pin" in checks["modem.sim"].fix

    with ModemSimulator(flavour="sim7600") as sim:
        sim.signal_csq = 2  # −109 dBm
        sim.set_registration(creg="searching", cgreg="searching", cereg="searching")
        checks = {c.name: c for c in Doctor(replace(cfg, modem=replace(cfg.modem, port=sim.port))).run(frozenset({"button", "broker", "clock"}))}
    assert checks["modem.registration"].status == "fail" and "antenna" in checks["modem.registration"].fix
    assert checks["modem.signal"].status == "fail" and checks["modem.signal"].data["signal_dbm"] == -109
    assert checks["modem.gnss"].status == "warn"  # the simulator has no fix unless told


def test_serial_console_on_the_modem_uart_says_how_to_disable_it(sim_cfg):
    from modem.simulator import ModemSimulator

    with ModemSimulator(flavour="sim7600") as sim:
        sim.serial_console = True  # agetty answers: "Password:" after "AT"
        mc = replace(sim_cfg.modem, port=sim.port, flavour="sim7600")
        checks = {c.name: c for c in Doctor(replace(sim_cfg, modem=mc)).run(frozenset({"button", "broker", "clock"}))}
    port = checks["modem.port"]
    assert port.status == "fail" and "login console" in port.detail
    assert "raspi-config" in port.fix and "console=serial0" in port.fix and "cmdline.txt" in port.fix


def test_button_not_pressed_in_time_fails(sim_cfg):
    from gpiozero.pins.mock import MockFactory

    doctor = Doctor(sim_cfg, pin_factory=MockFactory(), button_timeout_s=0.3)
    checks = {c.name: c for c in doctor.run(frozenset({"modem", "broker", "clock"}))}
    assert checks["button"].status == "fail" and "wiring" in checks["button"].fix
    assert doctor.failures == 1


def test_clock_offset_beyond_20_s_fails():
    doctor = Doctor.__new__(Doctor)
    doctor.results, doctor.report = [], lambda c: None
    doctor._clock(RoundTrip("lw-1:1", sent_at=1000.0, received_at=1000.2, received_after_s=0.2, relay_ts=970.0))
    doctor._clock(RoundTrip("lw-1:2", sent_at=1000.0, received_at=1000.2, received_after_s=0.2, relay_ts=995.0))
    late, fine = doctor.results
    assert late.status == "fail" and "ahead of the relay by 30.1 s" in late.detail and "timedatectl" in late.fix
    assert fine.status == "pass" and fine.data["offset_s"] == pytest.approx(5.1)


# --------------------------------------------------------------------------- test-alarm


def test_test_alarm_reaches_the_arc_as_contact_id_601(lab, device_toml, wait_until):
    r = CliRunner().invoke(main, ["test-alarm", "-c", str(device_toml), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["contact_id"] == "601" and doc["arc"]["receiver"] == "lab-arc"
    assert doc["received_ms"] <= doc["arc_ack_ms"]
    # pysiaalarm records the frame just after its ACK (which the command already reported)
    assert wait_until(lambda: any(e["code"] == "601" for e in list(lab.arc.events)), 10)
    decoded = [e for e in lab.arc.events if e["code"] == "601"]
    assert decoded and decoded[-1]["account"] == lab.info.account and decoded[-1]["zone"] == 42
    human = CliRunner().invoke(main, ["test-alarm", "-c", str(device_toml)])
    assert human.exit_code == 0 and "ARC ACK from lab-arc" in human.output


def test_test_alarm_without_the_broker_fails_with_the_fix(device_toml, tmp_path):
    cfg = load_device_config(device_toml)
    bad = tmp_path / "device.toml"
    write_device_config(replace(cfg, mqtt=replace(cfg.mqtt, password="wrong")), bad)
    r = CliRunner().invoke(main, ["test-alarm", "-c", str(bad), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["ok"] is False


def test_test_event_stays_queued_until_the_relay_took_it(lab, device_toml):
    """The test event is in the device's durable queue before it is sent, and leaves it on
    the ``received`` ack — like every event (SPEC §2)."""
    from device.queue import EventQueue

    cfg = load_device_config(device_toml)
    r = CliRunner().invoke(main, ["test-alarm", "-c", str(device_toml), "--json"])
    assert r.exit_code == 0
    with EventQueue(cfg.queue_path) as q:
        assert q.depth() == 0


def test_root_running_test_alarm_leaves_the_queue_to_the_daemons_user(lab, device_toml):
    """``sudo lonewatch test-alarm`` must not leave a root-owned queue.db behind: the daemon
    runs as its own user and could no longer write its queue."""
    import os
    import pwd
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="lonewatch-owner-"))
    try:
        os.chmod(base, 0o755)
        state = base / "state"
        state.mkdir(mode=0o700)
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        # A fresh state folder for a device id the lab has heard before: start its sequence past
        # the earlier tests' event ids, or the relay rightly reports the ids as reused (issue 15).
        from device.queue import EventQueue

        EventQueue(state / "queue.db", sequence_floor=int(time.time()) + 1_000_000).close()
        for f in state.iterdir():
            os.chown(f, nobody.pw_uid, nobody.pw_gid)
        cfg = load_device_config(device_toml)
        toml = base / "device.toml"
        write_device_config(replace(cfg, device=replace(cfg.device, state_dir=str(state))), toml)
        r = CliRunner().invoke(main, ["test-alarm", "-c", str(toml), "--json"])
        assert r.exit_code == 0, r.output
        assert os.geteuid() == 0  # back to root
        owners = {p.name: p.stat().st_uid for p in state.iterdir()}
        assert owners and set(owners.values()) == {nobody.pw_uid}, owners
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- status


def test_status_shows_last_seen_shift_battery_signal_and_open_alarms(lab, tmp_path, wait_until):
    toml = _provision(lab, tmp_path, "lw-0077", 77)
    password = tomllib.loads(toml.read_text())["mqtt"]["password"]
    probe = Probe(lab.info.broker_port, "lw-0077", password, ca=toml.with_name("ca.crt"))
    assert probe.connect() == "Success"
    try:
        now = time.time()
        probe.publish("lonewatch/lw-0077/alive", encode(Alive("lw-0077", now, 81, -71, "home", None, 10.0, "0.1.0", 0)))
        probe.publish("lonewatch/lw-0077/event", encode(Event("lw-0077", 1, "shift_start", now)))
        probe.publish("lonewatch/lw-0077/event", encode(Event("lw-0077", 2, "panic", now)))
        store = Store.from_url(lab.info.redis_url)

        def row():
            from relay.status_report import collect

            return collect(store, ["lw-0077"])[0]

        assert wait_until(lambda: row().open_alarms and row().on_shift and row().battery_pct == 81, timeout_s=10)
    finally:
        probe.close()
    r = CliRunner().invoke(main, ["status", "--relay-config", str(lab.info.relay_config), "lw-0077", "--json"])
    assert r.exit_code == 0, r.output
    (doc,) = json.loads(r.stdout)
    assert doc["on_shift"] is True and doc["signal_dbm"] == -71 and doc["worker"] == "Worker 77"
    assert doc["open_alarms"][0].startswith("panic lw-0077:2")
    table = CliRunner().invoke(main, ["status", "--relay-config", str(lab.info.relay_config)])
    line = next(ln for ln in table.output.splitlines() if ln.startswith("lw-0077"))
    assert "81 %" in line and "-71 dBm" in line and " on " in line and "1: panic" in line
    assert table.output.splitlines()[0].split()[:3] == ["DEVICE", "WORKER", "SITE"]


def test_status_errors(lab, tmp_path):
    r = CliRunner().invoke(main, ["status", "--relay-config", str(lab.info.relay_config), "lw-nope", "--json"])
    assert r.exit_code == 1
    r = CliRunner().invoke(main, ["status", "--redis-url", "redis://127.0.0.1:1/0"])
    assert r.exit_code == 3 and "unreachable" in r.output
    r = CliRunner().invoke(main, ["status", "--relay-config", str(tmp_path / "missing.toml")])
    assert r.exit_code == 2
