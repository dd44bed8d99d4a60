"""``lonewatch demo``: the whole chain on one machine, with real parts, and a timeline.

Exit status 0 only if the scenario's outcome really happened (for ``panic``: the ARC
received and acknowledged the alarm, and the local receiver decoded exactly the account,
Contact ID code, qualifier and zone sent).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from labstack.timeline import Timeline
from .scenarios import load_all
from .stack import DemoError, DemoStack

__all__ = ["run_demo", "scenario_names"]


def scenario_names() -> list[str]:
    """Names accepted by ``--scenario``."""
    return sorted(load_all())


def run_demo(*, scenario: str = "panic", as_json: bool = False, arc_addr: str | None = None, keep: bool = False,
             timeout_s: float = 30.0) -> int:
    """Run one scenario on a fresh local installation; returns the exit status.

    Raises:
        KeyError: unknown scenario name.
        labstack.servers.MissingServerError: Mosquitto or Redis is not installed.
    """
    fn, _ = load_all()[scenario]
    tl = Timeline(as_json=as_json)
    workdir = Path(tempfile.mkdtemp(prefix="lonewatch-demo-"))
    logging.basicConfig(filename=workdir / "demo.log", level=logging.INFO, force=True,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    ok = False
    try:
        with DemoStack(tl, workdir, arc_addr=arc_addr, timeout_s=timeout_s) as stack:
            ok = fn(stack)
            press = tl.first("alarm_recognised")
            ack = next((e for e in list(tl.steps) if e["step"] == "arc_ack" and press and e["t_ms"] >= press["t_ms"]),
                       tl.first("arc_ack"))  # the ack of the alarm, not of an earlier shift start
            if ok and press and ack:
                tl.add("done", scenario=scenario, alarm_to_arc_ack_ms=round(ack["t_ms"] - press["t_ms"], 1))
            elif ok:
                tl.add("done", scenario=scenario)
    except DemoError as exc:
        tl.add("error", reason=str(exc), log=str(workdir / "demo.log"))
    finally:
        logging.shutdown()
        if keep or not ok:
            tl.add("workdir", path=str(workdir), note="configs and demo.log kept")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1
