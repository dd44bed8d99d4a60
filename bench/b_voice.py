"""Listen-in timings (issue 11): alarm stored → ``ATD`` received by the modem, and the
operator's talk key → speaker on at the modem.

Workload: one device daemon in this process (gpiozero MockFactory pins, broker unreachable),
the AT driver on a pty to a SIM7600 :class:`ModemSimulator` whose far end answers 0.2 s after
the dial; ``[voice] numbers`` = one ARC line, ``AT+CLCC`` polled every 1 s (default). Each
repetition holds the button (1 s, ``hold_s`` 0.8 s, test_mode), waits for the call, sends the
DTMF key ``1`` from the far end, waits until the simulator's audio state has the speaker on,
then the far end hangs up. Times are ``time.monotonic()``: alarm stored = the daemon's
``queued`` step for the alarm; dial = the simulator's ``dial`` event (it parsed ``ATD…;`` off
the pty); speaker on = the simulator's ``audio`` event for ``AT+VMUTE=0``.
No SPEC §6 goal exists for these; reported for reference.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .stats import Figure, Spread

ARC = "+4570101010"


def _wait(pred: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def run(reps: int = 5) -> list[Figure]:
    from gpiozero.pins.mock import MockFactory

    from device.config import DeviceConfig
    from device.daemon import DeviceDaemon
    from labstack.servers import free_port
    from modem.at import Modem
    from modem.simulator import ModemSimulator

    stored_to_dial: list[float] = []
    key_to_speaker: list[float] = []
    steps: list[tuple[float, str, dict[str, Any]]] = []
    lock = threading.Lock()

    def observe(step: str, fields: dict[str, Any]) -> None:
        with lock:
            steps.append((time.monotonic(), step, dict(fields)))

    with tempfile.TemporaryDirectory(prefix="lonewatch-bench-voice-") as tmp, ModemSimulator("sim7600") as sim:
        cfg = DeviceConfig.from_dict({
            "device": {"id": "lw-bench-voice", "state_dir": str(Path(tmp) / "state")},
            "mqtt": {"host": "127.0.0.1", "port": free_port(), "tls": False},
            "timing": {"test_mode": True, "hold_s": 0.8, "bounce_s": 0.02, "max_press_s": 0.4},
            "modem": {"port": sim.port, "flavour": "sim7600", "gnss": False},
            "voice": {"numbers": [ARC]},
        })
        sim.calls.default_plan = type(sim.calls.default_plan)("answer", 0.2)
        factory = MockFactory()
        daemon = DeviceDaemon(cfg, pin_factory=factory, modem=Modem(sim.port, flavour="sim7600"),
                              observer=observe, control=False)
        daemon.start()
        try:
            if not _wait(lambda: any(s == "modem_ready" for _, s, _ in steps), 20):
                raise RuntimeError("modem not ready")
            time.sleep(1.0)
            pin = factory.pin(cfg.gpio.button_pin)
            for _ in range(reps):
                n_events, n_steps = len(sim.calls.events), len(steps)
                pin.drive_low()
                time.sleep(1.0)
                pin.drive_high()
                if not sim.calls.wait_for("active", 10):
                    raise RuntimeError("the call was not answered")
                new = sim.calls.events[n_events:]
                dial_t = next(e["t"] for e in new if e["event"] == "dial")
                with lock:
                    stored_t = next(t for t, s, f in steps[n_steps:] if s == "queued" and f.get("kind") == "silent_panic")
                stored_to_dial.append(dial_t - stored_t)
                if not _wait(lambda: sim.calls.audio["speaker_muted"], 5):
                    raise RuntimeError("listen-in did not mute the speaker")
                mark = len(sim.calls.events)
                t_key = time.monotonic()
                sim.calls.far_end_dtmf("1")
                if not _wait(lambda: not sim.calls.audio["speaker_muted"], 5):
                    raise RuntimeError("the talk key did not open the speaker")
                on = next(e["t"] for e in sim.calls.events[mark:]
                          if e["event"] == "audio" and e["command"].upper() == "AT+VMUTE=0")
                key_to_speaker.append(on - t_key)
                sim.calls.far_end_hangup()
                _wait(lambda: any(s == "voice_done" for _, s, _ in steps[n_steps:]), 10)
        finally:
            daemon.stop()
    wl = (f"1 device daemon in-process (MockFactory, broker unreachable), SIM7600 modem simulator on a pty, "
          f"far end answers 0.2 s after the dial; {reps} alarms in a row")
    return [
        Figure("alarm stored → ATD at the modem", "ms", Spread.of([x * 1000 for x in stored_to_dial]),
               workload=wl, note="includes storing the listen_in (606) event first",
               extra={"stored_to_dial_s": stored_to_dial}),
        Figure("talk key (DTMF 1) → speaker on at the modem", "ms", Spread.of([x * 1000 for x in key_to_speaker]),
               workload=wl, extra={"key_to_speaker_s": key_to_speaker}),
    ]
