"""Device daemon memory and CPU with BLE beacon scanning on (SPEC §6: ≤ 35 MB, ≤ 1 % of a
core "man-down and beacon scanning on"; issue 12).

Workload: two device daemons as subprocesses (this file run with ``--child``), on shift,
plain MQTT to a local Mosquitto, no modem: one with beacons off, one with the simulated
scanner (:class:`device.beacon_sim.SimulatedScanner` with ``real_time=True``: each scan
window really lasts ``scan_s``; 5 beacons × 3 advertisements a scan) at the default duty
cycle (2 s scan every 30 s) — and a third at a harsh 2 s every 5 s. Idle window after start-up;
``VmRSS`` sampled every second, ``utime + stime`` over the window.

Limit: with the simulator the figure is our side only (thread, smoothing, queue); on a Pi the
real bleak scan adds one short asyncio loop per scan in this process, and BlueZ's own work
runs in ``bluetoothd``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .b_device import GOAL_CPU_PCT, GOAL_RSS_MB, TICK, _cpu_s, _rss_kb
from .procs import ROOT, _env, device_config
from .stats import Figure, Spread

SETTLE_S = 4.0


def _child(config_path: str, beacons: str) -> int:
    from gpiozero.pins.mock import MockFactory

    from device.beacon_sim import SimulatedScanner
    from device.config import DeviceConfig
    from device.daemon import DeviceDaemon
    from protocol.beacons import ibeacon_id

    cfg = DeviceConfig.from_dict(json.loads(Path(config_path).read_text()))
    scanner = None
    if beacons == "on":
        scanner = SimulatedScanner({ibeacon_id("fda50693-a4e2-4fb1-afcf-c6eb07647825", 1, i): -60 - 5 * i
                                    for i in range(5)}, jitter_db=3, real_time=True)
    daemon = DeviceDaemon(cfg, pin_factory=MockFactory(), beacons=scanner, control=False)
    daemon.start()
    daemon.shift(True)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    sys.stdin.read()  # until the parent closes stdin
    daemon.stop()
    return 0


def run(window_s: float = 30.0) -> list[Figure]:
    from labstack.servers import Mosquitto

    variants = {"off": {"source": "none"}, "on": {"source": "bluez"},
                "on-5s": {"source": "bluez", "interval_s": 5.0}}
    with tempfile.TemporaryDirectory(prefix="lonewatch-bench-beacons-") as tmp:
        work = Path(tmp)
        pw = {f"lw-bench-b-{v}": secrets.token_urlsafe(12) for v in variants}
        mq = Mosquitto(users=dict(pw)).start()
        procs: dict[str, subprocess.Popen] = {}
        try:
            for v, beacons in variants.items():
                dev = f"lw-bench-b-{v}"
                cfg = device_config(dev, mq_port=mq.port, password=pw[dev], state_dir=work / dev,
                                    keepalive_s=30, alive_interval_s=60, modem={"enabled": False}, beacons=beacons)
                path = work / f"{dev}.json"
                path.write_text(json.dumps(cfg))
                procs[v] = subprocess.Popen([sys.executable, "-m", "bench.b_beacons", "--child", str(path),
                                             "off" if beacons["source"] == "none" else "on"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                            cwd=ROOT, env=_env())
            pids = {v: json.loads(p.stdout.readline())["pid"] for v, p in procs.items()}  # type: ignore[union-attr]
            time.sleep(SETTLE_S)
            cpu0 = {v: _cpu_s(pid) for v, pid in pids.items()}
            rss: dict[str, list[int]] = {v: [] for v in pids}
            t0 = time.monotonic()
            while time.monotonic() - t0 < window_s:
                for v, pid in pids.items():
                    rss[v].append(_rss_kb(pid))
                time.sleep(1.0)
            elapsed = time.monotonic() - t0
            cpu = {v: 100 * (_cpu_s(pid) - cpu0[v]) / elapsed for v, pid in pids.items()}
        finally:
            for p in procs.values():
                try:
                    p.stdin.close()  # type: ignore[union-attr]
                    p.wait(10)
                except (OSError, subprocess.TimeoutExpired):
                    p.kill()
            mq.cleanup()
    workload = (f"device daemon on shift, no modem, idle {window_s:.0f} s; simulated scanner (5 beacons, real-time "
                "scan windows); off / default 2 s every 30 s / 2 s every 5 s")
    figures = []
    for v, label in (("off", "beacons off"), ("on", "beacons on, default duty cycle"), ("on-5s", "beacons on, scan every 5 s")):
        mb = max(rss[v]) / 1024
        figures.append(Figure(f"device RSS, {label}", "MB", Spread.of([mb]), goal=f"≤ {GOAL_RSS_MB:.0f} MB",
                              met=mb <= GOAL_RSS_MB, workload=workload))
        figures.append(Figure(f"device idle CPU, {label}", "% of a core", Spread.of([cpu[v]]), goal=f"≤ {GOAL_CPU_PCT:.0f} %",
                              met=cpu[v] <= GOAL_CPU_PCT, workload=workload, fmt="{:.2f}",
                              note="simulated scanner: our side only (see bench/b_beacons.py)"))
    return figures


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        sys.exit(_child(sys.argv[2], sys.argv[3]))
    for f in run(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0):
        print(f.name, f.value.text(f.fmt) if f.value else "-", f.unit, "met" if f.met else "NOT met")
