"""Press → SMS out through the SMS fallback path (SPEC §2: an alarm without the relay's
``received`` ack within ``sms_fallback_after_s`` also goes out by SMS).

Workload: one device daemon as a subprocess (:mod:`bench.device_proc`: gpiozero MockFactory
pins, the AT driver on a pty to a SIM7600 :class:`ModemSimulator` living in this process,
GNSS fix set), default timings (``sms_fallback_after_s`` 20 s, ``hold_s`` 2 s), one fallback
recipient, the broker **unreachable** (a closed loopback port: nothing ever acks). Each
repetition holds the button like a finger (``hold`` 2.3 s on the MockFactory pin) and waits
until the simulator has recorded the SMS in ``sim.sent_sms`` (polled every 5 ms); before each
press the simulator is told to answer the next ``AT+CMGS`` only after ``NETWORK_DELAY_S``
(a radio network's submit delay; the simulator has no other delays). Times are
``time.monotonic()`` in both processes (one system-wide clock): press = the daemon's
``button_down`` step, recognised = ``alarm_recognised``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from modem.simulator import ModemSimulator
from labstack.servers import free_port

from .procs import DeviceProc, device_config
from .stats import Figure, Spread

FALLBACK_AFTER_S = 20.0
NETWORK_DELAY_S = 1.0
HOLD_S = 2.3
NUMBER = "+4512345678"


def run(reps: int = 3, fallback_after_s: float = FALLBACK_AFTER_S) -> list[Figure]:
    press_to_sms: list[float] = []
    recog_to_sms: list[float] = []
    timer_to_sms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="lonewatch-bench-sms-") as tmp, ModemSimulator("sim7600") as sim:
        work = Path(tmp)
        sim.gnss_fix = (55.668571, 12.576131, 1.2)
        timing = {"sms_fallback_after_s": fallback_after_s}
        if fallback_after_s < 20:
            timing["test_mode"] = True
        cfg = device_config("lw-bench-sms", mq_port=free_port(), password="unused", state_dir=work / "state",
                            modem={"port": sim.port, "flavour": "sim7600", "sms_timeout_s": 10},
                            sms={"fallback_numbers": [NUMBER], "language": "en"}, timing=timing)
        dev = DeviceProc(work, cfg, modem_port=sim.port).start()
        try:
            if dev.wait_step("started", 30) is None:
                raise RuntimeError(f"bench device did not start:\n{dev.log_text()[-2000:]}")
            time.sleep(1.0)  # modem set-up (AT init, GNSS) done before the first press
            for _ in range(reps):
                mark, n_sms = len(dev.steps), len(sim.sent_sms)
                sim.delay_next("AT+CMGS", NETWORK_DELAY_S)
                dev.send(f"hold {HOLD_S}")
                limit = time.monotonic() + fallback_after_s + 30
                while len(sim.sent_sms) <= n_sms and time.monotonic() < limit:
                    time.sleep(0.005)
                t_sms = time.monotonic()
                if len(sim.sent_sms) <= n_sms:
                    raise RuntimeError(f"no SMS within {fallback_after_s + 30:.0f} s:\n{dev.log_text()[-2000:]}")
                down = dev.wait_step("button_down", 5, after=mark)
                recog = dev.wait_step("alarm_recognised", 5, after=mark)
                timer = dev.wait_step("sms_fallback", 5, after=mark)
                if down is None or recog is None:
                    raise RuntimeError(f"press not seen by the daemon:\n{dev.log_text()[-2000:]}")
                press_to_sms.append(t_sms - down["t"])
                recog_to_sms.append(t_sms - recog["t"])
                if timer is not None:
                    timer_to_sms.append(t_sms - timer["t"])
                dev.wait_step("sms_sent", 10, after=mark)
                time.sleep(0.5)
        finally:
            dev.stop()
    wl = (f"1 device daemon (subprocess, MockFactory button held {HOLD_S} s, hold_s 2 s), broker unreachable, "
          f"sms_fallback_after_s {fallback_after_s:.0f} s{' (test_mode)' if fallback_after_s < 20 else ' (default)'}, "
          f"1 recipient, AT driver on a pty to the SIM7600 modem simulator with AT+CMGS answered after "
          f"{NETWORK_DELAY_S:.1f} s (network delay; no other simulated delays); {reps} presses in a row; "
          f"end = SMS recorded by the simulator (sim.sent_sms)")
    timer_txt = f"; fallback timer → SMS recorded {Spread.of(timer_to_sms).text('{:.2f}')} s" if timer_to_sms else ""
    return [
        Figure("press → SMS out via fallback", "s", Spread.of(press_to_sms),
               workload=wl, fmt="{:.2f}",
               note=f"alarm recognised → SMS recorded {Spread.of(recog_to_sms).text('{:.2f}')} s{timer_txt}",
               extra={"press_to_sms_s": press_to_sms, "recognised_to_sms_s": recog_to_sms, "timer_to_sms_s": timer_to_sms}),
    ]
