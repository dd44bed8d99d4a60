"""Issue 15 "identity at the broker": a client's id is bound to its credentials by the
shipped Mosquitto configs (``use_username_as_clientid``), for password and certificate
logins. A device logged in with its own credentials that claims the relay's or another
device's client id takes over nothing: the relay stays connected (its session survives and it
still takes alarms), the other device stays connected.

Real Mosquitto with the project's configs (labstack.servers); real relay (tests/relayrig.py).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from installer import pki
from labstack.servers import BrokerTls, Mosquitto
from relay.brokeracl import acl_relay_accounts, ensure_relay_account, is_relay_account, relay_account, render_acl

from .mqtt_probe import Probe
from .relayrig import ScriptedDevice, register, relay_dict, running_relay

pytestmark = pytest.mark.integration

A, B = "lw-0001", "lw-0002"


def _taken_over(broker, client_id: str) -> bool:
    """Whether the broker's log shows a session takeover of ``client_id``."""
    return f"Client {client_id} already connected, closing old connection" in (broker.workdir / "mosquitto.log").read_text()


def _attack_ids(relay_instance: str) -> list[str]:
    # The relay's configured client id, its broker account, and the bare "relay" account.
    return [f"lonewatch-relay-{relay_instance}", f"relay-{relay_instance}", "relay"]


def test_device_cannot_take_over_the_relays_session(mosquitto, broker_users, redis_server, wait_until):
    register(redis_server.url, (A, 1), (B, 2))
    with running_relay(relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, None)) as relay:
        b = ScriptedDevice(B, mosquitto.port, broker_users[B])
        attackers = []
        try:
            for cid in _attack_ids("t1"):
                p = Probe(mosquitto.port, A, broker_users[A], host="127.0.0.1", client_id=cid)
                assert p.connect() == "Success"
                attackers.append(p)
            # The relay was never disconnected and still takes B's alarm, end to end.
            ev = b.event("panic")
            assert b.wait_ack(ev.id, "received")
            assert relay.connected.is_set()
            assert not _taken_over(mosquitto, "relay-t1") and not _taken_over(mosquitto, B)
        finally:
            for p in attackers:
                p.close()
            b.close()


def test_device_cannot_take_over_another_devices_session(mosquitto, broker_users):
    b = Probe(mosquitto.port, B, broker_users[B], host="127.0.0.1", client_id=B)
    a = Probe(mosquitto.port, A, broker_users[A], host="127.0.0.1", client_id=B)
    try:
        assert b.connect() == "Success"
        b.subscribe(f"lonewatch/{B}/ack")
        assert a.connect() == "Success"
        # B is still connected: its own publish is still acked by the broker, and the broker
        # saw no session takeover.
        assert str(b.publish(f"lonewatch/{B}/alive", b"{}")) in ("Success", "No matching subscribers")
        assert b.disconnects == []
        assert not _taken_over(mosquitto, B)
    finally:
        a.close()
        b.close()


def test_same_account_twice_is_one_session(mosquitto, broker_users, wait_until):
    """The binding really is by user name: a second login with B's own credentials (any
    claimed id) replaces B's first connection — only B's credentials can do that."""
    first = Probe(mosquitto.port, B, broker_users[B], host="127.0.0.1", client_id="one")
    second = Probe(mosquitto.port, B, broker_users[B], host="127.0.0.1", client_id="two")
    try:
        assert first.connect() == "Success" and second.connect() == "Success"
        assert wait_until(lambda: first.disconnects != [])
    finally:
        first.close()
        second.close()


# --------------------------------------------------------------------------- certificates


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    pki.init_ca(root / "ca")
    server = pki.issue_server(root / "ca", root / "server", ["localhost", "127.0.0.1"])
    out = {"ca": server.ca, "server_cert": server.cert, "server_key": server.key}
    for name in (A, B, "relay-c1"):
        c = pki.issue_client(root / "ca", root / name, name)
        out[f"{name}_cert"], out[f"{name}_key"] = c.cert, c.key
    return out


@pytest.fixture
def cert_broker(ca):
    server = Mosquitto(users={"relay-c1": secrets.token_urlsafe(12)},
                       tls=BrokerTls(ca["ca"], ca["server_cert"], ca["server_key"], auth="certificate")).start()
    yield server
    server.cleanup()


def _cert(broker, ca, who: str, client_id: str) -> Probe:
    return Probe(broker.port, None, ca=ca["ca"], cert=ca[f"{who}_cert"], key=ca[f"{who}_key"], client_id=client_id)


def test_certificate_login_cannot_take_over_the_relay_or_another_device(cert_broker, ca):
    relay = _cert(cert_broker, ca, "relay-c1", "relay-c1")
    b = _cert(cert_broker, ca, B, B)
    attackers = [_cert(cert_broker, ca, A, cid) for cid in ("relay-c1", "lonewatch-relay-c1", B)]
    try:
        assert relay.connect() == "Success" and b.connect() == "Success"
        relay.subscribe("lonewatch/+/event")
        for p in attackers:
            assert p.connect() == "Success"
        b.publish(f"lonewatch/{B}/event", b"still here")
        assert relay.wait_message(f"lonewatch/{B}/event") == b"still here"
        assert relay.disconnects == [] and b.disconnects == []
        assert not _taken_over(cert_broker, "relay-c1") and not _taken_over(cert_broker, B)
    finally:
        for p in (*attackers, relay, b):
            p.close()


# --------------------------------------------------------------------------- ACL rendering


def test_acl_has_one_relay_block_per_account(tmp_path):
    text = render_acl(["relay-b", "relay-a"])
    assert acl_relay_accounts(text) == ["relay-a", "relay-b"]
    assert "user relay\n" not in text
    assert text.count("topic write lonewatch/+/ack") == 2 and text.count("pattern write lonewatch/%u/event") == 1
    path = tmp_path / "acl"
    path.write_text(text)
    assert ensure_relay_account(path, "relay-c").startswith("added")
    assert ensure_relay_account(path, "relay-c") == ""
    assert acl_relay_accounts(path.read_text()) == ["relay-a", "relay-b", "relay-c"]


@pytest.mark.parametrize("name", ["lw-0001", "relayx", "relay-", "admin", "relay-a/b"])
def test_acl_refuses_names_that_are_not_relay_accounts(name):
    assert not is_relay_account(name)
    with pytest.raises(ValueError):
        render_acl([name])


def test_relay_account_of_an_instance():
    assert relay_account("lab") == "relay-lab" and is_relay_account("relay")
