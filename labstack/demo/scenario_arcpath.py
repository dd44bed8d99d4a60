"""Demo scenarios of issue 14 ("the path never gives up and never cries wolf"):

``arc-refusal`` puts a picky front end before the primary ARC receiver: it answers DUH to every
frame that carries extended data (a receiver whose parser cannot take it) and passes the rest
to pysiaalarm. The panic must still reach the ARC — re-sent with fewer blocks, then none — and
the next alarm must go right the first time (what the receiver took is learned in Redis).

``broker-outage`` stops the broker mid-shift for longer than the lost-contact limit: the ARC
must get ONE installation fault (Contact ID 350) and its restore, and no lost contact (356).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

from protocol.messages import encode
from protocol.sia import decode_frame

from .scenarios import expect_arc, scenario
from .stack import ACCOUNT, ARC_NAMES, DemoStack


class PickyFrontEnd:
    """TCP front end: DUH for frames with extended data, the rest forwarded to ``port``."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.frames: list[int] = []  # extended-data blocks of each frame seen
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r" not in data:
                chunk = conn.recv(1024)
                if not chunk:
                    return
                data += chunk
            frame = decode_frame(data)
            self.frames.append(len(frame.xdata))
            if frame.xdata:
                body = f'"DUH"{frame.sequence:04d}R{frame.receiver or "1"}L{frame.line}#{frame.account}[]'
                from protocol.sia import wrap_frame

                conn.sendall(wrap_frame(body))
                return
            with socket.create_connection(("127.0.0.1", self.target), timeout=3) as up:
                up.sendall(data)
                conn.sendall(up.recv(1024))

    def close(self) -> None:
        self.sock.close()


@scenario("arc-refusal", "the ARC receiver DUHs frames with extended data: the alarm is re-sent simpler until it is taken, and the next one goes right the first time")
def arc_refusal(stack: DemoStack) -> bool:
    tl = stack.tl
    arc = stack.relay.dispatcher.arc
    if arc is None or stack.local_arc is None:
        tl.add("error", reason="arc-refusal needs the local ARC receivers")
        return False
    front = PickyFrontEnd(stack.arc_ports[ARC_NAMES[0]])
    primary = next(r for r in arc.receivers if r.name == ARC_NAMES[0])
    picky = dataclasses.replace(primary, port=front.port, max_xdata_blocks=None)
    arc.receivers = tuple(picky if r.name == ARC_NAMES[0] else r for r in arc.receivers)
    tl.add("picky_receiver", receiver=ARC_NAMES[0], rule="DUH to any frame with extended data")
    try:
        stack.hold(2.5)
        step = tl.wait_for("arc_ack", stack.timeout_s)
        ok = expect_arc(stack, step, "122")
        tl.add("ladder", frames=len(front.frames), xdata_blocks_per_frame=list(front.frames))
        if ok and (step["receiver"] != ARC_NAMES[0] or not step["degraded"] or front.frames[-1] != 0):
            tl.add("error", reason="the alarm did not reach the picky receiver as a plainer frame")
            ok = False
        seen = len(front.frames)
        second = stack.device.raise_event("panic")
        step2 = tl.wait_for("arc_ack", stack.timeout_s, id=second.id)
        ok = expect_arc(stack, step2, "120") and ok
        tl.add("learned", frames_for_second_alarm=len(front.frames) - seen)
        if len(front.frames) - seen != 1:
            tl.add("error", reason="the second alarm did not go right the first time")
            ok = False
        return ok
    finally:
        arc.receivers = tuple(primary if r.name == ARC_NAMES[0] else r for r in arc.receivers)
        front.close()


def _arc_codes(stack: DemoStack, code: str) -> list[int | None]:
    return [e["qualifier"] for e in list(stack.local_arc.events) if e["code"] == code] if stack.local_arc else []


@scenario("broker-outage", "the broker stops mid-shift for longer than the lost-contact limit: ONE system fault (CID 350) and its restore reach the ARC, no false lost contact")
def broker_outage(stack: DemoStack) -> bool:
    tl = stack.tl
    limit = stack.supervise(alive_interval_s=2.0, missed_alives=2, grace_s=1.0)
    link = stack.relay.broker_link  # type: ignore[attr-defined]
    # Demo stand-ins for [faults] and [arc] account: quick fault, the local ARC's account.
    link.fault_after_s, link.lease_s, link.account = 1.0, 1.5, ACCOUNT
    stack.device.raise_event("shift_start")
    if tl.wait_for("relay_received", 10, kind="shift_start") is None:
        tl.add("error", reason="the relay did not receive shift_start")
        return False
    stop = threading.Event()

    def alives() -> None:  # the demo device's alive interval is 60 s: one a second here
        while not stop.wait(1.0):
            try:
                if stack.device.link.connected.is_set():
                    stack.device.link.publish("alive", encode(stack.device.alive()))
            except Exception:
                pass

    pump = threading.Thread(target=alives, daemon=True)
    pump.start()
    try:
        return _outage(stack, limit)
    finally:
        stop.set()
        pump.join(5)


def _outage(stack: DemoStack, limit: float) -> bool:
    tl = stack.tl
    stack.mq.stop()
    tl.add("broker_stopped", for_s=limit + 3, lost_contact_limit_s=limit)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _arc_codes(stack, "350") != [1]:
        time.sleep(0.1)
    tl.add("arc_350", qualifiers=_arc_codes(stack, "350"))
    time.sleep(max(0.0, limit + 3 - 1))
    stack.mq.start()
    tl.add("broker_started")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _arc_codes(stack, "350") != [1, 3]:
        time.sleep(0.1)
    tl.add("arc_350", qualifiers=_arc_codes(stack, "350"))
    time.sleep(limit + 2)  # the device is back (alives again): nothing may be raised
    ok = True
    if _arc_codes(stack, "350") != [1, 3]:
        tl.add("error", reason=f"expected one 350 and its restore at the ARC, got {_arc_codes(stack, '350')}")
        ok = False
    raised = [s for s in tl.steps if s["step"] == "relay_raised" and s["kind"] == "lost_contact"]
    if raised or _arc_codes(stack, "356"):
        tl.add("error", reason="a false lost contact was raised for our own outage")
        ok = False
    return ok
