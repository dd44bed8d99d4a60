"""Relay alive-message throughput with 1 and 2 relay processes (SPEC §6: ≥ 5 000 /s for one
process; ≥ 1.8× with two).

Workload: D registered devices; the relay processes (``lonewatch relay run``, shared
subscription) are paused with SIGSTOP while load-generator processes (:mod:`bench.loadgen`)
publish N valid alive messages (QoS 1) — the broker queues them for the relays' sessions.
Then SIGCONT: the relays drain the backlog with nothing else running, so the load generator
cannot be the bottleneck nor steal the relays' CPU. Processed messages are counted from each
relay's Prometheus metrics (``lonewatch_messages_total{outcome="alive"}``); the sustained
rate is the slope between 10 % and 90 % of the backlog processed.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from labstack.servers import Mosquitto, RedisServer, free_port

from .procs import ROOT, DeviceSpec, RelayProc, _env, registry_toml, relay_toml, write_private
from .stats import Figure, Spread

GOAL_ONE = 5000.0
GOAL_RATIO = 1.8


class BenchMosquitto(Mosquitto):
    """The project's broker config plus what the bench needs: a ``loadgen`` account allowed to
    publish every device's alive topic, and a queue limit large enough for the backlog."""

    def _spawn(self, argv, name) -> None:  # type: ignore[override]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(conf.read_text().replace("max_queued_messages 10000", "max_queued_messages 1000000"))
        with open(self.workdir / "acl", "a") as fh:
            for user in (u for u in self.users if u.startswith("loadgen")):
                fh.write(f"\nuser {user}\ntopic write lonewatch/+/alive\n")
        super()._spawn(argv, name)


def _scrape(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("lonewatch_messages_total{") and 'outcome="alive"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def one_run(n_relays: int, per_relay: int, n_devices: int = 1000, n_gen: int = 2) -> dict[str, float]:
    """One drain of ``per_relay × n_relays`` alive messages; returns rates (messages/s)."""
    with tempfile.TemporaryDirectory(prefix="lonewatch-bench-tp-") as tmp:
        work = Path(tmp)
        devices = [DeviceSpec(f"lw-tp-{i:05d}", "7A0", i % 999 + 1) for i in range(n_devices)]
        pw = {"relay": secrets.token_urlsafe(12), "loadgen": secrets.token_urlsafe(12)}
        # Own accounts per relay and per load generator: the broker's client id is the user name.
        pw.update({f"relay-tp{k}": pw["relay"] for k in range(n_relays)})
        pw.update({f"loadgen-{g}": pw["loadgen"] for g in range(n_gen)})
        with BenchMosquitto(users=pw).start() as mq, RedisServer().start() as rs:
            reg = work / "registry.toml"
            # one account, zones must be unique: spread over accounts by 999
            devices = [DeviceSpec(d.id, f"7A{i // 999}", i % 999 + 1) for i, d in enumerate(devices)]
            reg.write_text(registry_toml(devices))
            relays, ports = [], []
            for k in range(n_relays):
                mport = free_port()
                text = relay_toml(instance=f"tp{k}", mq_port=mq.port, relay_password=pw["relay"], redis_url=rs.url,
                                  registry=reg, arc_port=None) + f'\n[metrics]\nlisten = "127.0.0.1:{mport}"\n'
                rp = RelayProc(work, text, name=f"relay-tp{k}").start()
                relays.append(rp)
                ports.append(mport)
            try:
                for rp in relays:
                    if not rp.wait_connected(30):
                        raise RuntimeError(f"relay did not connect:\n{rp.log_text()[-2000:]}")
                time.sleep(0.5)
                base = sum(_scrape(p) for p in ports)
                for rp in relays:
                    rp.pause()
                total = per_relay * n_relays
                gens = []
                for g in range(n_gen):
                    spec = {"host": "127.0.0.1", "port": mq.port, "username": f"loadgen-{g}", "password": pw["loadgen"],
                            "devices": [d.id for d in devices[g::n_gen]], "count": total // n_gen, "name": g}
                    path = write_private(work / f"gen{g}.json", json.dumps(spec))
                    gens.append(subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(path)], cwd=ROOT,
                                                 env=_env(), stdout=subprocess.PIPE, text=True))
                pub_rates = []
                for p in gens:
                    out, _ = p.communicate(timeout=300)
                    res = json.loads(out)
                    pub_rates.append(res["published"] / res["seconds"])
                total = (total // n_gen) * n_gen
                t0 = time.monotonic()
                for rp in relays:
                    rp.resume()
                samples: list[tuple[float, float]] = []
                deadline = t0 + 120
                while time.monotonic() < deadline:
                    done = sum(_scrape(p) for p in ports) - base
                    samples.append((time.monotonic() - t0, done))
                    if done >= total:
                        break
                    time.sleep(0.1)
                else:
                    raise RuntimeError(f"relays processed {samples[-1][1]:.0f} of {total} in 120 s")
                t10 = next(t for t, d in samples if d >= 0.1 * total)
                t90 = next(t for t, d in samples if d >= 0.9 * total)
                return {"sustained": 0.8 * total / (t90 - t10), "overall": total / samples[-1][0],
                        "publish_rate": sum(pub_rates), "messages": total}
            finally:
                for rp in relays:
                    try:
                        rp.resume()
                    except Exception:
                        pass
                    rp.stop()


def run(runs: int = 3, per_relay: int = 15000) -> list[Figure]:
    one = [one_run(1, per_relay) for _ in range(runs)]
    two = [one_run(2, per_relay) for _ in range(runs)]
    s1 = Spread.of([r["sustained"] for r in one])
    s2 = Spread.of([r["sustained"] for r in two])
    ratio = Spread.of([b["sustained"] / a["sustained"] for a, b in zip(one, two)])
    wl = (f"{runs} runs; backlog of {per_relay} alive msgs per relay (1000 devices, QoS 1) queued at the broker "
          "while the relays were SIGSTOPped, then drained; rate = 10 %→90 % slope, counted by the relays' metrics")
    return [
        Figure("alive msgs/s, 1 relay process", "msg/s", s1, goal=f"≥ {GOAL_ONE:.0f}/s", met=s1.median >= GOAL_ONE,
               workload=wl, fmt="{:.0f}", extra={"runs": one}),
        Figure("alive msgs/s, 2 relay processes", "msg/s", s2, workload=wl, fmt="{:.0f}", extra={"runs": two}),
        Figure("2-process speed-up", "×", ratio, goal=f"≥ {GOAL_RATIO}×", met=ratio.median >= GOAL_RATIO, workload=wl,
               fmt="{:.2f}", note="2-core machine: the 2 relays share 2 cores with Mosquitto and Redis"),
    ]
