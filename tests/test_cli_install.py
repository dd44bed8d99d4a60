"""The installer commands as a user meets them: ``--help`` with an example on every command,
shell completion, ``lonewatch lab`` as a process, and the README's "Installing a device"
walkthrough run word for word (``tests/walkthrough_install.sh``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli.main import main

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INSTALL_COMMANDS = ["pki", "pki init", "pki issue-server", "pki issue-client", "pki broker-config", "provision",
                    "flash", "doctor", "test-alarm", "status", "lab", "completion"]


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


def _all_commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        path = f"{prefix}{name}"
        out.append(path)
        if isinstance(cmd, click.Group):
            out += _all_commands(cmd, path + " ")
    return out


@pytest.mark.parametrize("command", INSTALL_COMMANDS)
def test_every_installer_command_has_help_with_an_example(command):
    r = CliRunner().invoke(main, [*command.split(), "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output and "lonewatch " in r.output.split("Example", 1)[1]


def test_the_installer_commands_are_registered_on_the_main_group():
    names = _all_commands(main)
    assert set(INSTALL_COMMANDS) <= set(names)


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F"), ("zsh", "#compdef lonewatch"),
                                          ("fish", "complete --no-files --command lonewatch")])
def test_completion_scripts(shell, marker):
    r = CliRunner().invoke(main, ["completion", shell])
    assert r.exit_code == 0 and marker in r.output and "_LONEWATCH_COMPLETE" in r.output


def test_bash_completion_completes_subcommands():
    env = {**os.environ, "_LONEWATCH_COMPLETE": "bash_complete", "COMP_WORDS": "lonewatch pro", "COMP_CWORD": "1"}
    done = subprocess.run([str(BIN / "lonewatch")], env=env, capture_output=True, text=True, timeout=30)
    assert "plain,provision" in done.stdout


def test_completion_rejects_an_unknown_shell():
    r = CliRunner().invoke(main, ["completion", "powershell"])
    assert r.exit_code == 2


@pytest.mark.integration
def test_lab_runs_until_interrupted_and_refuses_a_second_instance(tmp_path):
    proc = subprocess.Popen([str(BIN / "lonewatch"), "lab", "--dir", str(tmp_path / "lab")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("  image") or not line:
                break
        assert any(ln.startswith("lab running") for ln in lines), "".join(lines)
        second = subprocess.run([str(BIN / "lonewatch"), "lab", "--dir", str(tmp_path / "lab")], capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 1 and "already runs" in second.stderr
        assert (tmp_path / "lab" / "broker" / "passwd").exists()
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0 and "lab stopped" in rest
        # the broker directory (device logins) and the CA stay for the next start (issue 15)
        assert (tmp_path / "lab" / "broker" / "passwd").exists() and (tmp_path / "lab" / "pki" / "ca.key").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.integration
@pytest.mark.timeout(900)  # a cold wheel cache: flash fetches the device's wheels first (installer/supply.py)
def test_installing_a_device_walkthrough_works_as_written(tmp_path, wheel_cache):
    """The README walkthrough, run as a new user would: every command must succeed."""
    from installer.supply import build_supply
    build_supply(wheel_cache)  # what the walkthrough's flash uses, outside its 110 s budget
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "LONEWATCH_WHEEL_CACHE": str(wheel_cache)}
    done = subprocess.run(["bash", str(ROOT / "tests" / "walkthrough_install.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=110)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "provisioned lw-0042: new credentials" in out
    assert "read back and verified" in out
    assert "all checks passed" in out
    assert len(re.findall(r"^PASS ", out, flags=re.M)) == 11  # README: "eleven `PASS` lines"
    assert re.search(r"ARC ACK from lab-arc\s+after \d+ ms", out)
    assert re.search(r"^lw-0042\s+Anna Hansen\s+Vestergade 12\s+\d+ s ago", out, flags=re.M)
    assert "lab stopped" in out


def test_readme_walkthrough_matches_the_tested_script():
    """If the README has the walkthrough, its commands are the ones the test runs."""
    readme = ROOT / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if "## Installing a device" not in text:
        pytest.skip("README has no 'Installing a device' section yet")
    section = text.split("## Installing a device", 1)[1].split("\n## ", 1)[0]
    section = "\n".join(re.findall(r"```(?:sh|bash|console)?\n(.*?)```", section, flags=re.S))
    script = (ROOT / "tests" / "walkthrough_install.sh").read_text()

    def commands(src: str) -> list[str]:
        joined = re.sub(r"\\\n\s*", " ", src)
        return [" ".join(ln.split()) for ln in joined.splitlines() if ln.strip().startswith("lonewatch ")]

    assert commands(section) and commands(section) == commands(script)


def test_check_config_warns_about_no_sms_fallback_and_readable_secrets(tmp_path):
    cfg = tmp_path / "device.toml"
    cfg.write_text('[device]\nid = "lw-0001"\n[mqtt]\npassword = "s3cret-pw"\n')
    os.chmod(cfg, 0o644)
    r = CliRunner().invoke(main, ["check-config", "device", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "no [sms] fallback numbers" in r.output and "readable by others (mode 644)" in r.output
    assert "s3cret-pw" not in r.output
    cfg.write_text('[device]\nid = "lw-0001"\n[mqtt]\npassword = "s3cret-pw"\n[sms]\nfallback_numbers = ["+4520110001"]\n')
    os.chmod(cfg, 0o600)
    r = CliRunner().invoke(main, ["check-config", "device", str(cfg)])
    assert r.exit_code == 0 and "warning" not in r.output
