"""Issue 15 "revocation": ``lonewatch pki revoke DEVICE`` writes a CRL the broker config uses
(``crlfile``) and makes the broker load it; the revoked device cannot connect, the others can.
Real Mosquitto in certificate mode with the production config."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from installer import pki
from installer.revoke import CRL, revoke, write_crl
from labstack.servers import BrokerTls, Mosquitto

from .mqtt_probe import Probe

pytestmark = pytest.mark.integration

A, B = "lw-0001", "lw-0002"


def _probe(broker: Mosquitto, issued) -> Probe:
    return Probe(broker.port, None, ca=issued.ca, cert=issued.cert, key=issued.key)


def _connects(broker: Mosquitto, issued) -> bool:
    p = _probe(broker, issued)
    try:
        return p.connect() == "Success"
    finally:
        p.close()


def test_a_revoked_device_cannot_connect(tmp_path: Path):
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    server = pki.issue_server(ca, tmp_path / "server", ["localhost", "127.0.0.1"])
    a = pki.issue_client(ca, tmp_path / A, A)
    b = pki.issue_client(ca, tmp_path / B, B)
    broker = Mosquitto(users={"relay": secrets.token_urlsafe(8)},
                       tls=BrokerTls(server.ca, server.cert, server.key, auth="certificate"))
    broker._prepare_workdir("mosquitto")
    write_crl(ca, broker.workdir / CRL)  # an empty CRL from the start: the config names it
    broker.start()
    try:
        assert "crlfile" in (broker.workdir / "mosquitto.conf").read_text()
        assert _connects(broker, a) and _connects(broker, b)
        serials, note = revoke(ca, A, broker_dir=broker.workdir, reload=lambda: (broker.restart(), "restarted")[1])
        assert serials and note == "restarted"
        assert not _connects(broker, a)
        assert _connects(broker, b)
    finally:
        broker.cleanup()


def test_cli_revoke_and_unknown_device(tmp_path: Path):
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    pki.issue_client(ca, tmp_path / A, A)
    r = CliRunner().invoke(main, ["pki", "revoke", A, "--dir", str(ca), "--broker-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / CRL).exists() and "revoked" in r.output
    r = CliRunner().invoke(main, ["pki", "revoke", "lw-9999", "--dir", str(ca)])
    assert r.exit_code != 0 and "issued no certificate" in r.output
