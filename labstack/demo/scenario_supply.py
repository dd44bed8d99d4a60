"""Demo scenario of issue 15 (supply chain of the device): ``supply`` puts what ``lonewatch
flash`` puts on a card (the lonewatch wheel built from this source and the device's dependency
wheels, installer/supply.py) onto a test image, takes the wheels back out of the FAT partition
with mtools and installs them into a fresh venv with no package index reachable, then imports
the device daemon there. True only if that install and import really worked."""

from __future__ import annotations

import os
import subprocess
import sys

from installer.bootpart import FatImage, boot_partition, install_lonewatch, make_test_image
from installer.supply import PI_TARGETS, build_supply, host_target

from .scenarios import scenario
from .stack import DemoStack


@scenario("supply", "a flashed card's wheels install offline into a fresh venv (no index reachable) and run the device")
def supply(stack: DemoStack) -> bool:
    work = stack.workdir / "supply"
    work.mkdir(parents=True, exist_ok=True)
    built = build_supply(targets=PI_TARGETS + (host_target(),))
    card = make_test_image(work / "card.img")
    config = work / "device.toml"
    config.write_text('[device]\nid = "lw-supply"\n\n[mqtt]\nhost = "mqtt.example.com"\npassword = "demo-demo-demo-demo"\n')
    install_lonewatch(card, config, wheels=built.files, version=built.version)
    fat = FatImage(card, boot_partition(card).start)
    out = work / "from-card"
    out.mkdir(exist_ok=True)
    for name in fat.listdir("lonewatch/wheels"):
        (out / name).write_bytes(fat.read(f"lonewatch/wheels/{name}"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/", PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(out),
                           f"lonewatch[device]=={built.version}", "click"], capture_output=True, text=True, env=env, cwd=work)
    if done.returncode != 0:
        stack.tl.add("error", reason="the card's wheels did not install offline", pip=done.stderr[-800:])
        return False
    probe = "import device, device.daemon, importlib.metadata as m; print(device.__file__, m.version('lonewatch'))"
    done = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=env, cwd=work)
    where, _, ver = done.stdout.strip().partition(" ")
    ok = done.returncode == 0 and where.startswith(str(venv)) and ver == built.version
    stack.tl.add("supply", wheels=sorted(p.name for p in out.iterdir()), installed_from=str(out), device_module=where,
                 version=ver, offline=True)
    if not ok:
        stack.tl.add("error", reason="the device daemon does not import from the offline install", stderr=done.stderr[-800:])
    return ok
