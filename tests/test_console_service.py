"""The console's systemd unit: ``systemd-analyze verify`` and its security exposure, like the
relay's (tests/test_install_files.py); and a console.toml with only ``[redis]`` and
``[console]`` (what the unit reads) is a valid console config."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from console.config import load_console_config

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "lonewatch-console.service"
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def test_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    stub = tmp_path / "bin" / "program"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    text, n = re.subn(r"^ExecStart=\S+", f"ExecStart={stub}", UNIT.read_text(), flags=re.M)
    assert n == 1 and "console run -c /etc/lonewatch/console.toml" in UNIT.read_text()
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr + done.stdout
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True,
                          text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert m is not None and float(m.group(1)) <= 3.0, done.stdout[-800:]


def test_console_toml_without_the_relays_secrets(tmp_path: Path) -> None:
    path = tmp_path / "console.toml"
    path.write_text('[redis]\nurl = "redis://127.0.0.1:6379/0"\n\n[console]\nlisten = "127.0.0.1:8080"\n')
    cfg = load_console_config(path)
    assert cfg.settings.port == 8080 and cfg.redis_url == "redis://127.0.0.1:6379/0"
