"""``lonewatch lab`` across restarts (issue 15, "Installer"): the same directory keeps its
ports, passwords, CA, broker password file and Redis data, so a provisioned device still logs
in and its test alarm still reaches the ARC; the relay logs to ``relay.log``; a lab killed
with SIGKILL leaves no Mosquitto/Redis behind after the next start; a taken port is refused
with a message naming the directory."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labstack import labstate
from labstack.installer_lab import Lab, LabError

BIN = Path(sys.executable).parent
LW = str(BIN / "lonewatch")


@pytest.fixture(autouse=True)
def _remove_lab_broker_dirs(tmp_path):
    """The lab keeps its broker directory in the system temp dir across restarts; a test's
    labs are thrown away with it."""
    yield
    for state in tmp_path.rglob("lab-state.json"):
        try:
            broker_dir = json.loads(state.read_text()).get("broker_dir")
        except ValueError:
            continue
        if broker_dir and Path(broker_dir).name.startswith("lonewatch-lab-broker-"):
            shutil.rmtree(broker_dir, ignore_errors=True)


def _start_lab(directory: Path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([LW, "lab", "--dir", str(directory), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("  image") or not line:
            break
    assert any(ln.startswith("lab running") for ln in lines), "".join(lines)
    return proc


def _stop_lab(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    return out


def _kill(proc: subprocess.Popen, lab: Path) -> None:
    """After a failed test: kill the lab and the servers it would leave behind."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    labstate.stop_leftovers(lab)


def _runs(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _provision(lab: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LW, "provision", *args, "lw-0042", "--worker", "Anna Hansen", "--site", "Vestergade 12", "--account", "1234AB",
         "--zone", "42", "--broker-dir", str(lab / "broker"), "--relay-config", str(lab / "relay.toml"),
         "--out", str(lab / "lw-0042"), "--device-dir", str(lab / "lw-0042"), "--state-dir", str(lab / "lw-0042" / "state")],
        capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("tmp_emptied", [False, True], ids=["restart", "restart-after-reboot"])
def test_a_restarted_lab_keeps_its_provisioned_device_working(tmp_path, tmp_emptied):
    """``tmp_emptied``: the broker directory in the system temp dir is gone (a reboot); the
    lab rebuilds it with the kept copy of the password file."""
    lab = tmp_path / "lab"
    proc = _start_lab(lab)
    try:
        done = _provision(lab)
        assert done.returncode == 0, done.stdout + done.stderr
        first = json.loads((lab / "lab.json").read_text())
        first_state = json.loads((lab / labstate.STATE_FILE).read_text())
        _stop_lab(proc)
        assert stat.S_IMODE((lab / labstate.STATE_FILE).stat().st_mode) == 0o600
        if tmp_emptied:
            shutil.rmtree(first_state["broker_dir"])
        proc = _start_lab(lab)
        again = json.loads((lab / "lab.json").read_text())
        assert again["broker_port"] == first["broker_port"] and again["redis_url"] == first["redis_url"]
        again_state = json.loads((lab / labstate.STATE_FILE).read_text())
        assert {k: v for k, v in again_state.items() if k != "broker_dir"} == \
            {k: v for k, v in first_state.items() if k != "broker_dir"}
        assert (again_state["broker_dir"] != first_state["broker_dir"]) == tmp_emptied
        alarm = subprocess.run([LW, "test-alarm", "-c", str(lab / "lw-0042" / "device.toml")], capture_output=True,
                               text=True, timeout=90)
        assert alarm.returncode == 0, alarm.stdout + alarm.stderr
        assert "ARC ACK from lab-arc" in alarm.stdout
        status = subprocess.run([LW, "status", "--relay-config", str(lab / "relay.toml")], capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0 and "lw-0042" in status.stdout, status.stdout + status.stderr
        _stop_lab(proc)
    finally:
        _kill(proc, lab)
    log = lab / "relay.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "relay." in text and "lw-0042" in text, text[-2000:]
    assert first_state["relay_password"] not in text and first_state["redis_password"] not in text


@pytest.mark.integration
def test_a_lab_killed_with_sigkill_leaves_no_servers_after_the_next_start(tmp_path):
    lab = tmp_path / "lab"
    proc = _start_lab(lab)
    second = None
    try:
        pids = {name: json.loads((lab / name).read_text())["pid"] for name in labstate.SERVER_PID_FILES}
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert all(_runs(pid) for pid in pids.values()), "the servers should outlive a killed lab"
        second = _start_lab(lab)
        assert not any(_runs(pid) for pid in pids.values())
        now = {name: json.loads((lab / name).read_text())["pid"] for name in labstate.SERVER_PID_FILES}
        assert all(_runs(pid) for pid in now.values()) and set(now.values()).isdisjoint(pids.values())
        _stop_lab(second)
        assert not any(_runs(pid) for pid in now.values())
        assert not any((lab / name).exists() for name in labstate.SERVER_PID_FILES)
    finally:
        _kill(proc, lab)
        if second is not None:
            _kill(second, lab)


def test_stop_leftovers_leaves_a_reused_pid_of_another_program_alone(tmp_path):
    other = subprocess.Popen(["sleep", "60"], cwd=tmp_path)
    try:
        labstate.record_server(tmp_path, "mosquitto.pid.json", other.pid, tmp_path)
        assert labstate.stop_leftovers(tmp_path) == []
        assert other.poll() is None and not (tmp_path / "mosquitto.pid.json").exists()
    finally:
        other.kill()
        other.wait()


def test_a_restart_whose_port_is_taken_is_refused_naming_the_directory(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        labstate.save_state(tmp_path, {"broker_port": port, "redis_port": port, "arc_port": port})
        with pytest.raises(LabError) as err:
            Lab(tmp_path).start()
    message = str(err.value)
    assert f"port {port}" in message and str(tmp_path) in message and "another directory" in message
    assert not (tmp_path / "lab.pid").exists() and not (tmp_path / "pki").exists()


def test_a_damaged_state_file_is_refused_naming_it(tmp_path):
    (tmp_path / labstate.STATE_FILE).write_text("{not json")
    with pytest.raises(LabError, match="lab-state.json is damaged"):
        Lab(tmp_path).start()


@pytest.mark.integration
def test_a_certificate_lab_lets_a_certificate_device_log_in(tmp_path):
    lab = tmp_path / "lab"
    proc = _start_lab(lab, "--auth", "certificate")
    try:
        assert json.loads((lab / "lab.json").read_text())["auth"] == "certificate"
        done = _provision(lab, "--auth", "certificate", "--pki-dir", str(lab / "pki"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert (lab / "lw-0042" / "client.crt").exists()
        alarm = subprocess.run([LW, "test-alarm", "-c", str(lab / "lw-0042" / "device.toml")], capture_output=True,
                               text=True, timeout=90)
        assert alarm.returncode == 0, alarm.stdout + alarm.stderr
        assert "ARC ACK from lab-arc" in alarm.stdout
        _stop_lab(proc)
    finally:
        _kill(proc, lab)


@pytest.mark.integration
def test_a_certificate_lab_refuses_a_password_login(tmp_path):
    lab = tmp_path / "lab"
    proc = _start_lab(lab, "--auth", "certificate")
    try:
        done = _provision(lab)  # a password device: the certificate broker must not let it in
        assert done.returncode == 0, done.stdout + done.stderr
        alarm = subprocess.run([LW, "test-alarm", "-c", str(lab / "lw-0042" / "device.toml")], capture_output=True,
                               text=True, timeout=90)
        assert alarm.returncode != 0 and "ARC ACK" not in alarm.stdout
        out = alarm.stdout + alarm.stderr
        assert "FAIL" in out and "broker" in out, out
        _stop_lab(proc)
    finally:
        _kill(proc, lab)


def test_a_restart_with_another_auth_mode_is_refused(tmp_path):
    labstate.save_state(tmp_path, {"auth": "certificate"})
    with pytest.raises(LabError) as err:
        Lab(tmp_path, auth="password").start()
    assert "--auth certificate" in str(err.value) and str(tmp_path) in str(err.value)
