"""Deliver alarms to an alarm receiving centre over SIA DC-09/TCP (SPEC §3 "Dispatch", §4).

Synchronous sockets: the relay calls :meth:`ArcClient.send` from worker threads; one client is
shared by all threads (its per-receiver state sits behind a lock).

Choices, with the reasons:

* **One TCP connection per attempt.** Alarms are rare, a connect on a LAN/VPN costs a round
  trip, and a fresh socket never hides a half-dead link or a stale reply from an earlier frame.
  It is also what pysiaalarm's threaded server handles best: it reads ``recv(1024)`` and
  splits on CR, so one frame (< 1024 bytes, starting with LF) per write is the safe shape.
* **One sequence number per alarm.** Every retry of an alarm — after a timeout, after a NAK
  with a corrected timestamp or trimmed extended data, and on the secondary receiver — repeats
  the sequence number (DC-09: a repeated message keeps its sequence so the receiver can discard
  duplicates when only the ACK was lost). The next alarm takes the next number.
* **NAK handling.** A NAK carries the receiver's clock. If our frame's timestamp was ≥ 10 s
  off, the NAK was about time: the offset is stored per receiver and the frame is re-sent with
  a corrected timestamp (also for all later frames). Otherwise the NAK was about format
  (pysiaalarm NAKs ``ADM-CID`` with more than one extended-data block).
* **DUH, format NAK, unreadable or no reply** → the next step of the receiver's ladder
  (:mod:`relay.arc_policy`: fewer extended-data blocks, none, then the other format if the
  receiver allows it), then the next receiver. What a receiver took is learned and shared by
  every relay (:mod:`relay.receiver_caps`), so later alarms skip the refused round trips.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Final

from protocol.errors import ValidationError
from protocol.sia import (
    SiaFrame,
    SiaFrameError,
    SiaReply,
    check_account,
    encode_frame,
    parse_reply,
    reply_complete,
)

from .arc_model import (
    ArcAlarm,
    ArcError,
    ArcReceiver,
    ArcRejectedError,
    ArcResult,
    ArcUnavailableError,
    Attempt,
    plan_xdata,
)
from .arc_policy import SILENT_PER_STEP, plan_steps
from .arc_sequences import MemorySequences, SequenceSource
from .receiver_caps import ReceiverCaps, caps_key

__all__ = [
    "ArcAlarm",
    "ArcClient",
    "ArcError",
    "ArcReceiver",
    "ArcRejectedError",
    "ArcResult",
    "ArcUnavailableError",
    "Attempt",
    "MemorySequences",
    "SequenceSource",
    "plan_xdata",
]

_LOGGER = logging.getLogger(__name__)


def receiver_key(receiver: "ArcReceiver") -> str:
    """The Redis key of what ``receiver`` was learned to accept (:mod:`relay.receiver_caps`)."""
    return caps_key(receiver.name, receiver.host, receiver.port)

#: A NAK whose clock differs from our frame's timestamp by less than this is about format.
CLOCK_NAK_THRESHOLD_S: Final = 10.0
_MAX_REPLY_BYTES: Final = 4096



# --------------------------------------------------------------------------- client
class ArcClient:
    """Sends alarms to the receivers in order (primary first) with retries (SPEC §3).

    ``attempts_per_receiver`` bounds transport failures (timeout, refused, garbage) per
    receiver, with back-off ``backoff_s × 2^n`` between them. ``clock`` gives Unix seconds for
    frame timestamps (corrected per receiver after a time NAK); ``sleep`` is injectable.
    """

    def __init__(
        self,
        receivers: list[ArcReceiver],
        sequences: SequenceSource,
        *,
        attempts_per_receiver: int = 3,
        backoff_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        caps: ReceiverCaps | None = None,
    ) -> None:
        if not receivers:
            raise ValidationError("receivers", "at least one ARC receiver is needed")
        if len({r.name for r in receivers}) != len(receivers):
            raise ValidationError("receivers", "receiver names must be unique")
        if attempts_per_receiver < 1:
            raise ValidationError("attempts_per_receiver", "must be >= 1")
        self.receivers = tuple(receivers)
        self._sequences = sequences
        self._attempts = attempts_per_receiver
        self._backoff_s = backoff_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._offsets: dict[str, float] = {}
        #: What each receiver accepted (learned; in Redis when the relay passes its client).
        self.caps = caps if caps is not None else ReceiverCaps(None)

    def clock_offset(self, receiver: str) -> float:
        """Seconds added to our clock for frames to ``receiver`` (learned from its NAKs)."""
        with self._lock:
            return self._offsets.get(receiver, 0.0)

    def send(self, alarm: ArcAlarm, sequence: int | None = None) -> ArcResult:
        """Deliver ``alarm``: primary, then the next receivers, until one ACKs; each receiver
        is offered the ladder of :func:`relay.arc_policy.plan_steps` (fewer extended-data
        blocks, then the other format where allowed) after a DUH, a format NAK or an
        unreadable/absent reply. Receivers known not to take the alarm's code go last.

        ``sequence`` (1..9999): the DC-09 sequence to use — the caller's when it resends an
        alarm it sent before (a receiver may then discard the duplicate); None takes the
        next from the :class:`SequenceSource`.

        Raises ArcRejectedError when every receiver refused it (DUH/NAK; its
        ``code_refused`` names the receivers that refused only this code) and
        ArcUnavailableError otherwise (at least one could not be reached); both carry the log.
        ValidationError for a ``sequence`` out of range. Errors of the
        :class:`SequenceSource` (e.g. Redis down) propagate unchanged.
        """
        if sequence is None:
            sequence = self._sequences.next_sequence(alarm.account)
        elif isinstance(sequence, bool) or not isinstance(sequence, int) or not 1 <= sequence <= 9999:
            raise ValidationError("sequence", f"must be 1..9999, got {sequence!r}")
        code = f"{alarm.contact_id.code:03d}"
        views = {r.name: self.caps.view(receiver_key(r), code) for r in self.receivers}
        ordered = sorted(self.receivers, key=lambda r: views[r.name].refused)  # stable
        plans = {r.name: [(s.alarm.fmt, s.alarm.data(), plan_xdata(s.alarm, s.xdata), s)
                          for s in plan_steps(alarm, r, views[r.name], plan_xdata)] for r in ordered}
        return self._deliver(tuple(ordered), alarm.account, sequence, plans, alarm, views)

    def poll(self, receiver: ArcReceiver, account: str) -> ArcResult:
        """Send a ``NULL`` link poll (sequence 0000) for ``account`` to one receiver.

        Raises ArcUnavailableError / ArcRejectedError like :meth:`send`.
        """
        return self._deliver((receiver,), check_account(account), 0, {receiver.name: [("NULL", "", (), None)]}, None, {})

    # ----------------------------------------------------------------------- internals
    def _deliver(self, receivers: tuple[ArcReceiver, ...], account: str, sequence: int,
                 plans: dict[str, list[tuple[str, str, tuple[str, ...], Any]]], alarm: ArcAlarm | None,
                 views: dict[str, Any]) -> ArcResult:
        started = time.monotonic()
        log: list[Attempt] = []
        unreachable = False
        code_refused: list[str] = []
        for receiver in receivers:
            outcome = self._try_receiver(receiver, sequence, account, plans[receiver.name], log)
            if isinstance(outcome, tuple):
                reply, xdata, step = outcome
                if alarm is not None and step is not None:
                    self.caps.learned_ack(receiver_key(receiver), code=f"{alarm.contact_id.code:03d}", fmt=step.alarm.fmt,
                                          configured_fmt=alarm.fmt, xdata=step.xdata if step.trimmed else None)  # fmt: skip
                degraded = bool(step is not None and (step.trimmed or step.alarm.fmt != alarm.fmt))  # type: ignore[union-attr]
                return ArcResult(receiver.name, sequence, reply, len(log),
                                 time.monotonic() - started, degraded, xdata, tuple(log))
            if outcome == "unreachable":
                unreachable = True
            elif alarm is not None and outcome == "duh":
                view = views.get(receiver.name)
                if view is not None and view.knows_other_codes and not view.knows_code:
                    code_refused.append(receiver.name)
                    self.caps.learned_refusal(receiver_key(receiver), code=f"{alarm.contact_id.code:03d}")
        names = ", ".join(r.name for r in receivers)
        if unreachable:
            raise ArcUnavailableError(
                f"no ARC receiver reachable ({names}) for sequence {sequence:04d}", tuple(log), sequence)
        err = ArcRejectedError(f"every ARC receiver refused sequence {sequence:04d} ({names})", tuple(log), sequence)
        err.code_refused = tuple(code_refused)
        raise err

    def _try_receiver(self, receiver: ArcReceiver, sequence: int, account: str,
                      steps: list[tuple[str, str, tuple[str, ...], Any]],
                      log: list[Attempt]) -> tuple[SiaReply, tuple[str, ...], Any] | str:
        """Try one receiver along its ladder. Returns (ACK reply, extended data sent, step),
        or when giving up ``"unreachable"`` (transport failures), ``"duh"`` (the last answer
        was DUH) or ``"nak"`` (refused by NAK)."""
        i = failures = silent = naks = 0
        while True:
            message_id, data, xdata, _step = steps[i]
            offset = self.clock_offset(receiver.name)
            moment = datetime.fromtimestamp(self._clock() + offset, timezone.utc)
            frame = SiaFrame(message_id, sequence, account, data, xdata, moment,
                             receiver.receiver_no, receiver.line_no)
            raw = encode_frame(frame, receiver.key)
            t0 = time.monotonic()

            def record(outcome: str, detail: str) -> None:
                log.append(Attempt(receiver.name, sequence, outcome, detail, len(xdata), offset,
                                   time.monotonic() - t0))
                _LOGGER.log(logging.INFO if outcome in ("ACK", "RSP") else logging.WARNING,
                            "ARC %s seq %04d: %s %s", receiver.name, sequence, outcome, detail)

            def step_down(why: str) -> bool:
                nonlocal i, silent
                if i + 1 >= len(steps):
                    return False
                i, silent = i + 1, 0
                nxt = steps[i]
                _LOGGER.warning("ARC %s seq %04d: %s; re-sending as %s with %d extended-data blocks",
                                receiver.name, sequence, why, nxt[0], len(nxt[2]))
                return True

            reply, problem = self._ask(receiver, raw)
            if reply is not None and reply.kind in ("ACK", "RSP") and (
                reply.sequence != sequence or reply.account not in (None, account)
            ):
                problem = ("mismatch", f"{reply.kind} for sequence {reply.sequence} "
                                       f"account {reply.account}, not ours")
            if problem is not None or reply is None:
                problem = problem or ("garbage", "no reply")
                record(*problem)
                if problem[0] in ("garbage", "timeout"):  # a reply it could not give: simpler frame
                    silent += 1
                    if silent >= SILENT_PER_STEP and step_down(f"{problem[0]} reply"):
                        continue
                failures += 1
                if failures >= self._attempts:
                    return "unreachable"
                self._sleep(self._backoff_s * 2 ** (failures - 1))
                continue

            if reply.kind in ("ACK", "RSP"):
                record(reply.kind, f"{len(xdata)} extended-data blocks")
                return reply, xdata, _step
            if reply.kind == "DUH":
                record("DUH", "receiver did not understand the frame")
                if step_down("DUH"):
                    continue
                return "duh"

            naks += 1  # a NAK: about our clock, or about the frame's format
            skew = None
            if reply.timestamp is not None:
                skew = reply.timestamp.timestamp() - (self._clock() + offset)
            if skew is not None and abs(skew) >= CLOCK_NAK_THRESHOLD_S:
                with self._lock:
                    self._offsets[receiver.name] = offset + skew
                record("NAK", f"clock off by {skew:+.0f} s; re-sending with corrected time")
                if naks > len(steps) + 1:
                    return "nak"
                continue
            if step_down("format NAK"):
                record("NAK", f"format refused; re-sending with {len(steps[i][2])} extended-data blocks")
                continue
            record("NAK", "refused with no extended data left to trim")
            return "nak"

    def _ask(self, receiver: ArcReceiver, raw: bytes) -> tuple[SiaReply | None, tuple[str, str] | None]:
        """Exchange one frame; (reply, None) or (None, (outcome, detail)) on transport failure."""
        try:
            return parse_reply(self._exchange(receiver, raw), receiver.key), None
        except (TimeoutError, socket.timeout):
            return None, ("timeout", f"no reply within {receiver.timeout_s} s")
        except ConnectionRefusedError as exc:
            return None, ("refused", str(exc))
        except OSError as exc:
            return None, ("error", f"{type(exc).__name__}: {exc}")
        except SiaFrameError as exc:
            return None, ("garbage", exc.reason)

    @staticmethod
    def _exchange(receiver: ArcReceiver, raw: bytes) -> bytes:
        """Connect, send one frame, read one reply (up to CR, or a bare ``"NAK"``), close."""
        if receiver.protocol == "udp":
            return ArcClient._exchange_udp(receiver, raw)
        deadline = time.monotonic() + receiver.timeout_s
        try:  # no TCP link is a transport failure, not a frame the receiver could not answer
            sock = socket.create_connection((receiver.host, receiver.port), timeout=receiver.timeout_s)
        except (TimeoutError, socket.timeout) as exc:
            raise ConnectionError(f"connect timed out after {receiver.timeout_s} s") from exc
        with sock:
            sock.sendall(raw)
            buffer = b""
            while not reply_complete(buffer):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no complete reply")
                sock.settimeout(remaining)
                chunk = sock.recv(1024)
                if not chunk:
                    if buffer:
                        return buffer
                    raise ConnectionResetError("receiver closed the connection without a reply")
                buffer += chunk
                if len(buffer) > _MAX_REPLY_BYTES:
                    raise SiaFrameError("reply too long")
            end = buffer.find(b"\r")
            return buffer if end < 0 else buffer[: end + 1]

    @staticmethod
    def _exchange_udp(receiver: ArcReceiver, raw: bytes) -> bytes:
        """Send one frame as one datagram and wait for the reply datagram from the receiver's
        address (others are ignored); a lost datagram either way is a timeout. An ICMP port
        unreachable surfaces as ConnectionRefusedError (connected UDP socket)."""
        deadline = time.monotonic() + receiver.timeout_s
        infos = socket.getaddrinfo(receiver.host, receiver.port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)  # only the receiver's datagrams are delivered to us
            sock.send(raw)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no reply datagram")
                sock.settimeout(remaining)
                data = sock.recv(_MAX_REPLY_BYTES)
                if data:
                    end = data.find(b"\r")
                    return data if end < 0 else data[: end + 1]
