"""ARC link supervision (SPEC §3 "a periodic link test to the ARC (602) per device or per
relay", §4 "NULL messages are link polls").

* **NULL polls**, per receiver and per relay instance (each instance has its own network path
  to the ARC): every ``poll_interval_s`` of the receiver a ``NULL`` frame (sequence 0000) is
  sent; the result is kept per receiver (:class:`PollStatus`), logged when it changes and
  shown by the health endpoint and the metrics. A receiver failing its polls is reported,
  not skipped: alarms still try it first.
* **Periodic test 602**, once per ``test_interval_s`` for the whole installation — however
  many relays run: the first relay to claim the period in Redis (``SET NX``) sends it. Mode
  ``relay``: one test for the relay's own account (zone 0); ``device``: one per registered
  device with its account and zone (ARCs that supervise each panel). A failed test is
  reported and retried at the next period (the ARC raises its own "failure to test").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from protocol.sia import ContactId, contact_id_for

from .arc import ArcAlarm, ArcClient, ArcError, ArcReceiver
from .store import PREFIX, Store, StoreError, registry_key

__all__ = ["LinkTester", "PollStatus", "TEST_MODES"]

log = logging.getLogger(__name__)

TEST_MODES = ("off", "relay", "device")


@dataclass(frozen=True, slots=True)
class PollStatus:
    """The last NULL poll of one receiver: ``ok`` (None = not polled yet), ``at`` (Unix s),
    ``latency_s``, ``error`` text, ``failures`` in a row."""

    receiver: str
    ok: bool | None = None
    at: float | None = None
    latency_s: float | None = None
    error: str = ""
    failures: int = 0


class LinkTester:
    """Runs the NULL polls and periodic tests in one thread.

    Args:
        arc: the relay's ARC client (its receivers are polled).
        store: Redis (claims of the periodic test; device registry for ``device`` mode).
        account: the relay's own SIA account (3-16 hex) for polls and ``relay`` tests.
        poll_intervals: receiver name → seconds between NULL polls (0 or absent: none).
        test_mode: ``off`` / ``relay`` / ``device``; test_interval_s: seconds.
        partition, fmt: Contact ID partition and SIA format of the 602.
        devices: ``() -> [device ids]`` for ``device`` mode (default: the registry in Redis).
        on_poll: optional ``(PollStatus) -> None`` after every poll (metrics).
        on_test: optional ``(ok, detail) -> None`` after every test sent (metrics).
    """

    def __init__(self, arc: ArcClient, store: Store, *, account: str, poll_intervals: dict[str, float] | None = None,
                 test_mode: str = "off", test_interval_s: float = 86400.0, partition: int = 1, fmt: str = "ADM-CID",
                 devices: Callable[[], list[str]] | None = None, on_poll: Callable[[PollStatus], None] | None = None,
                 on_test: Callable[[bool, str], None] | None = None) -> None:  # fmt: skip
        if test_mode not in TEST_MODES:
            raise ValueError(f"test_mode must be one of {TEST_MODES}, got {test_mode!r}")
        self.arc, self.store, self.account = arc, store, account
        self.poll_intervals = {r.name: float((poll_intervals or {}).get(r.name, 0)) for r in arc.receivers}
        self.test_mode, self.test_interval_s = test_mode, test_interval_s
        self.partition, self.fmt = partition, fmt
        self.devices = devices or (lambda: registered_devices(store))
        self.on_poll, self.on_test = on_poll, on_test
        self._status = {r.name: PollStatus(r.name) for r in arc.receivers}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_test: tuple[float, bool, str] | None = None  # (Unix s, ok, detail)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True if anything is configured to run."""
        return self.test_mode != "off" or any(v > 0 for v in self.poll_intervals.values())

    def start(self) -> None:
        """Start the thread (does nothing when nothing is configured)."""
        if not self.active:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="arc-linktest", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def status(self) -> dict[str, PollStatus]:
        """Receiver name → its last poll (copy)."""
        with self._lock:
            return dict(self._status)

    def _run(self) -> None:
        next_poll = {name: time.monotonic() for name, iv in self.poll_intervals.items() if iv > 0}
        next_test = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            for receiver in self.arc.receivers:
                due = next_poll.get(receiver.name)
                if due is not None and now >= due:
                    self.poll_once(receiver)
                    next_poll[receiver.name] = time.monotonic() + self.poll_intervals[receiver.name]
            if self.test_mode != "off" and now >= next_test:
                try:
                    self.test_once()
                except StoreError as exc:
                    log.error("periodic test: redis unavailable (%s)", exc)
                # Look again well within the period: the claim makes it once per period.
                next_test = time.monotonic() + min(self.test_interval_s / 4, 60.0)
            waits = [d - time.monotonic() for d in next_poll.values()]
            if self.test_mode != "off":
                waits.append(next_test - time.monotonic())
            self._stop.wait(max(0.05, min(waits, default=1.0)))

    # --- the work -----------------------------------------------------------------------

    def poll_once(self, receiver: ArcReceiver) -> PollStatus:
        """Send one NULL poll to ``receiver`` now and record the result (never raises for a
        failed poll: that is the result)."""
        t0 = time.monotonic()
        try:
            self.arc.poll(receiver, self.account)
            ok, error = True, ""
        except ArcError as exc:
            ok, error = False, str(exc)[:300]
        with self._lock:
            before = self._status[receiver.name]
            st = PollStatus(receiver.name, ok, time.time(), time.monotonic() - t0, error, 0 if ok else before.failures + 1)
            self._status[receiver.name] = st
        if ok and before.ok is False:
            log.warning("ARC receiver %s answers NULL polls again (after %d failures)", receiver.name, before.failures)
        elif not ok and before.ok is not False:
            log.error("ARC receiver %s failed a NULL poll: %s", receiver.name, error)
        if self.on_poll is not None:
            self.on_poll(st)
        return st

    def test_once(self, now: float | None = None) -> int:
        """Send the periodic tests of the current period that no relay has sent yet.
        Returns how many this relay sent. Raises StoreError (Redis down: none sent)."""
        now = time.time() if now is None else now
        period = int(now // self.test_interval_s)
        ttl = max(int(self.test_interval_s * 2), 1)
        targets: list[tuple[str, str, int]] = []  # (claim key, account, zone)
        if self.test_mode == "relay":
            targets.append((f"{PREFIX}linktest:relay:{period}", self.account, 0))
        elif self.test_mode == "device":
            for dev in self.devices():
                entry = self.store.device(dev)
                if entry is not None:
                    targets.append((f"{PREFIX}linktest:{dev}:{period}", entry.account, entry.zone))
        sent = 0
        code, qualifier = contact_id_for("periodic_test")
        for key, account, zone in targets:
            if not self.store.claim_once(key, ttl):
                continue  # another relay has it
            alarm = ArcAlarm(account=account, contact_id=ContactId(qualifier, code, self.partition, zone), fmt=self.fmt)
            try:
                result = self.arc.send(alarm)
                ok, detail = True, f"{account}: ACK from {result.receiver} in {result.latency_s * 1000:.0f} ms"
                log.info("periodic test 602 %s", detail)
            except ArcError as exc:
                ok, detail = False, f"{account}: {exc}"[:300]
                log.error("periodic test 602 failed: %s", detail)
            self.last_test = (time.time(), ok, detail)
            sent += 1
            if self.on_test is not None:
                self.on_test(ok, detail)
        return sent


def registered_devices(store: Store) -> list[str]:
    """Device ids in the registry: the registry hash (:mod:`relay.registry`) and the
    per-device entries ``lw:device:<id>``."""
    ids = {k.decode() if isinstance(k, bytes) else k for k in store._call(store.r.hkeys, registry_key("devices"))}
    for key in store.r.scan_iter(match=f"{PREFIX}device:*", count=1000):
        ids.add((key.decode() if isinstance(key, bytes) else key).split(":", 2)[2])
    return sorted(ids)

