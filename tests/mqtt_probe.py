"""A small MQTT v5 test client (paho) for the broker-security and installer tests: connect
with a password or a client certificate over TLS, collect messages, publish with QoS 1 and
see the broker's PUBACK reason code."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt


class Probe:
    """One connection. ``ca`` None = plain TCP; ``ca`` "" = the system CA store."""

    def __init__(self, port: int, user: str | None, password: str | None = None, *,
                 ca: Path | str | None = None, cert: Path | None = None, key: Path | None = None,
                 host: str = "localhost", client_id: str | None = None) -> None:
        self.host, self.port = host, port
        self.disconnects: list[object] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"probe-{uuid.uuid4().hex[:10]}",
                                  protocol=mqtt.MQTTv5)
        if user is not None:
            self.client.username_pw_set(user, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca) or None, certfile=cert and str(cert), keyfile=key and str(key))
        self.messages: list[tuple[str, bytes]] = []
        self.connack: mqtt.ReasonCode | None = None
        self.pubacks: dict[int, object] = {}
        self.suback: list | None = None
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect

    # --- callbacks
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self.connack = reason_code
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self.disconnects.append(reason_code)
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self.pubacks[mid] = reason_code
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self.suback = list(reason_codes)
            self._cond.notify_all()

    # --- actions
    def connect(self, timeout_s: float = 5.0) -> str:
        """Connect and wait for CONNACK. Returns ``"Success"``, the broker's refusal reason,
        or ``"error: …"`` when the TCP/TLS layer failed (e.g. certificate rejected)."""
        try:
            self.client.connect(self.host, self.port, keepalive=10)
        except (OSError, ssl.SSLError) as exc:
            return f"error: {exc}"
        self.client.loop_start()
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.connack is None and time.monotonic() < deadline:
                if not self._cond.wait(0.05) and not self.client.is_connected() and self._tcp_closed():
                    break
        return str(self.connack) if self.connack is not None else "error: no CONNACK"

    def _tcp_closed(self) -> bool:
        sock = self.client.socket()
        return sock is None

    def subscribe(self, *filters: str, timeout_s: float = 5.0) -> list:
        self.suback = None
        self.client.subscribe([(f, 1) for f in filters])
        with self._cond:
            self._cond.wait_for(lambda: self.suback is not None, timeout_s)
        return self.suback or []

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, timeout_s: float = 5.0) -> object:
        """Publish with QoS 1 and return the PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._cond:
            self._cond.wait_for(lambda: info.mid in self.pubacks, timeout_s)
            return self.pubacks.get(info.mid)

    def wait_message(self, topic: str, timeout_s: float = 5.0) -> bytes | None:
        """The first message received on ``topic`` (exact name), waiting up to ``timeout_s``."""
        def found():
            return next((p for t, p in self.messages if t == topic), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout_s)
            return found()

    def topics(self) -> list[str]:
        with self._cond:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
