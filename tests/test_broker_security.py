"""Broker security on a real Mosquitto started with the production config
(``relay/conf/mosquitto-tls.conf`` + ``relay/conf/acl``), TLS with the project's CA.

Negative results ("B never sees it") are proven without sleeping: after the forbidden
publish the same client publishes something allowed to the same observer; MQTT keeps one
client's messages in order, so once the marker arrived the forbidden message would have too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from pathlib import Path

import pytest

from protocol.messages import Event, decode, encode
from installer import pki
from labstack.servers import BrokerTls, Mosquitto, render_tls_conf
from relay.store import DeviceEntry, Store

from .mqtt_probe import Probe

pytestmark = pytest.mark.integration

A, B = "lw-0001", "lw-0002"


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    pki.init_ca(root / "ca")
    server = pki.issue_server(root / "ca", root / "server", ["localhost", "127.0.0.1"])
    a = pki.issue_client(root / "ca", root / A, A)
    b = pki.issue_client(root / "ca", root / B, B)
    relay = pki.issue_client(root / "ca", root / "relay", "relay")
    pki.init_ca(root / "rogue")  # a CA the broker does not trust
    rogue = pki.issue_client(root / "rogue", root / "rogue-client", A)
    return {"ca": server.ca, "server_cert": server.cert, "server_key": server.key,
            "a_cert": a.cert, "a_key": a.key, "b_cert": b.cert, "b_key": b.key,
            "relay_cert": relay.cert, "relay_key": relay.key,
            "rogue_cert": rogue.cert, "rogue_key": rogue.key}  # fmt: skip


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    return {"relay": secrets.token_urlsafe(12), A: secrets.token_urlsafe(12), B: secrets.token_urlsafe(12)}


@pytest.fixture(scope="module")
def tls_broker(ca, users):
    server = Mosquitto(users=users, tls=BrokerTls(ca["ca"], ca["server_cert"], ca["server_key"])).start()
    yield server
    server.cleanup()


@pytest.fixture
def probes(tls_broker, ca, users):
    made: list[Probe] = []

    def connect(user: str, password: str | None = None) -> Probe:
        p = Probe(tls_broker.port, user, users[user] if password is None else password, ca=ca["ca"])
        assert p.connect() == "Success", f"{user} could not log in"
        made.append(p)
        return p

    yield connect
    for p in made:
        p.close()


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("user,password", [
    (A, "wrong-password"),
    (A, ""),
    ("lw-9999", "anything"),     # no such account
    ("relay", "wrong-password"),
])  # fmt: skip
def test_wrong_credentials_are_refused(tls_broker, ca, user, password):
    p = Probe(tls_broker.port, user, password, ca=ca["ca"])
    try:
        assert p.connect() in ("Not authorized", "Bad user name or password")
    finally:
        p.close()


def test_anonymous_client_is_refused(tls_broker, ca):
    p = Probe(tls_broker.port, None, ca=ca["ca"])
    try:
        assert p.connect() in ("Not authorized", "Bad user name or password")
    finally:
        p.close()


def test_right_password_is_accepted(tls_broker, ca, users):
    p = Probe(tls_broker.port, A, users[A], ca=ca["ca"])
    try:
        assert p.connect() == "Success"
    finally:
        p.close()


def test_client_that_does_not_trust_the_project_ca_cannot_connect(tls_broker, users):
    """Devices pin the project CA; the system store does not know it, so a man in the middle
    with any public certificate is no better than this broker is to a stranger."""
    p = Probe(tls_broker.port, A, users[A], ca="")
    try:
        result = p.connect()
        assert result.startswith("error:") and "certificate verify failed" in result
    finally:
        p.close()


# --------------------------------------------------------------------------- ACL


def test_device_cannot_publish_as_another_device(probes):
    relay, a = probes("relay"), probes(A)
    relay.subscribe("lonewatch/+/event", "lonewatch/+/alive", "lonewatch/+/status")
    for channel in ("event", "alive", "status"):
        a.publish(f"lonewatch/{B}/{channel}", b'{"forged": true}')
    assert a.publish(f"lonewatch/{A}/alive", b"marker") is not None
    assert relay.wait_message(f"lonewatch/{A}/alive") == b"marker"
    assert not [t for t in relay.topics() if f"/{B}/" in t]


def test_forbidden_publish_gets_not_authorized_puback(probes):
    a = probes(A)
    assert str(a.publish(f"lonewatch/{B}/event", b"{}")) == "Not authorized"
    assert str(a.publish(f"lonewatch/{A}/event", b"{}")) in ("Success", "No matching subscribers")


def test_device_cannot_read_another_devices_acks(probes):
    relay, a, b = probes("relay"), probes(A), probes(B)
    a.subscribe(f"lonewatch/{B}/ack", "lonewatch/+/ack", "#")
    b.subscribe(f"lonewatch/{B}/ack")
    relay.publish(f"lonewatch/{B}/ack", b"for B")
    relay.publish(f"lonewatch/{A}/ack", b"for A")
    assert a.wait_message(f"lonewatch/{A}/ack") == b"for A"
    assert b.wait_message(f"lonewatch/{B}/ack") == b"for B"
    assert f"lonewatch/{B}/ack" not in a.topics()


def test_device_cannot_forge_acks(probes):
    """A forged ``received`` ack would make a device drop an alarm from its queue: only the
    relay may write ack topics — not another device, not the device itself."""
    relay, a, b = probes("relay"), probes(A), probes(B)
    b.subscribe(f"lonewatch/{B}/ack")
    a.subscribe(f"lonewatch/{A}/ack")
    a.publish(f"lonewatch/{B}/ack", b"forged by A")
    a.publish(f"lonewatch/{A}/ack", b"A to itself")
    relay.publish(f"lonewatch/{A}/ack", b"marker")
    relay.publish(f"lonewatch/{B}/ack", b"marker")
    assert a.wait_message(f"lonewatch/{A}/ack") == b"marker"
    assert b.wait_message(f"lonewatch/{B}/ack") == b"marker"
    assert [p for _, p in b.messages] == [b"marker"]
    assert [p for _, p in a.messages] == [b"marker"]


def test_device_cannot_read_other_devices_events(probes):
    a, b = probes(A), probes(B)
    a.subscribe("lonewatch/+/event")
    b.publish(f"lonewatch/{B}/event", b"private")
    a.subscribe(f"lonewatch/{A}/ack")  # round trip to the broker after B's publish
    relay = probes("relay")
    relay.publish(f"lonewatch/{A}/ack", b"marker")
    assert a.wait_message(f"lonewatch/{A}/ack") == b"marker"
    assert f"lonewatch/{B}/event" not in a.topics()


# --------------------------------------------------------------------------- no plain text


def _listening_ports(pid: int) -> set[int]:
    """TCP ports the process ``pid`` listens on, from /proc (no external tool)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def test_production_broker_listens_on_the_tls_port_only(tls_broker):
    assert _listening_ports(tls_broker.proc.pid) == {tls_broker.port}


def test_production_config_has_one_listener_and_it_is_tls():
    conf = render_tls_conf(directory=Path("/etc/mosquitto/lonewatch"))
    lines = [ln.split() for ln in conf.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    listeners = [i for i, ln in enumerate(lines) if ln[0] == "listener"]
    assert len(listeners) == 1 and lines[listeners[0]][1] == "8883"
    keys = {ln[0] for ln in lines[listeners[0]:]}
    assert {"cafile", "certfile", "keyfile"} <= keys
    assert ["allow_anonymous", "false"] in lines
    assert not any(ln[0] in ("port", "bind_address") for ln in lines)  # legacy default listener


def test_plain_mqtt_to_the_tls_port_gets_no_connack(tls_broker):
    # A hand-written MQTT 3.1.1 CONNECT: a TLS listener never answers it with a CONNACK.
    connect = bytes([0x10, 0x10, 0x00, 0x04]) + b"MQTT" + bytes([0x04, 0x02, 0x00, 0x3C, 0x00, 0x04]) + b"lw-1"
    with socket.create_connection(("127.0.0.1", tls_broker.port), timeout=3) as s:
        s.sendall(connect)
        s.settimeout(3)
        try:
            reply = s.recv(16)
        except (ConnectionResetError, socket.timeout):
            reply = b""
    assert not reply.startswith(b"\x20")  # 0x20 = CONNACK


# --------------------------------------------------------------------------- certificates


@pytest.fixture(scope="module")
def cert_broker(ca, users):
    server = Mosquitto(users={"relay": users["relay"]},
                       tls=BrokerTls(ca["ca"], ca["server_cert"], ca["server_key"], auth="certificate")).start()
    yield server
    server.cleanup()


def _cert_probe(broker, ca, who: str, *, rogue: bool = False, user: str | None = None) -> Probe:
    prefix = "rogue" if rogue else who
    return Probe(broker.port, user, ca=ca["ca"], cert=ca[f"{prefix}_cert"], key=ca[f"{prefix}_key"])


def test_certificate_from_the_project_ca_logs_in_as_its_cn(cert_broker, ca):
    a, relay = _cert_probe(cert_broker, ca, "a"), _cert_probe(cert_broker, ca, "relay")
    try:
        assert a.connect() == "Success" and relay.connect() == "Success"
        relay.subscribe("lonewatch/+/event")
        a.publish(f"lonewatch/{B}/event", b"forged")
        a.publish(f"lonewatch/{A}/event", b"mine")
        assert relay.wait_message(f"lonewatch/{A}/event") == b"mine"
        assert relay.topics() == [f"lonewatch/{A}/event"]
    finally:
        a.close()
        relay.close()


def test_certificate_mode_refuses_clients_without_a_certificate(cert_broker, ca, users):
    p = Probe(cert_broker.port, A, users[A], ca=ca["ca"])
    try:
        assert p.connect() != "Success"
    finally:
        p.close()


def test_certificate_from_another_ca_is_refused(cert_broker, ca):
    p = _cert_probe(cert_broker, ca, "a", rogue=True)
    try:
        assert p.connect() != "Success"
    finally:
        p.close()


def test_certificate_cn_wins_over_a_claimed_user_name(cert_broker, ca):
    """A device with A's certificate that claims to be B is still A."""
    relay = _cert_probe(cert_broker, ca, "relay")
    a = _cert_probe(cert_broker, ca, "a", user=B)
    try:
        assert relay.connect() == "Success" and a.connect() == "Success"
        relay.subscribe("lonewatch/+/alive")
        a.publish(f"lonewatch/{B}/alive", b"as B")
        a.publish(f"lonewatch/{A}/alive", b"as A")
        assert relay.wait_message(f"lonewatch/{A}/alive") == b"as A"
        assert relay.topics() == [f"lonewatch/{A}/alive"]
    finally:
        a.close()
        relay.close()


# --------------------------------------------------------------------------- relay over TLS


def test_relay_dead_letters_a_payload_whose_device_differs_from_its_topic(tls_broker, ca, users, redis_server, probes, wait_until):
    from relay.service import RelayService

    store = Store.from_url(redis_server.url)
    for dev, zone in ((A, 1), (B, 2)):
        store.register(DeviceEntry(dev, "1234", zone, f"worker {zone}", "site"))
    service = RelayService(mqtt_host="localhost", mqtt_port=tls_broker.port, username="relay", password=users["relay"],
                           client_id="relay-test", store=store, arc=None, tls_ca=str(ca["ca"]))  # fmt: skip
    service.start()
    try:
        assert service.wait_connected(10)
        a, b = probes(A), probes(B)
        a.subscribe(f"lonewatch/{A}/ack")
        b.subscribe(f"lonewatch/{B}/ack")
        forged = encode(Event(device=B, seq=7, kind="panic", ts=time.time()))
        a.publish(f"lonewatch/{A}/event", forged)
        assert wait_until(lambda: store.dead_letters())
        letter = store.dead_letters()[-1]
        assert letter["topic"] == f"lonewatch/{A}/event"
        assert "differs from topic device" in letter["reason"]
        assert store.event(f"{B}:7") is None

        real = Event(device=A, seq=8, kind="panic", ts=time.time())
        a.publish(f"lonewatch/{A}/event", encode(real))
        ack = a.wait_message(f"lonewatch/{A}/ack", timeout_s=10)
        assert ack is not None and decode(ack).id == real.id and json.loads(ack)["stage"] == "received"
        assert store.event(real.id) is not None
        # The forged event produced no ack at all, neither for A nor for B.
        assert [decode(p).id for _, p in a.messages] == [real.id]
        assert b.messages == []
    finally:
        service.stop()


def test_device_link_logs_in_with_its_client_certificate(cert_broker, ca, wait_until):
    # The device's own MQTT link (not a probe) with [mqtt] cert_file/key_file from device.toml.
    from device.link import MqttLink

    link = MqttLink(A, host="localhost", port=cert_broker.port, username=A, password="", tls_ca=str(ca["ca"]),
                    tls_cert=(str(ca["a_cert"]), str(ca["a_key"])), keepalive_s=30, on_ack=lambda ack: None)  # fmt: skip
    link.start()
    try:
        assert wait_until(link.connected.is_set, 10)
    finally:
        link.stop()
