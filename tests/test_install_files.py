"""The files an installation is made of: systemd units (``systemd-analyze verify``), the
first-boot scripts, the udev rule, the production broker config, and the hardware docs
against the defaults in ``device/config.py``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.dom.minidom
from pathlib import Path

import pytest

from device.config import BatteryConfig, GpioConfig, ModemConfig

ROOT = Path(__file__).resolve().parents[1]
UNITS = ("lonewatch-device.service", "lonewatch-relay.service", "lonewatch-install.service")
ANALYZE = shutil.which("systemd-analyze")


def _unit(name: str) -> dict[str, list[str]]:
    """key → values of a unit file (sections flattened; keys are unique across ours)."""
    out: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian package systemd)")
@pytest.mark.parametrize("name", UNITS)
def test_unit_passes_systemd_analyze_verify(name, tmp_path):
    # verify insists that ExecStart's program exists: point it at a stand-in, nothing else changes.
    text = (ROOT / "systemd" / name).read_text()
    stub = tmp_path / "bin" / "program"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    text, n = re.subn(r"^ExecStart=\S+", f"ExecStart={stub}", text, flags=re.M)
    assert n == 1
    unit = tmp_path / name
    unit.write_text(text)
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "" and done.stdout.strip() == "", done.stderr + done.stdout


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian package systemd)")
@pytest.mark.parametrize("name", ["lonewatch-device.service", "lonewatch-relay.service"])
def test_services_are_hardened(name, tmp_path):
    shutil.copyfile(ROOT / "systemd" / name, tmp_path / name)
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(tmp_path / name)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert m is not None, done.stdout + done.stderr
    assert float(m.group(1)) <= 3.0  # systemd: "OK" ends at 3.9; ours should stay well inside


def test_device_unit_has_what_the_issue_asks():
    u = _unit("lonewatch-device.service")
    assert u["Type"] == ["notify"] and u["Restart"] == ["always"] and int(u["WatchdogSec"][0]) > 0
    assert u["WorkingDirectory"] == ["/var/lib/lonewatch"] and "/var/lib/lonewatch" in u["ReadWritePaths"]
    assert u["User"] == ["lonewatch"] and {"gpio", "dialout"} <= set(u["SupplementaryGroups"][0].split())
    assert u["NoNewPrivileges"] == ["yes"] and u["ProtectSystem"] == ["strict"]
    assert u["ExecStart"][0].endswith("python -m device -c /etc/lonewatch/device.toml")  # no click needed


def test_relay_unit_is_hardened_the_same_way():
    u = _unit("lonewatch-relay.service")
    assert u["Restart"] == ["always"] and u["NoNewPrivileges"] == ["yes"] and u["ProtectSystem"] == ["strict"]
    assert u["User"] == ["lonewatch-relay"] and u["ExecStart"][0].endswith("lonewatch relay run -c /etc/lonewatch/relay.toml")


def test_every_shipped_file_stands_once_and_the_wheel_carries_it(tmp_path):
    """The units live only in systemd/, the udev rule only in hardware/ (issue 9: every file
    stands once); `lonewatch flash` reads them as package data, also from a built wheel."""
    import zipfile

    from installer.payload import read_payload
    assert not (ROOT / "relay" / "conf" / "lonewatch-device.service").exists()
    for name, src in (("lonewatch-device.service", "systemd"), ("lonewatch-install.service", "systemd"),
                      ("99-lonewatch-modem.rules", "hardware"), ("lonewatch-firstboot.sh", "installer/files")):
        assert read_payload(name) == (ROOT / src / name).read_bytes()
    with pytest.raises(FileNotFoundError, match="not a file lonewatch ships"):
        read_payload("../../etc/passwd")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("lonewatch-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert z.read("installer/units/lonewatch-device.service") == (ROOT / "systemd" / "lonewatch-device.service").read_bytes()
        assert z.read("installer/udev/99-lonewatch-modem.rules") == (ROOT / "hardware" / "99-lonewatch-modem.rules").read_bytes()
        assert z.read("relay/conf/acl") == (ROOT / "relay" / "conf" / "acl").read_bytes()


@pytest.mark.parametrize("script", ["lonewatch-firstboot.sh", "lonewatch-firstrun.sh", "lonewatch-install.sh"])
def test_first_boot_scripts_are_valid_bash(script):
    done = subprocess.run(["bash", "-n", str(ROOT / "installer" / "files" / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_first_boot_removes_the_secrets_from_the_fat_partition():
    text = (ROOT / "installer" / "files" / "lonewatch-firstboot.sh").read_text()
    assert re.search(r"for f in device\.toml client\.key; do\n\s+if .*shred -u", text)
    assert "install -m 0600 -o lonewatch -g lonewatch \"$SRC/device.toml\" /etc/lonewatch/device.toml" in text


def test_udev_rule_names_the_modem_and_keeps_modemmanager_away():
    rules = [ln for ln in (ROOT / "hardware" / "99-lonewatch-modem.rules").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert len(rules) >= 3
    for rule in rules:
        pairs = [p.strip() for p in rule.split(",")]
        assert all(re.fullmatch(r'[A-Z_]+(\{[A-Za-z_]+\})?(==|\+=|=)"[^"]*"', p) for p in pairs), rule
        assert 'SYMLINK+="lonewatch-modem"' in pairs and 'ENV{ID_MM_DEVICE_IGNORE}="1"' in pairs
    assert ModemConfig.port == "/dev/lonewatch-modem"


def test_hardware_readme_wiring_matches_the_default_config():
    text = (ROOT / "hardware" / "README.md").read_text()
    rows = {cells[1].strip(): cells[2] for cells in (ln.split("|") for ln in text.splitlines()) if len(cells) > 4}
    expected = {"panic button": GpioConfig.button_pin, "LED": GpioConfig.led_pin,
                "vibration motor": GpioConfig.vibration_pin, "buzzer": GpioConfig.buzzer_pin,
                "modem power": ModemConfig.power_pin}
    for function, pin in expected.items():
        assert re.search(rf"\*\*{pin}\*\*", rows[function]), (function, rows[function])
    assert f"0x{BatteryConfig.i2c_address:02x}" in text.lower()
    for phrase in ("enable_uart=1", "dtoverlay=disable-bt", "console=serial0,115200", "ID_MM_DEVICE_IGNORE",
                   "breakaway", "Battery life"):
        assert phrase in text


def test_power_budget_arithmetic_adds_up():
    text = (ROOT / "hardware" / "README.md").read_text()
    table = text[text.index("| consumer |"):text.index("**total at 5 V**")]
    watts = [float(w) for w in re.findall(r"\| ([0-9.]+) W \|", table)]
    assert sum(watts) == pytest.approx(1.05, abs=0.005)
    assert round(1.05 / 0.85, 2) == 1.24 and round(10.8 * 0.9 / 1.24, 1) == 7.8
    assert "**1.05 W**" in text and "**1.24 W**" in text and "≈ **7.8 h**" in text


def test_wiring_diagram_is_well_formed_svg_with_the_default_pins():
    svg = (ROOT / "hardware" / "wiring.svg").read_text()
    doc = xml.dom.minidom.parseString(svg)
    assert doc.documentElement.tagName == "svg"
    for gpio in (GpioConfig.button_pin, GpioConfig.led_pin, GpioConfig.vibration_pin):
        assert f"GPIO {gpio}<" in svg
    assert "MAX17048" in svg and "0x36" in svg


def test_config_patch_turns_the_uart_on_and_the_console_off():
    patch = (ROOT / "hardware" / "config.txt.patch").read_text().splitlines()
    assert "+enable_uart=1" in patch and "+dtoverlay=disable-bt" in patch
    assert any(ln.startswith("-console=serial0,115200") for ln in patch)
    assert not any(ln.startswith("+") and "console=serial0" in ln for ln in patch)
