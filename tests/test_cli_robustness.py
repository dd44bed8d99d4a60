"""The ``lonewatch`` command under a hostile or new user: bad config, registry and output
paths give file:line or ``error: …`` messages and exit 2, never a Python traceback; warnings
(valid, but unsafe) go to stderr and keep exit 0."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

RELAY = """\
[mqtt]
host = "broker"
{mqtt}
[redis]
url = "redis://127.0.0.1:1/0"
{rest}
"""


def _relay(tmp_path: Path, mqtt: str = "", rest: str = "") -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(RELAY.format(mqtt=mqtt, rest=rest))
    path.chmod(0o600)
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "lonewatch"), *args], capture_output=True, text=True, timeout=60)


def _no_traceback(done) -> None:
    text = getattr(done, "stderr", "") + getattr(done, "stdout", "") if isinstance(done, subprocess.CompletedProcess) else done.output
    assert "Traceback" not in text, text


# ---------------------------------------------------------------------- 1. [registry] file

@pytest.mark.parametrize("content,message", [(None, "missing.toml: cannot read"),
                                             ("[[workers]]\nname = 3\n", "missing.toml:2: workers[0].name")])
def test_relay_run_with_a_missing_or_invalid_registry_file_prints_file_line_and_exits_2(tmp_path, content, message):
    path = _relay(tmp_path, rest='[registry]\nfile = "missing.toml"\n')
    if content is not None:
        (tmp_path / "missing.toml").write_text(content)
    done = _run("relay", "run", "-c", str(path))
    _no_traceback(done)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.parametrize("content,message", [(None, "missing.toml: cannot read"),
                                             ("[[workers]]\nname = 3\n", "missing.toml:2: workers[0].name")])
def test_check_config_relay_checks_the_registry_file(tmp_path, content, message):
    path = _relay(tmp_path, rest='[registry]\nfile = "missing.toml"\n')
    if content is not None:
        (tmp_path / "missing.toml").write_text(content)
    r = CliRunner().invoke(main, ["check-config", "relay", str(path)])
    assert r.exit_code == 2 and message in r.output and "ok" not in r.output, r.output


def test_check_config_relay_accepts_a_valid_registry_file(tmp_path):
    shutil.copy(ROOT / "relay/conf/registry.example.toml", tmp_path / "registry.toml")
    path = _relay(tmp_path, rest='[registry]\nfile = "registry.toml"\n')
    r = CliRunner().invoke(main, ["check-config", "relay", str(path)])
    assert r.exit_code == 0 and r.output.strip().endswith(f"{path}: ok"), r.output


# ---------------------------------------------------------------------- 2. [console]

def test_check_config_relay_reports_a_bad_console_listen_with_file_line(tmp_path):
    path = _relay(tmp_path, rest='[console]\nlisten = "nonsense"\n')
    r = CliRunner().invoke(main, ["check-config", "relay", str(path)])
    assert r.exit_code == 2, r.output
    assert f"{path}:7: console.listen" in r.output and ": ok" not in r.output


def test_check_config_relay_warns_when_the_console_listens_off_loopback(tmp_path):
    path = _relay(tmp_path, rest='[console]\nlisten = "0.0.0.0:8080"\n')
    r = CliRunner().invoke(main, ["check-config", "relay", str(path)])
    assert r.exit_code == 0 and "warning: [console] listen" in r.output and "not a loopback" in r.output, r.output


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "[::1]:8080", "localhost:8080"])
def test_check_config_relay_is_quiet_about_a_loopback_console(tmp_path, listen):
    path = _relay(tmp_path, rest=f'[console]\nlisten = "{listen}"\n')
    r = CliRunner().invoke(main, ["check-config", "relay", str(path)])
    assert r.exit_code == 0 and "warning" not in r.output, r.output


# ---------------------------------------------------------------------- 5. tls = false + password

def test_check_config_relay_warns_about_a_clear_text_password(tmp_path):
    path = _relay(tmp_path, mqtt='tls = false\npassword = "secret"\n')
    r = CliRunner().invoke(main, ["check-config", "relay", str(path)])
    assert r.exit_code == 0 and "clear text" in r.output and r.output.strip().endswith(": ok"), r.output
    quiet = _relay(tmp_path, mqtt='password = "secret"\n')
    r = CliRunner().invoke(main, ["check-config", "relay", str(quiet)])
    assert r.exit_code == 0 and "clear text" not in r.output, r.output


def test_check_config_device_warns_about_a_clear_text_password(tmp_path):
    cfg = tmp_path / "device.toml"
    cfg.write_text('[device]\nid = "lw-0001"\n[mqtt]\ntls = false\npassword = "s3cret-pw"\n'
                   '[sms]\nfallback_numbers = ["+4520110001"]\n')
    cfg.chmod(0o600)
    r = CliRunner().invoke(main, ["check-config", "device", str(cfg)])
    assert r.exit_code == 0 and "clear text" in r.output and "s3cret-pw" not in r.output, r.output


# ---------------------------------------------------------------------- 3. unwritable outputs

def _card_args(tmp_path: Path) -> list[str]:
    shutil.copy(ROOT / "relay/conf/registry.example.toml", tmp_path / "registry.toml")
    return ["card", "--worker", "Anna Hansen", "--registry", str(tmp_path / "registry.toml")]


def _survey_args(tmp_path: Path) -> list[str]:
    (tmp_path / "walk.jsonl").write_text(  # one sample as `lonewatch survey run` records it
        '{"v":1,"i":0,"t":1796126347.723,"dbm":-69,"registration":"home","mqtt_rtt_ms":0.5,"sms_ready":true,'
        '"gnss_fix":true,"lat":55.66857,"lon":12.57613,"beacons":{},"beacon":null,"place":"Entrance",'
        '"place_source":"typed"}\n')
    return ["survey", "report", str(tmp_path / "walk.jsonl")]


def _provision_args(tmp_path: Path) -> list[str]:
    (tmp_path / "broker").mkdir()
    return ["provision", "lw-0042", "--worker", "Anna Hansen", "--site", "Vestergade 12", "--account", "1234AB",
            "--zone", "42", "--broker-dir", str(tmp_path / "broker"), "--broker-host", "mqtt.example",
            "--no-register"]


@pytest.mark.parametrize("args,out_option,target", [
    (_card_args, "-o", "{tmp}/nonexistdir/x.pdf"),
    (_survey_args, "-o", "{tmp}/nonexistdir/r.html"),
    (lambda _: ["survey", "run", "--simulate"], "-o", "/proc/nope/walk.jsonl"),
    (_provision_args, "--out", "/proc/nope"),
    (lambda _: ["pki", "init"], "--dir", "/proc/nope"),
    (lambda t: ["pki", "issue-server", "--dir", str(t / "pki"), "--host", "mqtt.example"], "--out", "/proc/nope"),
    (lambda t: ["pki", "issue-client", "lw-0042", "--dir", str(t / "pki")], "--out", "/proc/nope"),
])
def test_an_unwritable_output_is_an_error_message_not_a_traceback(tmp_path, args, out_option, target):
    target, argv = target.format(tmp=tmp_path), args(tmp_path)
    if argv[1].startswith("issue-"):  # a CA to issue from
        assert _run("pki", "init", "--dir", str(tmp_path / "pki")).returncode == 0
    done = _run(*argv, out_option, target)
    _no_traceback(done)
    assert done.returncode == 2, done.stderr
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("error: cannot write ")]
    assert line, done.stderr
    named = line[0].removeprefix("error: cannot write ").rsplit(": ", 1)[0]  # the target, its sibling or its dir
    assert target.startswith(named) or named.startswith(target.rsplit(".", 1)[0]), line
    assert "No such file or directory" in line[0]
    if args is _provision_args:
        assert not any((tmp_path / "broker").iterdir())  # nothing half-written for the broker


# ---------------------------------------------------------------------- 4. demo and SIGTERM

def _descendants(root: int) -> dict[int, str]:
    """pid → start time (field 22 of /proc/PID/stat) of every process below ``root``."""
    parent: dict[int, int] = {}
    start: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parent[int(entry.name)], start[int(entry.name)] = int(fields[1]), fields[19]
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in out:
                out[child] = start[child]
                todo.append(child)
    return out


def _alive(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


def test_demo_with_console_stopped_by_sigterm_leaves_no_server_running():
    import json

    proc = subprocess.Popen([str(BIN / "lonewatch"), "demo", "--console", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = None
        for line in proc.stdout:  # the demo prints its steps as they happen
            step = json.loads(line)
            if step["step"] == "console_open":
                url = step["url"]
                break
        assert url, proc.stderr.read()
        children = _descendants(proc.pid)
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in children}
        assert {"mosquitto", "redis-server"} <= names and len(children) >= 3, names  # the servers a SIGTERM used to leave behind
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed assertion above: still clean up what the demo started
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert "Traceback" not in err, err
    # (``console_closed`` is on the timeline only when the signal lands in the console's wait;
    # what matters is that nothing is left running.)
    left = [pid for pid, started in children.items() if _alive(pid, started)]
    assert not left, left


# ---------------------------------------------------------------------- 6. README

def test_readme_scenario_table_names_every_demo_scenario():
    from labstack.demo.scenarios import load_all

    readme = (ROOT / "README.md").read_text()
    rows = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")}
    assert set(load_all()) <= rows, set(load_all()) - rows


def test_readme_points_to_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    assert "labstack/demo/mandown_fall.csv" in readme and (ROOT / "labstack/demo/mandown_fall.csv").is_file()
    assert "localstack" not in readme


def test_registry_export_to_an_unwritable_file_is_an_error_message(tmp_path, redis_server):
    shutil.copy(ROOT / "relay/conf/registry.example.toml", tmp_path / "registry.toml")
    r = CliRunner().invoke(main, ["registry", "import", str(tmp_path / "registry.toml"), "--redis", redis_server.url])
    assert r.exit_code == 0, r.output
    for args in (["registry", "export"], ["worker", "export", "Anna Hansen"]):
        target = str(tmp_path / "nonexistdir" / "out.txt")
        r = CliRunner().invoke(main, [*args, "-o", target, "--redis", redis_server.url])
        assert r.exit_code == 2 and f"error: cannot write {target}: No such file or directory" in r.output, r.output
        assert r.exception is None or isinstance(r.exception, SystemExit)
