"""Fault injection by load: 500 devices send an alarm at the same instant.

500 registry entries (5 site accounts × 100 workers), 500 broker accounts, 500 MQTT clients
with persistent sessions in 4 child processes (:mod:`bench.swarm`; each publishes its
devices' alarms together behind a barrier, the 4 are told ``go`` at once), one relay
process, pysiaalarm as the ARC. Every alarm must be
stored once, reach the ARC exactly once under its own account/sequence with the right zone,
and every device must get its ``received`` ack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from bench.procs import ROOT, DeviceSpec, _env, write_private
from bench.system import System
from bench.verify import delivery_problems

pytestmark = pytest.mark.integration

N = 500
PROCS = 4
DEVICES = [DeviceSpec(f"lw-swarm-{i:04d}", f"5A{i // 100}", i % 100 + 1) for i in range(N)]


def test_500_devices_alarm_at_once_each_reaches_the_arc_exactly_once() -> None:
    with System(DEVICES, dispatch_workers=4) as s:
        assert s.arc is not None
        swarms = []
        try:
            for k in range(PROCS):
                part = DEVICES[k::PROCS]
                spec = {"host": "127.0.0.1", "port": s.mq.port, "resend_after_s": 5.0, "kind": "panic", "seq": 1,
                        "devices": [[d.id, s.passwords[d.id]] for d in part]}
                path = write_private(s.workdir / f"swarm-{k}.json", json.dumps(spec))
                swarms.append((len(part), subprocess.Popen(
                    [sys.executable, "-m", "bench.swarm", str(path)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, cwd=ROOT, env=_env(), text=True)))
            for n, p in swarms:
                assert json.loads(p.stdout.readline()) == {"step": "connected", "n": n}
            for _, p in swarms:
                p.stdin.write("go\n")
                p.stdin.flush()
            for _, p in swarms:
                assert json.loads(p.stdout.readline())["step"] == "published"
            for _, p in swarms:
                assert json.loads(p.stdout.readline())["step"] == "all_received"
            ids = [f"{d.id}:1" for d in DEVICES]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not s.all_acked(ids):
                time.sleep(0.2)
            assert delivery_problems(s.r, s.arc, [(i, "panic") for i in ids]) == []
            zones = {(f.account, f.zone) for f in s.arc.frames}
            assert zones == {(d.account.upper(), d.zone) for d in DEVICES}  # ids differ: each worker once
        finally:
            for _, p in swarms:
                try:
                    p.stdin.write("quit\n")
                    p.stdin.close()
                    p.wait(15)
                except (OSError, subprocess.TimeoutExpired):
                    p.kill()
