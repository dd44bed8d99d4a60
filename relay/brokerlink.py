"""No false alarms from our own outages (issue 14; SPEC §3 event table: "system fault (no relay
has a broker path) / restore — 350, one per installation, not per device").

* :class:`BrokerLink` — this relay's broker subscription (up once the broker granted the
  SUBACK, down on disconnect) and its lease in Redis: ``lw:{sys}:links`` (sorted set,
  instance → lease end, Unix s; renewed every ``lease_s / 3``). While the link is down, and
  for one alive interval after it came back (or after start-up), :meth:`BrokerLink.hold_until`
  keeps the supervision sweeper from raising lost contacts: queued alives flow in first.
* The installation fault: when no relay holds a live lease for ``fault_after_s``, exactly
  one relay (a Lua transition on ``lw:{sys}:fault``) sees ``raised`` and one sees
  ``restored`` when a lease is back. The ARC gets Contact ID 350 (qualifier 1, restore 3) for
  the relay's own account, zone 000 — sent by whichever relay holds the send lease until an
  ACK is recorded (``arc_state``), so it survives a relay that dies mid-way; administrators
  are told through :class:`relay.system_events.SystemEvents`.
* :class:`MassLoss` — a real loss of many devices while the relay is healthy still raises
  each (the sweeper does that), plus one summary system event per ``window_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from protocol.sia import ContactId

log = logging.getLogger(__name__)

__all__ = ["BrokerLink", "LINKS_KEY", "FAULT_KEY", "MassLoss", "installation_fault"]

LINKS_KEY: Final = "lw:{sys}:links"
FAULT_KEY: Final = "lw:{sys}:fault"
FAULT_CODE: Final = 350

#: Installation-fault transition. KEYS: links, fault; ARGV: now, fault after s.
#: Returns ``{transition, live links}``: transition raised / restored / '' (none).
_TRANSITION: Final = r"""
local now, after = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
local st = redis.call('HGET', KEYS[2], 'state') or 'clear'
if n == 0 then
  local z = tonumber(redis.call('HGET', KEYS[2], 'zero_since'))
  if not z then redis.call('HSET', KEYS[2], 'zero_since', ARGV[1]); z = now end
  if st ~= 'raised' and now - z >= after then
    redis.call('HSET', KEYS[2], 'state', 'raised', 'raised_at', ARGV[1])
    redis.call('HINCRBY', KEYS[2], 'count', 1)
    return {'raised', n}
  end
else
  redis.call('HDEL', KEYS[2], 'zero_since')
  if st == 'raised' then
    redis.call('HSET', KEYS[2], 'state', 'clear', 'cleared_at', ARGV[1])
    return {'restored', n}
  end
end
return {'', n}
"""


def installation_fault(r: Any) -> dict[str, str]:
    """The installation fault record (``state`` raised/clear, ``raised_at``, ``arc_state`` …)
    from redis-py client ``r``; {} when there never was one."""
    raw = r.hgetall(FAULT_KEY)
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}


class BrokerLink:
    """This relay's broker link and the installation-wide fault (see the module docstring).

    Args:
        store: :class:`relay.store.Store` (its redis client is used).
        instance: this relay's name (unique per relay).
        alive_interval_s: the devices' alive interval: the hold after the link came up.
        lease_s: how long a relay's link counts without renewal, seconds.
        fault_after_s: no live link this long → the installation fault.
        arc: :class:`relay.arc.ArcClient` or None; account/partition for the 350 frame.
        system_events: :class:`relay.system_events.SystemEvents` or None (administrators).
        clock: Unix seconds (injectable).
    """

    def __init__(self, store: Any, instance: str, *, alive_interval_s: float = 60.0, lease_s: float = 6.0,
                 fault_after_s: float = 30.0, arc: Any = None, account: str = "0000", partition: int = 1,
                 fmt: str = "ADM-CID", system_events: Any = None, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.store, self.instance = store, instance
        self.alive_interval_s, self.lease_s, self.fault_after_s = alive_interval_s, lease_s, fault_after_s
        self.arc, self.account, self.partition, self.fmt = arc, account, partition, fmt
        self.system_events = system_events
        self.clock = clock
        self._up_since: float | None = None
        self._subscribed = False
        #: ``(timeout_s) -> bool``: the broker answered a QoS 1 probe in time (PUBACK); a
        #: paused or wedged broker keeps the TCP link up long after it stopped delivering.
        self.probe: Callable[[float], bool] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._transition = store.r.register_script(_TRANSITION)
        #: Last installation view: live links (None = Redis not answering).
        self.live_links: int | None = None

    # --- this relay's link (paho callbacks call these) --------------------------------
    def set_up(self, up: bool) -> None:
        """The broker granted our subscriptions (True) or the connection is gone (False)."""
        with self._lock:
            self._subscribed = up
            if up and self._up_since is None:
                self._up_since = self.clock()
            elif not up:
                self._up_since = None
        # The lease itself is renewed by the thread (never a Redis call on paho's thread).

    @property
    def up(self) -> bool:
        with self._lock:
            return self._up_since is not None

    def hold_until(self, now: float) -> float:
        """Unix s before which this relay raises no lost contact: link down → now + one alive
        interval (looked at again then); up → link-up time + one alive interval."""
        with self._lock:
            since = self._up_since
        # The store's policy is the truth (it may change at run time); the argument is the fallback.
        interval = float(getattr(getattr(self.store, "supervision", None), "alive_interval_s", self.alive_interval_s))
        return now + interval if since is None else since + interval

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start the lease/fault thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="brokerlink", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop and give up this relay's lease (others see the link gone at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:
            self.store.r.zrem(LINKS_KEY, self.instance)
        except Exception as exc:
            log.warning("could not drop the broker-link lease of %s: %s", self.instance, exc)

    def _run(self) -> None:
        while not self._stop.wait(max(self.lease_s / 3, 0.05)):
            self.check_once()

    def _renew(self) -> None:
        try:
            if self.up:
                self.store.r.zadd(LINKS_KEY, {self.instance: self.clock() + self.lease_s})
            else:
                self.store.r.zrem(LINKS_KEY, self.instance)
        except Exception as exc:  # Redis down: the lease simply runs out
            log.warning("broker-link lease of %s not renewed: %s", self.instance, exc)

    def _check_probe(self) -> None:
        with self._lock:
            subscribed = self._subscribed
        if not subscribed or self.probe is None:
            return
        try:
            ok = bool(self.probe(max(self.lease_s / 3, 0.2)))
        except Exception:
            ok = False
        with self._lock:
            if not self._subscribed:
                return
            if ok and self._up_since is None:
                self._up_since = self.clock()
                log.warning("broker answers again (%s): lost-contact raising resumes after %.0f s", self.instance, self.alive_interval_s)
            elif not ok and self._up_since is not None:
                self._up_since = None
                log.error("broker does not answer the relay's probe (%s): lost-contact alarms are held", self.instance)

    def check_once(self) -> str:
        """Renew the lease, run the installation transition, send what the ARC lacks.
        Returns the transition seen (``raised`` / ``restored`` / ``""``). Never raises."""
        self._check_probe()
        self._renew()
        try:
            transition, n = self._transition(keys=[LINKS_KEY, FAULT_KEY], args=[f"{self.clock():.3f}", self.fault_after_s])
            transition = transition.decode() if isinstance(transition, bytes) else transition
            self.live_links = int(n)
        except Exception as exc:
            log.warning("installation broker-link check failed: %s", exc)
            self.live_links = None
            return ""
        if transition == "raised":
            log.error("SYSTEM FAULT: no relay has a broker subscription (for %.0f s); lost-contact alarms are held, "
                      "the ARC gets Contact ID 350", self.fault_after_s)
            self._tell("system_fault", "no relay of this installation has a working broker subscription; "
                       "devices cannot reach the relays; lost-contact alarms are held until it is back")
        elif transition == "restored":
            log.warning("system fault restored: a relay has a broker subscription again (%s)", self.instance)
            self._tell("system_restore", "a relay has a working broker subscription again")
        self._send_to_arc()
        return transition

    def _tell(self, kind: str, detail: str) -> None:
        if self.system_events is not None:
            try:
                self.system_events.record(kind, detail)
            except Exception:
                log.exception("could not tell the administrators about %s", kind)

    def _send_to_arc(self) -> None:
        """Send 350 (or its restore) once per transition: the relay holding the send lease
        sends until the ARC ACKs, then records ``arc_state``."""
        if self.arc is None:
            return
        r = self.store.r
        try:
            rec = installation_fault(r)
            state = rec.get("state")
            if not state or rec.get("arc_state", "clear") == state:
                return
            if not r.set(FAULT_KEY + ":lease", self.instance, nx=True, px=int(max(self.lease_s, 5) * 3000)):
                return
        except Exception as exc:
            log.warning("installation fault: redis unavailable (%s)", exc)
            return
        from .arc import ArcAlarm, ArcError

        qualifier = 1 if state == "raised" else 3
        alarm = ArcAlarm(self.account, ContactId(qualifier, FAULT_CODE, self.partition, 0), fmt=self.fmt,
                         text="lonewatch: no relay has a broker path" if qualifier == 1 else None)  # fmt: skip
        try:
            # One DC-09 sequence per transition, kept in Redis: a retry (any relay) repeats it.
            field = f"arc_seq_{state}_{rec.get('count', '0')}"
            r.hsetnx(FAULT_KEY, field, self.store.next_sequence(self.account))
            seq = int(r.hget(FAULT_KEY, field))
            result = self.arc.send(alarm, sequence=seq)
            r.hset(FAULT_KEY, mapping={"arc_state": state, "arc_receiver": result.receiver, "arc_at": f"{self.clock():.3f}"})
            log.warning("ARC ACK for installation fault 350/%d from %s", qualifier, result.receiver)
        except ArcError as exc:
            log.error("ARC did not take the installation fault 350/%d: %s; retrying", qualifier, exc)
        except Exception as exc:
            log.error("installation fault 350/%d not recorded: %s", qualifier, exc)
        finally:
            try:
                r.delete(FAULT_KEY + ":lease")
            except Exception:
                pass


class MassLoss:
    """One summary system event when at least ``threshold`` lost contacts are raised within
    ``window_s`` while the relay is healthy (each device is raised on its own anyway); one
    per installation and window (``SET NX`` on ``lw:{sys}:massloss``)."""

    def __init__(self, store: Any, system_events: Any, *, threshold: int = 10, window_s: float = 60.0) -> None:
        self.store, self.system_events = store, system_events
        self.threshold, self.window_s = threshold, window_s
        self._times: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        #: Summaries this relay recorded.
        self.summaries = 0

    def count(self, n: int, now: float) -> bool:
        """``n`` lost contacts were raised at ``now``; True when this call recorded a summary."""
        with self._lock:
            self._times.append((now, n))
            while self._times and self._times[0][0] < now - self.window_s:
                self._times.popleft()
            total = sum(k for _, k in self._times)
        if total < self.threshold:
            return False
        try:
            if not self.store.r.set("lw:{sys}:massloss", f"{now:.0f}", nx=True, ex=max(1, int(self.window_s))):
                return False
        except Exception as exc:
            log.warning("mass-loss summary claim failed: %s", exc)
            return False
        self.summaries += 1
        log.error("MASS LOSS OF CONTACT: %d devices lost contact within %.0f s while the relay is connected", total, self.window_s)
        if self.system_events is not None:
            self.system_events.record("mass_lost_contact", f"{total} devices lost contact within {self.window_s:.0f} s "
                                      "while the relay was connected to the broker; each is raised to the ARC")
        return True
