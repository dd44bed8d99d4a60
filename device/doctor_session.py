"""The doctor's MQTT session: a ``test`` event to the relay and back (SPEC §5, §2 delivery rule).

Split out of :mod:`device.doctor` (issue 9), which re-exports :class:`TestEventSession`,
:class:`RoundTrip` and :class:`RoundTripError` (``lonewatch test-alarm`` uses them through
:mod:`cli.install`). The session logs in with the device's own credentials (TLS per
device.toml) under a client id of its own; the test event's sequence number comes from the
device's queue and the event is queued there before it is sent, so it never collides with a
real alarm's id and is never lost. :attr:`RoundTrip.clock_offset_s` is the device-minus-relay
clock offset from the ``received`` ack's timestamp (SPEC §4 SIA timestamps, §7 NTP on the relay).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from protocol.errors import ValidationError
from protocol.messages import Ack, Event, decode_for_topic, encode
from protocol.topics import topic

from device.config import DeviceConfig

__all__ = ["RoundTrip", "RoundTripError", "TestEventSession"]


class RoundTripError(Exception):
    """The broker or the relay did not answer as needed; ``fix`` says what to try."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class RoundTrip:
    """One test event's journey: ``event_id``; ``sent_at``/``received_at`` device wall clock
    (s); ``received_after_s`` publish → ``received`` ack (s); ``relay_ts`` the relay's clock
    in that ack; ``arc`` the ``arc`` ack's detail (receiver, latency_ms) or None;
    ``arc_after_s`` publish → ``arc`` ack (s) or None; ``arc_failed`` reason or None."""

    event_id: str
    sent_at: float
    received_at: float
    received_after_s: float
    relay_ts: float
    arc: dict[str, Any] | None = None
    arc_after_s: float | None = None
    arc_failed: str | None = None

    @property
    def clock_offset_s(self) -> float:
        """Device clock minus relay clock, seconds (positive: the device is ahead)."""
        return (self.sent_at + self.received_at) / 2 - self.relay_ts

    @property
    def clock_uncertainty_s(self) -> float:
        return (self.received_at - self.sent_at) / 2


class TestEventSession:
    """A short MQTT session with the device's own credentials (TLS per device.toml) that
    sends ``test`` events and waits for their acks. It asks for the client id
    ``<device>-doctor-…``, but the broker binds client ids to user names (issue 15), so it
    resumes the device's own session (a running daemon is disconnected for the round trip and
    reconnects by itself). Use as a context manager.

    Raises (from :meth:`connect` / :meth:`send_test`): :class:`RoundTripError`.
    """

    def __init__(self, cfg: DeviceConfig, *, source: str = "doctor") -> None:
        import paho.mqtt.client as mqtt

        self.cfg, self.source = cfg, source
        self.device_id = cfg.device.id
        self._cond = threading.Condition()
        self._acks: list[tuple[float, Ack]] = []
        self._connack: Any = None
        self._subscribed = False
        self.tls_version: str | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=f"{self.device_id}-{source}-{uuid.uuid4().hex[:6]}")
        m = cfg.mqtt
        self.client.username_pw_set(m.username or self.device_id, m.password or None)
        if m.tls:
            cert = getattr(m, "cert_file", "") or None
            key = getattr(m, "key_file", "") or None
            self.client.tls_set(ca_certs=m.ca_file or None, certfile=cert, keyfile=key)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self._connack = reason_code
            self._cond.notify_all()
        if not reason_code.is_failure:
            client.subscribe(topic(self.device_id, "ack"), qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            ack = decode_for_topic(msg.topic, msg.payload)
        except ValidationError:
            return
        if isinstance(ack, Ack):
            with self._cond:
                self._acks.append((time.time(), ack))
                self._cond.notify_all()

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe to the device's ack topic."""
        m = self.cfg.mqtt
        where = f"{m.host}:{m.port}"
        try:
            # The broker binds the client id to the user name (issue 15), so this session is the
            # device's own: resume it (clean_start False, same expiry as the daemon's link) so a
            # running daemon's queued acks and subscription survive; it resends what we took.
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            from .link import SESSION_EXPIRY_S

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            self.client.connect(m.host, m.port, keepalive=30, clean_start=False, properties=props)
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or str(exc)
            if "not yet valid" in reason or "expired" in reason:
                fix = "the device clock is wrong: let NTP set it (timedatectl set-ntp true) and try again"
            elif "hostname" in reason or "IP address mismatch" in reason:
                fix = (f"the broker's certificate does not name {m.host!r}: re-issue it with "
                       f"`lonewatch pki issue-server --host {m.host}`, or fix [mqtt] host")
            else:
                fix = (f"[mqtt] ca_file ({m.ca_file or 'system store'}) must be the project CA that signed the "
                       "broker's certificate (provision writes it as ca.crt)")
            raise RoundTripError(f"TLS: broker certificate rejected ({reason})", fix) from None
        except ssl.SSLError as exc:
            raise RoundTripError(f"TLS handshake with {where} failed: {exc}",
                                 "is this the broker's TLS port (8883)? a client certificate may be required") from None
        except ConnectionRefusedError:
            from pathlib import Path

            from .doctor_hints import port_changed_fix

            near = [Path(p).parent for p in (m.ca_file, self.cfg.queue_path) if p]
            raise RoundTripError(f"nothing listens on {where}",
                                 port_changed_fix(m.host, m.port, self.device_id, near)) from None
        except OSError as exc:
            raise RoundTripError(f"cannot reach {where}: {exc.strerror or exc}",
                                 "check the network route (cellular data / Wi-Fi), DNS and firewalls") from None
        self.client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None, timeout_s)
            connack = self._connack
        if connack is None:
            raise RoundTripError(f"no answer from the broker at {where} within {timeout_s:.0f} s",
                                 "a firewall may drop the connection; check the port and the broker's log")
        if connack.is_failure:
            if str(connack) in ("Not authorized", "Bad user name or password"):
                raise RoundTripError(f"the broker refused the login of {self.device_id} ({connack})",
                                     "the password in device.toml is not in the broker's password file: re-run "
                                     "`lonewatch provision` for this device and reload the broker")
            raise RoundTripError(f"the broker refused the connection ({connack})", "see the broker's log")
        with self._cond:
            if not self._cond.wait_for(lambda: self._subscribed, timeout_s):
                raise RoundTripError("the broker did not confirm the ack subscription", "see the broker's log")
        sock = self.client.socket()
        self.tls_version = sock.version() if isinstance(sock, ssl.SSLSocket) else None

    def send_test(self, *, wait_arc: bool, timeout_s: float) -> RoundTrip:
        """Queue and publish a ``test`` event; wait for ``received`` (and ``arc`` if
        ``wait_arc``), each within ``timeout_s`` seconds of sending.

        Raises:
            RoundTripError: the device queue cannot be written, or an ack did not come.
        """
        with _as_owner_of(self.cfg.queue_path.parent):
            return self._send_test(wait_arc=wait_arc, timeout_s=timeout_s)

    def _send_test(self, *, wait_arc: bool, timeout_s: float) -> RoundTrip:
        from .queue import PRIORITY_EVENT, EventQueue, QueueError

        try:
            queue = EventQueue(self.cfg.queue_path)
        except QueueError as exc:
            raise RoundTripError(f"the device queue cannot be opened: {exc}",
                                 "run this on the device as root or the lonewatch user (state_dir must be writable)") from None
        try:
            seq = queue.next_sequence()
            event = Event(device=self.device_id, seq=seq, kind="test", ts=time.time(), data={"source": self.source})
            payload = encode(event)
            # Queued first (SPEC §2): if we die now, the daemon delivers it later.
            queue.put(event.id, "test", payload, priority=PRIORITY_EVENT)
            sent_at = time.time()
            t0 = time.monotonic()
            self.client.publish(topic(self.device_id, "event"), payload, qos=1)
            # An "arc" ack can overtake "received" (the relay's dispatcher and pipeline are two
            # threads): it says the relay stored the event, so whichever comes first counts.
            received = self._wait_ack(event.id, ("received", "arc"), t0 + timeout_s)
            if received is None:
                raise RoundTripError(
                    f"the relay did not acknowledge test event {event.id} within {timeout_s:.0f} s",
                    "is the relay running and connected to the broker? is this device registered "
                    "(`lonewatch status` on the relay host; its dead letters say why an event was refused)?")
            received_at, ack = received
            queue.ack(event.id)
            trip = RoundTrip(event.id, sent_at, received_at, received_at - sent_at, ack.ts)
            if not wait_arc:
                return trip
            final = self._wait_ack(event.id, ("arc", "arc_failed"), t0 + timeout_s)
            if final is None:
                return trip
            at, ack = final
            if ack.stage == "arc_failed":
                return replace(trip, arc_failed=str(ack.detail.get("reason", "failed")))
            return replace(trip, arc=dict(ack.detail), arc_after_s=at - sent_at)
        finally:
            queue.close()

    def _wait_ack(self, event_id: str, stages: tuple[str, ...], deadline: float) -> tuple[float, Ack] | None:
        def found() -> tuple[float, Ack] | None:
            return next(((t, a) for t, a in self._acks if a.id == event_id and a.stage in stages), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, max(0.0, deadline - time.monotonic()))
            return found()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "TestEventSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _as_owner_of(directory: Any) -> Iterator[None]:
    """Run as the owner of the device's state directory while touching its queue. ``sudo
    lonewatch doctor`` would otherwise create ``queue.db`` (or its ``-wal``/``-shm``) as
    root, and the daemon, running as its own user, could then no longer write its queue."""
    import os

    try:
        st = os.stat(directory)
    except OSError:
        st = None
    if os.geteuid() != 0 or st is None or st.st_uid == 0:
        yield
        return
    egid = os.getegid()
    os.setegid(st.st_gid)
    os.seteuid(st.st_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
