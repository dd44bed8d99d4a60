"""The device's MQTT link to the relay (SPEC §2 "MQTT").

paho-mqtt 2.x with VERSION2 callbacks, MQTT v5, ``connect_async`` + automatic reconnect,
persistent session (so acks published while the device was away are still delivered), QoS 1,
Last Will = retained ``offline`` status, retained ``online`` published on every connect, and
a subscription to the device's own ``ack`` topic.

The link never decides what is delivered: the durable queue does. A publish while the
broker is away simply fails (returns False) and the queue resends later.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.errors import ValidationError
from protocol.messages import Ack, Status, decode_for_topic, encode
from protocol.topics import topic

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600


class MqttLink:
    """MQTT connection of one device.

    Args:
        device_id: the device id (also its broker username by default).
        host, port, username, password: the broker and credentials (password never logged).
        tls_ca: CA file for TLS, ``""`` = system CAs, ``None`` = plain TCP (tests/demo only).
        tls_cert: ``(cert_file, key_file)`` for client-certificate login, or None.
        keepalive_s: MQTT keepalive, seconds.
        on_ack: ``(Ack) -> None`` for every valid ack from the relay (paho's thread).
        on_connection: optional ``(connected: bool) -> None``.
    """

    def __init__(
        self,
        device_id: str,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        tls_ca: str | None,
        tls_cert: tuple[str, str] | None = None,
        keepalive_s: int,
        on_ack: Callable[[Ack], None],
        on_connection: Callable[[bool], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.on_ack, self.on_connection = on_ack, on_connection
        self._host, self._port, self._keepalive = host, port, keepalive_s
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        if tls_ca is not None:
            cert, key = tls_cert or (None, None)
            self.client.tls_set(ca_certs=tls_ca or None, certfile=cert, keyfile=key)
        offline = encode(Status(device=device_id, state="offline", ts=time.time()))
        self.client.will_set(topic(device_id, "status"), offline, qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after any loss."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(self._host, self._port, self._keepalive, clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        """Publish retained ``offline`` (a clean stop is not a lost device) and disconnect."""
        if self.connected.is_set():
            info = self.client.publish(
                topic(self.device_id, "status"), encode(Status(self.device_id, "offline", time.time())), qos=1, retain=True
            )
            info.wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def loop_alive(self) -> bool:
        """Whether paho's network thread (``loop_start``) is running — connected or not; the
        service watchdog pings only while it is (:meth:`device.daemon.DeviceDaemon.health`)."""
        thread = getattr(self.client, "_thread", None)  # paho keeps no public handle
        return thread is not None and thread.is_alive()

    def publish(self, channel: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish to this device's ``channel`` with QoS 1.

        Returns:
            True if handed to an open connection; False when disconnected (the caller keeps
            the message and tries again — an event stays in the queue until ``received``).
        """
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic(self.device_id, channel), payload, qos=1, retain=retain)  # type: ignore[arg-type]
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    # --- paho callbacks ----------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        sock = client.socket()
        if sock is not None:  # an alarm is one small packet: never hold it back for Nagle (issue 6 bench)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(topic(self.device_id, "ack"), qos=1)
        client.publish(topic(self.device_id, "status"), encode(Status(self.device_id, "online", time.time())), qos=1, retain=True)
        self.connected.set()
        log.info("connected to broker %s:%s", self._host, self._port)
        if self.on_connection:
            self.on_connection(True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was:
            log.warning("lost the broker (%s); reconnecting", reason_code)
            if self.on_connection:
                self.on_connection(False)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            ack = decode_for_topic(msg.topic, msg.payload)
        except ValidationError as exc:
            log.warning("ignored a bad message on %s: %s", msg.topic, exc)
            return
        if isinstance(ack, Ack):
            self.on_ack(ack)
