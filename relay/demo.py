"""``lonewatch demo``: the whole chain on one machine, with real parts.

A throwaway Mosquitto and Redis on free ports (the project's own config files), one relay
(:mod:`relay.app`, configured from a relay.toml the demo writes), one device daemon on
gpiozero MockFactory pins with the modem simulator on a pseudo-terminal (reached through
``serial.Serial``), and a real SIA DC-09 receiver (pysiaalarm) standing in for the ARC — or
an external receiver with ``--arc HOST:PORT``. A finger holds the button for 2.5 s; the
timeline shows each step until the ARC's ACK and the device's feedback.

Exit status: 0 only if the ARC received and acknowledged the alarm (and, with the local
receiver, decoded exactly the account, Contact ID code, qualifier and zone sent).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.sia import parse_position, parse_position_text

from .arc import ArcResult
from .localstack import Mosquitto, RedisServer, free_port
from .timeline import Timeline

log = logging.getLogger(__name__)

DEVICE_ID = "lw-demo-0001"
ACCOUNT = "1234AB"
ZONE = 17
WORKER = "Anna Hansen"
SITE = "Vestergade 12, basement laundry"
#: Where the simulated GNSS says the worker is (Copenhagen).
LAT, LON = 55.668571, 12.576131


@dataclass
class ArcTarget:
    """Where the relay sends: the local pysiaalarm receiver or an external one."""

    host: str
    port: int
    local: bool


class LocalArc:
    """pysiaalarm's threaded TCP receiver, decoding into dicts the demo can print/check.

    pysiaalarm's ADM-CID parser accepts one extended-data block, so the relay is configured
    with ``max_xdata_blocks = 1`` for it and sends the position as alarm text (SPEC §4:
    "know what each receiver in the tests accepts")."""

    def __init__(self, account: str, port: int) -> None:
        from pysiaalarm import SIAAccount, SIAClient

        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.port = port
        self.client = SIAClient("127.0.0.1", port, [SIAAccount(account_id=account)], self._on_event)

    def _on_event(self, event) -> None:
        with self._cond:
            self.events.append(decoded_sia_event(event))
            self._cond.notify_all()

    def wait_event(self, timeout_s: float) -> dict[str, Any] | None:
        with self._cond:
            self._cond.wait_for(lambda: bool(self.events), timeout_s)
            return self.events[0] if self.events else None

    def __enter__(self) -> "LocalArc":
        self.client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()


def decoded_sia_event(event) -> dict[str, Any]:
    """What an ARC decoded from one pysiaalarm ``SIAEvent``: account, Contact ID code (3
    digits), qualifier, partition, zone, and position (lat/lon) from ``X``/``Y`` extended
    data or from position text in ``I``."""
    out: dict[str, Any] = {
        "account": event.account,
        "code": event.event_type,
        "qualifier": int(event.event_qualifier) if event.event_qualifier else None,
        "partition": event.partition,
        "zone": int(event.ri) if event.ri else None,
        "sia_code": event.code,
        "sequence": event.sequence,
        "lat": None,
        "lon": None,
    }
    xdata = {x.identifier: x.value for x in (event.extended_data or [])}
    if "X" in xdata and "Y" in xdata:
        out["lat"], out["lon"] = parse_position("X" + xdata["X"], "Y" + xdata["Y"])
    elif "I" in xdata:
        try:
            pt = parse_position_text(xdata["I"])
            out["lat"], out["lon"] = pt.lat, pt.lon
        except ValueError:
            pass
    return out


def _relay_toml(mq: Mosquitto, redis_url: str, arc: ArcTarget, registry: Path, relay_password: str) -> str:
    limit = "max_xdata_blocks = 1\n" if arc.local else ""
    return f"""# written by lonewatch demo
[relay]
instance = "demo"
dispatch_workers = 2

[mqtt]
host = "127.0.0.1"
port = {mq.port}
username = "relay"
password = "{relay_password}"
tls = false

[redis]
url = "{redis_url}"

[arc]
format = "ADM-CID"
attempts_per_receiver = 3
backoff_s = 0.2

[[arc.receivers]]
name = "{"demo-arc" if arc.local else "external-arc"}"
host = "{arc.host}"
port = {arc.port}
timeout_s = 3.0
{limit}
[registry]
file = "{registry}"
"""


def _registry_toml() -> str:
    return f"""[[devices]]
id = "{DEVICE_ID}"
account = "{ACCOUNT}"
zone = {ZONE}
worker = "{WORKER}"
site = "{SITE}"
language = "da"
"""


def _device_dict(mq_port: int, state_dir: Path, modem_port: str, password: str) -> dict[str, Any]:
    return {
        "device": {"id": DEVICE_ID, "state_dir": str(state_dir), "silent": True},
        "mqtt": {"host": "127.0.0.1", "port": mq_port, "password": password, "tls": False, "keepalive_s": 10},
        "timing": {"hold_s": 2.0, "alive_interval_s": 60, "resend_after_s": 5},
        "modem": {"port": modem_port, "flavour": "sim7600"},
        "worker": {"name": WORKER, "site": SITE},
    }


def run_demo(*, as_json: bool = False, arc_addr: str | None = None, hold_s: float = 2.5, keep: bool = False) -> int:
    """Run the panic scenario end to end; returns the process exit status (0 = the ARC
    acknowledged the alarm and, with the local receiver, decoded it exactly)."""
    import secrets

    from gpiozero.pins.mock import MockFactory

    from device.config import DeviceConfig
    from device.daemon import DeviceDaemon
    from device.modem.at import Modem
    from device.modem.simulator import ModemSimulator

    from .app import build_service
    from .config import load_relay_config

    tl = Timeline(as_json=as_json)
    workdir = Path(tempfile.mkdtemp(prefix="lonewatch-demo-"))
    logging.basicConfig(filename=workdir / "demo.log", level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s", force=True)
    relay_pw, device_pw = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    ok = False
    with ExitStack() as stack:
        if not keep:
            stack.callback(shutil.rmtree, workdir, True)
        mq = stack.enter_context(Mosquitto(users={"relay": relay_pw, DEVICE_ID: device_pw}).start())
        rd = stack.enter_context(RedisServer().start())
        tl.add("servers_up", mosquitto_port=mq.port, redis_port=rd.port)

        if arc_addr:
            host, _, port = arc_addr.rpartition(":")
            arc = ArcTarget(host or "127.0.0.1", int(port), local=False)
            local = None
        else:
            arc = ArcTarget("127.0.0.1", free_port(), local=True)
            local = stack.enter_context(LocalArc(ACCOUNT, arc.port))
        tl.add("arc_ready", receiver=f"{arc.host}:{arc.port}", kind="pysiaalarm" if local else "external")

        (workdir / "registry.toml").write_text(_registry_toml())
        cfg_path = workdir / "relay.toml"
        cfg_path.write_text(_relay_toml(mq, rd.url, arc, workdir / "registry.toml", relay_pw))
        def on_stored(event, is_new: bool) -> None:
            if event.is_alarm:
                tl.add("relay_received", id=event.id, kind=event.kind, new=is_new, redis_stream="lw:events")

        def on_result(event, outcome) -> None:
            # Called by the relay's dispatch thread on the ARC's answer, before the device
            # is told; the local receiver's decoded event arrives a moment after its ACK.
            if isinstance(outcome, ArcResult):
                fields = {"id": event.id, "receiver": outcome.receiver, "sequence": outcome.sequence,
                          "latency_ms": round(outcome.latency_s * 1000, 1), "xdata": list(outcome.xdata_sent),
                          "degraded": outcome.degraded}  # fmt: skip
                decoded = local.wait_event(2.0) if local else None
                if decoded is not None:
                    fields.update({k: decoded[k] for k in ("account", "code", "qualifier", "zone", "lat", "lon", "sia_code")})
                tl.add("arc_ack", **fields)
            else:
                tl.add("arc_problem", id=event.id, error=str(outcome)[:200])

        relay = build_service(load_relay_config(cfg_path), on_stored=on_stored, on_result=on_result)
        relay.start()
        stack.callback(relay.stop)

        sim = stack.enter_context(ModemSimulator(flavour="sim7600"))
        sim.gnss_fix = (LAT, LON, 1.2)
        modem = Modem(sim.port, flavour="sim7600")
        factory = MockFactory()
        dcfg = DeviceConfig.from_dict(_device_dict(mq.port, workdir / "device-state", sim.port, device_pw))

        def observe(step: str, fields: dict[str, Any]) -> None:
            if step in ("button_down", "alarm_recognised", "queued", "feedback"):
                tl.add(step, **fields)

        device = DeviceDaemon(dcfg, pin_factory=factory, modem=modem, observer=observe)
        device.start()
        stack.callback(device.stop)

        ready = device.link.connected.wait(15) and relay.wait_connected(15)
        deadline = time.monotonic() + 10
        while device.modem_state.position is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not ready:
            tl.add("error", reason="device or relay could not connect to the broker")
            return 1
        pos = device.modem_state.position
        tl.add("device_ready", device=DEVICE_ID, signal_dbm=device.modem_state.signal_dbm,
               registration=device.modem_state.registration, lat=pos and round(pos.lat, 5), lon=pos and round(pos.lon, 5))  # fmt: skip

        # A finger holds the button (active low, pull-up) for hold_s seconds.
        pin = factory.pin(dcfg.gpio.button_pin)
        pin.drive_low()
        time.sleep(hold_s)
        pin.drive_high()

        arc_ack = tl.wait_for("arc_ack", 30)
        if arc_ack is not None:
            ok = True
            expected = {"account": ACCOUNT, "code": "122", "qualifier": 1, "zone": ZONE}
            if local is not None and any(arc_ack.get(k) != v for k, v in expected.items()):
                tl.add("error", reason="ARC decoded something else than was sent", expected=expected)
                ok = False
            fb = tl.wait_for("feedback", 10, pattern="arc_delivered")
            if fb is None:
                tl.add("error", reason="device got no `arc` ack (no delivered feedback)")
                ok = False
        else:
            tl.add("error", reason="the ARC did not acknowledge the alarm in 30 s", log=str(workdir / "demo.log"))
        press = tl.first("alarm_recognised")
        if ok and press and arc_ack:
            tl.add("done", alarm_to_arc_ack_ms=round(arc_ack["t_ms"] - press["t_ms"], 1), result="ARC acknowledged the alarm")
    return 0 if ok else 1
