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
             timeout_s: float = 30.0, console: bool = False, console_hold_s: float | None = None) -> int:
    """Run one scenario on a fresh local installation; returns the exit status.

    ``console``: also run the web console beside it (prints its URL and a login) and keep
    everything up after the scenario for ``console_hold_s`` seconds (None: until Ctrl-C).

    Raises:
        KeyError: unknown scenario name.
        labstack.servers.MissingServerError: Mosquitto or Redis is not installed.
    """
    fn, _ = load_all()[scenario]
    tl = Timeline(as_json=as_json)
    workdir = Path(tempfile.mkdtemp(prefix="lonewatch-demo-"))
    # The demo's log goes to demo.log for this run only: the handler is removed again at the
    # end, so a caller in the same process (the tests, `lonewatch demo` twice) never logs into
    # a work directory that is gone.
    root = logging.getLogger()
    handler = logging.FileHandler(workdir / "demo.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s"))
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    ok = False
    restore_sigterm = _sigterm_as_ctrl_c()
    try:
        with DemoStack(tl, workdir, arc_addr=arc_addr, timeout_s=timeout_s) as stack:
            beside = _open_console(stack) if console else None  # issue 13: lonewatch demo --console
            ok = fn(stack)
            press = tl.first("alarm_recognised")
            ack = next((s for s in list(tl.steps) if s["step"] == "arc_ack" and press and s["t_ms"] >= press["t_ms"]), None)
            if ok and press and ack:
                tl.add("done", scenario=scenario, alarm_to_arc_ack_ms=round(ack["t_ms"] - press["t_ms"], 1))
            elif ok:
                tl.add("done", scenario=scenario)
            if beside is not None:
                _hold_console(stack, beside, console_hold_s)
    except DemoError as exc:
        tl.add("error", reason=str(exc), log=str(workdir / "demo.log"))
    finally:
        restore_sigterm()
        root.removeHandler(handler)
        root.setLevel(saved_level)
        handler.close()
        if keep or not ok:
            tl.add("workdir", path=str(workdir), note="configs and demo.log kept")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def _sigterm_as_ctrl_c():
    """While the demo runs, SIGTERM (``kill``, systemd, a closing terminal's supervisor) acts
    like Ctrl-C: KeyboardInterrupt in the main thread, so the stack stops Mosquitto, Redis,
    the relay and the console instead of leaving them running. Returns the function that puts
    the previous handler back (a no-op outside the main thread, where signals cannot be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _open_console(stack: DemoStack):
    """Start ``lonewatch console run`` beside the demo with throwaway users; prints the login."""
    from labstack.console_runner import ConsoleProcess, demo_users

    passwords = demo_users(stack.relay.store)
    proc = ConsoleProcess(stack.relay_config_path, stack.workdir / "console.log").start()
    stack._stack.callback(proc.stop)
    stack.tl.add("console", url=proc.url, login="operator", password=passwords["operator"],
                 also=f"admin / {passwords['admin']}, viewer / {passwords['viewer']}")
    return proc


def _hold_console(stack: DemoStack, proc, hold_s: float | None) -> None:
    """Keep the installation and its console up for ``hold_s`` seconds (None: until Ctrl-C)."""
    import time

    stack.tl.add("console_open", url=proc.url, until="Ctrl-C" if hold_s is None else f"{hold_s:g} s")
    try:
        deadline = None if hold_s is None else time.monotonic() + hold_s
        while (deadline is None or time.monotonic() < deadline) and proc.proc is not None and proc.proc.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        stack.tl.add("console_closed", by="Ctrl-C")
