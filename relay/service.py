"""The relay service: MQTT subscriber → :class:`relay.pipeline.Pipeline` → dispatch.

MQTT (SPEC §3): MQTT v5, persistent session (``clean_start=False`` with a session expiry),
QoS 1, shared subscription ``$share/<group>/lonewatch/+/<channel>`` so several relay
instances split the load, and **manual acks**: the broker's PUBACK for a device message is
sent only after the pipeline stored it in Redis. A relay killed before that point gets the
message again (or another instance does).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.messages import Ack, Event, encode
from protocol.topics import RELAY_FILTERS, shared, topic

from .arc import ArcClient
from .dispatch import Dispatcher
from .inbox import Inbox
from .pipeline import Pipeline
from .store import Store, StoreError

log = logging.getLogger(__name__)

#: How long the broker keeps the relay's session (and queued messages) while it is away, s.
SESSION_EXPIRY_S = 7 * 24 * 3600


class RelayService:
    """One relay instance.

    Args:
        mqtt_host, mqtt_port: the broker.
        username, password: the relay's broker account (the password is never logged).
        client_id: unique per instance and stable across restarts (persistent session).
        store: Redis state. arc: ARC client or None (no ARC contract).
        shared_group: MQTT v5 shared-subscription group name.
        tls_ca: CA file for TLS, ``""`` for the system store, ``None`` for no TLS.
        tls_cert: ``(cert_file, key_file)`` for client-certificate login, or None.
        partition, fmt, dispatch_workers: see :class:`relay.dispatch.Dispatcher`.
        on_stored, on_result: observation hooks for the demo and tests.
    """

    def __init__(
        self,
        *,
        mqtt_host: str,
        mqtt_port: int,
        username: str,
        password: str,
        client_id: str,
        store: Store,
        arc: ArcClient | None,
        shared_group: str = "lonewatch-relay",
        tls_ca: str | None = None,
        tls_cert: tuple[str, str] | None = None,
        keepalive_s: int = 30,
        partition: int = 1,
        fmt: str = "ADM-CID",
        dispatch_workers: int = 4,
        on_stored: Callable[[Event, bool], None] | None = None,
        on_result: Callable[[Event, object], None] | None = None,
        reclaim_idle_s: float = 30.0,
        session_expiry_s: int = SESSION_EXPIRY_S,
    ) -> None:
        self.store = store
        self.shared_group = shared_group
        self._host, self._port, self._keepalive = mqtt_host, mqtt_port, keepalive_s
        self._session_expiry_s = session_expiry_s
        # Events before alives (relay.inbox): an alarm never waits behind an alive backlog.
        self._inbox: Inbox[tuple[str, bytes, int, int] | None] = Inbox()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        self.client.username_pw_set(username, password)
        if tls_ca is not None:
            cert, key = tls_cert or (None, None)
            self.client.tls_set(ca_certs=tls_ca or None, certfile=cert, keyfile=key)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        #: ``(up: bool) -> None`` told when the broker granted our subscriptions (True) or the
        #: connection is gone (False): :class:`relay.brokerlink.BrokerLink` (issue 14).
        self.link_hooks: list[Callable[[bool], None]] = []
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.pipeline = Pipeline(store, self.publish_ack, on_stored=on_stored)
        self.dispatcher = Dispatcher(
            store, arc, self.publish_ack, name=client_id, partition=partition, fmt=fmt,
            workers=dispatch_workers, on_result=on_result, reclaim_idle_s=reclaim_idle_s,
        )  # fmt: skip
        #: Name of this instance (health endpoint).
        self.instance = client_id
        #: Further parts started after and stopped before the pipeline and dispatcher, each
        #: with ``start()`` and ``stop()``: supervision sweeper, ARC link tester, health
        #: endpoint (:mod:`relay.app` adds them).
        self.components: list = []
        self.supervisor = None
        self.linktester = None
        self._worker = threading.Thread(target=self._process, name="relay-pipeline", daemon=True)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect (asynchronously, with automatic reconnect) and start processing."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        self.dispatcher.start()
        self._worker.start()
        for part in self.components:
            part.start()
        self.client.connect_async(self._host, self._port, self._keepalive, clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the threads. Unprocessed messages are not acked, so the
        broker delivers them again to this or another instance."""
        self._stop.set()
        for part in reversed(self.components):
            try:
                part.stop()
            except Exception:
                log.exception("could not stop %r", part)
        self._inbox.put(None, urgent=True)
        self.client.disconnect()
        self.client.loop_stop()
        self.dispatcher.stop()
        self._worker.join(5)

    # --- MQTT callbacks (paho network thread) ------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the relay: %s", reason_code)
            return
        sock = client.socket()
        if sock is not None:  # acks are small packets: never hold them back for Nagle (issue 6 bench)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([(shared(f, self.shared_group), 1) for f in RELAY_FILTERS])
        log.info("relay connected to %s:%s (session present: %s)", self._host, self._port, flags.session_present)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        ok = bool(reason_codes) and all(not rc.is_failure for rc in reason_codes)
        if not ok:
            log.error("broker refused the relay's subscriptions: %s", [str(rc) for rc in reason_codes])
        self._tell_link(ok)

    def _tell_link(self, up: bool) -> None:
        for hook in self.link_hooks:
            try:
                hook(up)
            except Exception:
                log.exception("broker link hook failed")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self._tell_link(False)
        if not self._stop.is_set():
            log.warning("relay lost the broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos), urgent=not msg.topic.endswith("/alive"))

    # --- pipeline thread ----------------------------------------------------------------

    #: Most alive messages handled in one Redis round trip.
    ALIVE_BATCH = 256

    def _process(self) -> None:
        pending = None
        while True:
            item = pending if pending is not None else self._inbox.get()
            pending = None
            if item is None:
                return
            if item[0].endswith("/alive"):
                batch = [item]
                while len(batch) < self.ALIVE_BATCH:
                    try:
                        nxt = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None or not nxt[0].endswith("/alive"):
                        pending = nxt  # handled next, in order
                        break
                    batch.append(nxt)
                if len(batch) > 1 and self._process_alives(batch):
                    continue
                if len(batch) > 1:
                    for one in batch:  # the batch hit a data error: one by one
                        self._process_one(one)
                    continue
            self._process_one(item)

    def _process_alives(self, batch: list[tuple[str, bytes, int, int]]) -> bool:
        """Handle a batch of alive messages; True when done (acked), False when the caller
        must handle them one by one (a data error in the batch)."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                self.pipeline.handle_alives([(t, p) for t, p, _, _ in batch])
            except StoreError as exc:
                log.error("redis unavailable, %d alive messages kept unacked: %s", len(batch), exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:
                log.warning("an alive batch failed; handling its %d messages one by one", len(batch), exc_info=True)
                return False
            for _, _, mid, qos in batch:
                if qos > 0:
                    self.client.ack(mid, qos)
            return True
        return True  # stopping: unacked messages come again

    def _process_one(self, item: tuple[str, bytes, int, int]) -> None:
        topic_name, payload, mid, qos = item
        delay = 0.2
        while not self._stop.is_set():
            try:
                self.pipeline.handle(topic_name, payload)
            except StoreError as exc:
                log.error("redis unavailable, message from %s kept unacked: %s", topic_name, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception as exc:  # a bug must not stop the relay: dead-letter, go on
                log.exception("pipeline failed on a message from %s", topic_name)
                try:
                    self.store.dead_letter(topic_name, payload, f"internal error in the relay pipeline: {exc}")
                except StoreError:
                    self._stop.wait(delay)
                    continue
                except Exception:
                    log.exception("could not dead-letter the message from %s either", topic_name)
            if qos > 0:
                self.client.ack(mid, qos)
            return

    def publish_ack(self, device_id: str, ack: Ack) -> None:
        """Send ``ack`` to ``lonewatch/<device_id>/ack`` with QoS 1 (paho queues it while
        the broker is away)."""
        self.client.publish(topic(device_id, "ack"), encode(ack), qos=1)

    def probe_broker(self, timeout_s: float) -> bool:
        """True when the broker PUBACKs a QoS 1 probe within ``timeout_s`` seconds (issue 14:
        a paused broker keeps the TCP link open). The probe goes to the ack topic of a device
        id no device has (``_probe-<instance>``), which the relay's ACL lets it write."""
        try:
            info = self.client.publish(f"lonewatch/_probe-{self.instance}/ack", b"{}", qos=1)
            info.wait_for_publish(timeout_s)
            return info.is_published()
        except (RuntimeError, ValueError):
            return False

    def threads_alive(self) -> bool:
        """True while the pipeline thread and every dispatch worker run (health)."""
        if self._stop.is_set():
            return False
        workers = getattr(self.dispatcher, "_threads", [])
        return self._worker.is_alive() and all(t.is_alive() for t in workers)

    def wait_connected(self, timeout_s: float) -> bool:
        """True once connected and subscribed, within ``timeout_s`` seconds."""
        return self.connected.wait(timeout_s)

