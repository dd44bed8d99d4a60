"""A loopback TCP proxy for benchmarks and fault injection.

* **Counting**: bytes per direction, and per connection a :class:`Meter` fed with the raw
  stream (:class:`MqttMeter` splits MQTT packets by type and PUBLISH channel,
  :class:`TlsMeter` splits TLS records) — what crosses the socket, TLS included.
* **Partition without FIN** (:meth:`TcpProxy.partition` / :meth:`TcpProxy.heal`): the proxy
  stops reading and forwarding in both directions and holds back any close. Neither end gets
  a FIN or RST; their data piles up in kernel buffers exactly as behind a dead link, and new
  connections are accepted by the kernel but never reach the far side. On heal the held
  stream continues intact (TCP would have retransmitted it), and closes made meanwhile are
  passed on. The ends detect the partition only by their own timeouts (MQTT keepalive).
* **Hook** (``on_chunk``): called with ``(direction, data)`` before forwarding; used to kill a
  process at an exact point of an exchange (e.g. the moment the ARC's ACK is on its way).

``direction`` is ``"up"`` (client → upstream) or ``"down"`` (upstream → client).
Loopback only: the proxy listens on 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

MQTT_TYPES: Final = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP",
    8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
    14: "DISCONNECT", 15: "AUTH",
}
TLS_TYPES: Final = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}


class Meter:
    """Consumes one direction of one connection; subclasses classify what they see."""

    def __init__(self) -> None:
        self.bytes = 0
        #: label → [count, bytes]
        self.kinds: dict[str, list[int]] = {}
        #: (monotonic time, label, size) of every unit seen, in order
        self.log: list[tuple[float, str, int]] = []

    def feed(self, data: bytes) -> None:
        """Account for ``data`` (the next bytes of the stream)."""
        self.bytes += len(data)

    def _unit(self, label: str, size: int) -> None:
        c = self.kinds.setdefault(label, [0, 0])
        c[0] += 1
        c[1] += size
        self.log.append((time.monotonic(), label, size))


class MqttMeter(Meter):
    """Splits an MQTT stream into packets: label ``"PINGREQ"``, ``"PUBLISH alive"`` (PUBLISH
    with the last topic level), … ; size = whole packet (fixed header included)."""

    def __init__(self) -> None:
        super().__init__()
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        super().feed(data)
        self._buf += data
        while True:
            n = _mqtt_packet_length(self._buf)
            if n is None or n > len(self._buf):
                return
            packet = bytes(self._buf[:n])
            del self._buf[:n]
            ptype = packet[0] >> 4
            label = MQTT_TYPES.get(ptype, f"type{ptype}")
            if ptype == 3:
                label += " " + _publish_channel(packet)
            self._unit(label, n)


def _mqtt_packet_length(buf: bytearray) -> int | None:
    """Total length of the packet at the start of ``buf``, None until the header is complete."""
    mult, value = 1, 0
    for i in range(1, 5):
        if i >= len(buf):
            return None
        byte = buf[i]
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            return 1 + i + value
        mult *= 128
    raise ValueError("malformed MQTT remaining length")


def _publish_channel(packet: bytes) -> str:
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 1
    (tlen,) = struct.unpack_from("!H", packet, i)
    topic = packet[i + 2 : i + 2 + tlen].decode("utf-8", "replace")
    return topic.rsplit("/", 1)[-1]


class TlsMeter(Meter):
    """Splits a TLS stream into records: label = record content type
    (``handshake``, ``application_data`` …); size = record incl. its 5-byte header."""

    def __init__(self) -> None:
        super().__init__()
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        super().feed(data)
        self._buf += data
        while len(self._buf) >= 5:
            n = 5 + struct.unpack_from("!H", self._buf, 3)[0]
            if n > len(self._buf):
                return
            rtype = self._buf[0]
            del self._buf[:n]
            self._unit(TLS_TYPES.get(rtype, f"type{rtype}"), n)


class _Conn:
    def __init__(self, client: socket.socket, meter_factory: Callable[[], Meter] | None) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.meters = {d: meter_factory() for d in ("up", "down")} if meter_factory else {}
        self.opened_at = time.monotonic()
        self.closed = False


class TcpProxy:
    """Forward 127.0.0.1:``port`` → ``upstream``.

    Args:
        upstream: ``(host, port)`` to connect to for each accepted connection.
        meter_factory: e.g. :class:`MqttMeter`; one meter per connection and direction.
        on_chunk: ``(direction, data) -> None`` called before each chunk is forwarded
            (it may block, kill a process, or call :meth:`partition`).
        port: listening port, 0 = any free one.
    """

    def __init__(self, upstream: tuple[str, int], *, meter_factory: Callable[[], Meter] | None = None,
                 on_chunk: Callable[[str, bytes], None] | None = None, port: int = 0) -> None:
        self.upstream = upstream
        self.meter_factory = meter_factory
        self.on_chunk = on_chunk
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(256)
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.connections: list[_Conn] = []
        self.totals: Counter[str] = Counter()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> "TcpProxy":
        """Start accepting in a background thread."""
        threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection (abortively)."""
        self._stopped.set()
        self._open.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self.drop_all()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults ---------------------------------------------------------------------------

    def partition(self) -> None:
        """Stop forwarding in both directions without closing anything (no FIN, no RST)."""
        self._open.clear()

    def heal(self) -> None:
        """Forward again; held data and closes go through in order."""
        self._open.set()

    @property
    def partitioned(self) -> bool:
        return not self._open.is_set()

    def drop_all(self) -> None:
        """Reset every open connection now (RST to both ends)."""
        with self._lock:
            conns = list(self.connections)
        for c in conns:
            self._abort(c)

    # --- accounting -----------------------------------------------------------------------

    def meters(self, direction: str) -> list[Meter]:
        """The meters of every connection so far for ``direction`` (``up``/``down``)."""
        with self._lock:
            return [c.meters[direction] for c in self.connections if c.meters]

    def kinds(self, direction: str) -> dict[str, list[int]]:
        """label → [count, bytes] summed over all connections for ``direction``."""
        out: dict[str, list[int]] = {}
        for m in self.meters(direction):
            for label, (n, b) in m.kinds.items():
                c = out.setdefault(label, [0, 0])
                c[0] += n
                c[1] += b
        return out

    # --- internals ------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            conn = _Conn(client, self.meter_factory)
            with self._lock:
                self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: _Conn) -> None:
        self._open.wait()  # a partition also stops new connections from reaching upstream
        if self._stopped.is_set():
            self._abort(conn)
            return
        try:
            conn.upstream = socket.create_connection(self.upstream, timeout=5)
            conn.upstream.settimeout(None)
        except OSError:
            self._abort(conn)
            return
        for sock in (conn.client, conn.upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = [threading.Event(), threading.Event()]
        threading.Thread(target=self._pump, args=(conn, conn.client, conn.upstream, "up", done, 0), daemon=True).start()
        threading.Thread(target=self._pump, args=(conn, conn.upstream, conn.client, "down", done, 1), daemon=True).start()

    def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket, direction: str,
              done: list[threading.Event], me: int) -> None:
        try:
            while True:
                self._open.wait()
                data = src.recv(65536)
                self._open.wait()  # partitioned while we were reading: hold the chunk
                if self._stopped.is_set():
                    break
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    break
                if self.on_chunk is not None:
                    self.on_chunk(direction, data)
                with self._lock:
                    self.totals[direction] += len(data)
                    if conn.meters:
                        conn.meters[direction].feed(data)
                dst.sendall(data)
        except OSError:
            self._abort(conn)
        finally:
            done[me].set()
            if done[1 - me].is_set() and not conn.closed:
                for sock in (conn.client, conn.upstream):
                    try:
                        sock.close()  # type: ignore[union-attr]
                    except OSError:
                        pass
                conn.closed = True

    def _abort(self, conn: _Conn) -> None:
        for sock in (conn.client, conn.upstream):
            if sock is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            except OSError:
                pass
        conn.closed = True
