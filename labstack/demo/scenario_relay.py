"""Demo scenarios of the relay's own duties (issue 4): ``lost-contact`` and ``relay-failover``.

``lost-contact`` gives the relay short supervision intervals, starts the worker's shift on the
device, then silences the device: the ARC must get lost contact (Contact ID 356) no later than
the deadline + 2 s, and the restore (356, qualifier 3) when the device is back.

``relay-failover`` runs two relays as separate processes on the one broker and Redis, takes the
ARC down so the alarm stays with the relay that stored it, kills that relay with SIGKILL and
brings the ARC back: the other relay must deliver the alarm, and the ARC must see it once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .scenarios import expect_arc, scenario
from .stack import ARC_NAMES, DEVICE_ID, DemoStack

#: Demo supervision: lost contact after 2 s × 2 + 1 s = 5 s of silence.
ALIVE_S, MISSED, GRACE_S = 2.0, 2, 1.0
#: SPEC §6: lost contact raised within deadline + 2 s.
MAX_LAG_S = 2.0


def _start_shift(stack: DemoStack) -> None:
    shift = getattr(stack.device, "shift", None)
    if callable(shift):
        shift(True, source="demo")
    else:  # a device without the shift command: the same event
        stack.device.raise_event("shift_start")


@scenario("lost-contact", "the device goes silent mid-shift: the ARC gets lost contact (CID 356) within the deadline + 2 s, then the restore")
def lost_contact(stack: DemoStack) -> bool:
    tl, store = stack.tl, stack.relay.store
    limit = stack.supervise(alive_interval_s=ALIVE_S, missed_alives=MISSED, grace_s=GRACE_S)
    _start_shift(stack)
    if tl.wait_for("relay_received", 10, kind="shift_start") is None:
        tl.add("error", reason="the relay did not receive shift_start")
        return False
    stack.device.stop()
    heard = float(store.supervision_state(DEVICE_ID)["heard"])
    deadline = heard + limit
    tl.add("device_silent", note="device stopped: no alive, no event", deadline_in_s=round(deadline - time.time(), 2))

    step = tl.wait_for("arc_ack", limit + 15, kind="lost_contact")
    ok = expect_arc(stack, step, "356", 1)
    if step is None:
        return False
    _, rec = store.event(step["id"])
    lag = float(rec["arc_acked_at"]) - deadline
    tl.add("lost_contact_lag", arc_ack_after_deadline_s=round(lag, 3), goal_s=MAX_LAG_S)
    if lag > MAX_LAG_S:
        tl.add("error", reason=f"lost contact reached the ARC {lag:.2f} s after the deadline (goal {MAX_LAG_S} s)")
        ok = False

    stack.device = stack.start_device()
    tl.add("device_back", device=DEVICE_ID)
    ok = expect_arc(stack, tl.wait_for("arc_ack", 20, kind="contact_restore"), "356", 3) and ok
    time.sleep(max(limit / 2, 1.0))  # sweeps go on: still one lost contact
    raised = [e for e in tl.steps if e["step"] == "relay_raised" and e["kind"] == "lost_contact"]
    if len(raised) != 1:
        tl.add("error", reason=f"lost contact raised {len(raised)} times")
        ok = False
    return ok


def _wait_log(path: Path, text: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


@scenario("relay-failover", "two relays; the one holding the alarm is killed -9 while the ARC is down: the other delivers it, once")
def relay_failover(stack: DemoStack) -> bool:
    import redis

    from relay.store import DISPATCH, GROUP

    tl = stack.tl
    if stack.local_arc is None:
        tl.add("error", reason="relay-failover needs the local ARC receiver (no --arc)")
        return False
    stack.stop_relay()
    stack.arc_down(ARC_NAMES[0])
    names = ("relay-a", "relay-b")
    # A killed relay's broker session ends after 10 s: then it takes no more messages.
    procs = {n: stack.start_relay_process(n, {"session_expiry_s": 10}, reclaim_idle_s=2.0) for n in names}
    for n in names:
        if not _wait_log(stack.workdir / f"relay-{n}.log", "relay connected", 20):
            tl.add("error", reason=f"{n} did not connect", log=str(stack.workdir / f"relay-{n}.log"))
            return False
    tl.add("relays_ready", relays=list(names))

    stack.hold(2.5)
    queued = tl.wait_for("queued", 10, kind="silent_panic")
    r = redis.Redis.from_url(stack.redis.url)
    holder, deadline = None, time.monotonic() + 15
    while holder is None and time.monotonic() < deadline:
        rows = r.xpending_range(DISPATCH, GROUP, min="-", max="+", count=10)
        holder = rows[0]["consumer"].decode() if rows else None
        time.sleep(0.05)
    victim = next((n for n in names if holder and holder.startswith(f"lonewatch-relay-{n}-")), None)
    if queued is None or victim is None:
        tl.add("error", reason="the alarm was not taken by a relay")
        return False
    tl.add("alarm_held", relay=victim, consumer=holder, id=queued["id"], note="ARC down: the relay keeps retrying")

    os.kill(procs[victim].pid, signal.SIGKILL)
    procs[victim].wait(10)
    tl.add("relay_killed", instance=victim, signal="SIGKILL")
    stack.arc_up(ARC_NAMES[0])

    got = stack.local_arc.wait_event(30)
    ok = got is not None
    if got is not None:
        tl.add("arc_received", **{k: got[k] for k in ("account", "code", "qualifier", "zone", "sequence")})
        ok = expect_arc(stack, {**got, "step": "arc_received"}, "122")
    if tl.wait_for("feedback", 20, pattern="arc_delivered") is None:
        tl.add("error", reason="the device got no `arc` ack from the surviving relay")
        ok = False
    time.sleep(2.0)  # would a second copy arrive?
    count = sum(1 for e in list(stack.local_arc.events) if e["code"] == "122")
    rec = r.hgetall(f"lw:{{{DEVICE_ID}}}:event:{queued['id']}")
    owner = rec.get(b"lease_owner", b"").decode()
    tl.add("arc_count", alarms_at_arc=count, delivered_by=owner.rsplit("-", 1)[0].removeprefix("lonewatch-relay-"),
           arc_state=rec.get(b"arc", b"").decode())  # fmt: skip
    if count != 1:
        tl.add("error", reason=f"the ARC got the alarm {count} times")
        ok = False
    return ok
