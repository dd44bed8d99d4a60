"""Issue 15, supply chain of the device: ``lonewatch flash`` puts the lonewatch wheel it was run
from and the device's dependencies on the card, and the first boot installs only from them.
The test flashes a test image the way an installer does, takes the wheels back out of the FAT
partition with mtools, and installs them into a fresh venv with no index reachable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from installer import supply as supply_mod
from installer.bootpart import boot_partition, make_test_image
from installer.supply import PI_TARGETS, SupplyError, build_supply, lonewatch_wheel

pytestmark = pytest.mark.timeout(900)  # the first build of a run fetches the wheels (then cached)

ROOT = Path(__file__).resolve().parent.parent
DEVICE_TOML = """[device]
id = "lw-0042"

[mqtt]
host = "mqtt.example.com"
password = "s3cret-s3cret-s3cret"
ca_file = "/etc/lonewatch/ca.crt"
"""


@pytest.fixture
def flashed(tmp_path, supply_env) -> tuple[Path, dict]:
    """A test image flashed by the CLI; returns (the card's wheels folder extracted, flash's JSON)."""
    img = make_test_image(tmp_path / "raspios.img")
    (tmp_path / "dev").mkdir()
    config = tmp_path / "dev" / "device.toml"
    config.write_text(DEVICE_TOML)
    card = tmp_path / "card.img"
    r = CliRunner().invoke(main, ["flash", str(img), str(card), "--config", str(config), "--json"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "from-card"
    part = boot_partition(card)
    done = subprocess.run(["mcopy", "-s", "-n", "-i", f"{card}@@{part.start}", "::/lonewatch/wheels", str(out)],
                          capture_output=True, text=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    assert done.returncode == 0, done.stderr
    return out, json.loads(r.output[r.output.index("{"):])


def _offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # no config files (this machine's pip.conf names local mirrors), and an index nobody answers on
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/", PIP_NO_CACHE_DIR="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def test_a_flashed_card_installs_offline_into_a_fresh_venv(flashed, tmp_path):
    wheels, result = flashed
    ver = version("lonewatch")
    assert result["lonewatch_wheel"] == f"lonewatch-{ver}-py3-none-any.whl"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    env = _offline_env()
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--find-links", str(wheels),
                           f"lonewatch[device]=={ver}", "click"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    probe = ("import device, device.daemon, gpiozero, serial, paho.mqtt.client, smbus2, bleak, click\n"
             "import importlib.metadata as m; print(device.__file__); print(m.version('lonewatch'))")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, got = done.stdout.split()
    assert where.startswith(str(venv)) and got == ver  # the card's software, not this worktree's


def test_the_index_is_really_unreachable_for_that_install(flashed, tmp_path):
    """The control: the same pip, asked for a name not on the card, fails — nothing came from an index."""
    wheels, _ = flashed
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--find-links", str(wheels), "redis"],
                          capture_output=True, text=True, env=_offline_env(), cwd=tmp_path)
    assert done.returncode != 0 and "No matching distribution" in done.stderr
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--retries", "0", "--timeout", "2", "redis"],
                          capture_output=True, text=True, env=_offline_env(), cwd=tmp_path)
    assert done.returncode != 0


def test_the_card_carries_the_running_source_and_every_pi_dependency(flashed):
    wheels, _ = flashed
    ver = version("lonewatch")
    with zipfile.ZipFile(wheels / f"lonewatch-{ver}-py3-none-any.whl") as z:
        assert z.read("installer/supply.py") == (ROOT / "installer" / "supply.py").read_bytes()
        assert z.read("device/daemon.py") == (ROOT / "device" / "daemon.py").read_bytes()
    names = sorted(p.name for p in wheels.iterdir())
    for dep in ("gpiozero", "colorzero", "pyserial", "paho_mqtt", "smbus2", "bleak", "click"):
        assert any(n.startswith(f"{dep}-") and n.endswith("-none-any.whl") for n in names), (dep, names)
    # bleak's D-Bus library needs a platform wheel: aarch64 has one on PyPI, armv7l is hash-pinned
    assert any(n.startswith("dbus_fast-") and "aarch64" in n for n in names), names
    pinned = (wheels / "requirements-armv7l.txt").read_text()
    assert re.search(r"^dbus-fast==[\d.]+ --hash=sha256:[0-9a-f]{64}$", pinned, re.M), pinned


def test_first_boot_installs_only_from_the_card():
    text = (ROOT / "installer" / "files" / "lonewatch-install.sh").read_text()
    installs = [ln for ln in text.splitlines() if re.search(r"pip\"? install", ln) and not ln.lstrip().startswith("#")]
    assert len(installs) == 2, installs
    for ln in installs:
        assert "--no-index --find-links" in ln or "--require-hashes" in ln, ln
    assert 'no lonewatch wheel in $WHEELS' in text  # no wheel on the card: stop, never fall back to an index
    done = subprocess.run(["bash", "-c", text.replace("@VERSION@", "0.1.0")], capture_output=True, text=True,
                          env={**os.environ, "LONEWATCH_WHEELS": "/nonexistent"})
    assert done.returncode == 1 and "flash the card again" in done.stderr


def test_the_build_is_cached_and_not_repeated(supply_env, monkeypatch):
    first = build_supply(supply_env)
    monkeypatch.setattr(supply_mod, "_pip", lambda *a: pytest.fail(f"pip ran again: {a}"))
    again = build_supply(supply_env)
    assert again.files == first.files and first.wheels[0].name.startswith(f"lonewatch-{version('lonewatch')}-")
    assert {t.name for t in PI_TARGETS} == {"aarch64", "armv7l"}


def test_a_source_tree_of_another_version_is_refused(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "pyproject.toml").write_text('[project]\nname = "lonewatch"\nversion = "9.9.9"\n')
    with pytest.raises(SupplyError, match="source tree is lonewatch 9.9.9 but the running CLI is"):
        lonewatch_wheel(tmp_path / "cache", tree=tree)


def test_without_a_source_tree_only_a_wheel_of_the_running_version_is_taken(tmp_path):
    ver = version("lonewatch")
    with pytest.raises(SupplyError, match="runs from an installed wheel"):
        lonewatch_wheel(tmp_path / "cache", tree=tmp_path, given=[tmp_path / "lonewatch-0.0.1-py3-none-any.whl"])
    good = tmp_path / f"lonewatch-{ver}-py3-none-any.whl"
    assert lonewatch_wheel(tmp_path / "cache", tree=tmp_path, given=[good]) == good


def test_a_failed_fetch_leaves_the_card_untouched(tmp_path, monkeypatch):
    img = make_test_image(tmp_path / "raspios.img")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "device.toml").write_text(DEVICE_TOML)
    monkeypatch.setenv("LONEWATCH_WHEEL_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(supply_mod, "_dependencies", lambda *a: (_ for _ in ()).throw(SupplyError("pip download failed: offline")))
    card = tmp_path / "card.img"
    r = CliRunner().invoke(main, ["flash", str(img), str(card), "--config", str(tmp_path / "dev" / "device.toml")])
    assert r.exit_code != 0 and "pip download failed: offline" in r.output
    assert not card.exists()
    assert not [p for p in (tmp_path / "empty-cache").iterdir() if p.name.startswith("deps-")]
