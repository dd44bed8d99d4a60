"""``python -m device``: the daemon entry point systemd uses (no click needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_bad_config_exits_2_with_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "device.toml"
    cfg.write_text('[device]\nid = "lw-0001"\n[mqtt]\nport = "x"\n')
    proc = subprocess.run([sys.executable, "-m", "device", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"{cfg}:4: mqtt.port: must be an integer 1..65535" in proc.stderr


def test_daemon_entry_does_not_import_click(tmp_path: Path) -> None:
    code = "import sys, device.__main__, device.service, device.daemon; print('click' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "False"
