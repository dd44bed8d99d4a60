"""``lonewatch pki`` and ``lonewatch provision`` against a real Mosquitto (production TLS
config) and a real Redis: the credentials provision writes must let the device in, and
nothing else."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from installer import pki
from cli.main import main
from labstack.servers import BrokerTls, Mosquitto
from installer.provision import DEVICE_PATTERNS, ProvisionError, ProvisionRequest, ensure_acl, provision
from relay.store import Store

from .mqtt_probe import Probe

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki") / "ca"
    pki.init_ca(d)
    return d


@pytest.fixture
def broker(ca_dir, tmp_path):
    """A TLS broker whose directory provision edits (passwd, acl) and reloads (pid file)."""
    server = pki.issue_server(ca_dir, tmp_path / "server", ["localhost", "127.0.0.1"])
    m = Mosquitto(users={"relay": "relay-pw"}, tls=BrokerTls(server.ca, server.cert, server.key)).start()
    yield m
    m.cleanup()


def _request(broker, tmp_path, redis_url=None, **kw) -> ProvisionRequest:
    fields = dict(device_id="lw-0042", worker="Anna Hansen", site="Vestergade 12", broker_dir=broker.workdir,
                  out_dir=tmp_path / "lw-0042", broker_host="localhost", broker_port=broker.port,
                  account="1234AB", zone=42, redis_url=redis_url, device_dir=str(tmp_path / "lw-0042"),
                  state_dir=str(tmp_path / "lw-0042" / "state"))  # fmt: skip
    fields.update(kw)
    return ProvisionRequest(**fields)


def _login(broker, out: Path) -> str:
    cfg = tomllib.loads((out / "device.toml").read_text())
    p = Probe(broker.port, cfg["mqtt"]["username"], cfg["mqtt"]["password"], ca=out / "ca.crt")
    try:
        return p.connect()
    finally:
        p.close()


# --------------------------------------------------------------------------- pki


def test_pki_cli_creates_ca_and_certificates_with_private_keys_0600(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["pki", "init", "--dir", str(tmp_path / "ca")])
    assert r.exit_code == 0 and "created CA" in r.output
    r = runner.invoke(main, ["pki", "init", "--dir", str(tmp_path / "ca")])
    assert r.exit_code == 0 and "kept existing CA" in r.output
    r = runner.invoke(main, ["pki", "issue-server", "--dir", str(tmp_path / "ca"), "--host", "mqtt.example.com",
                             "--host", "203.0.113.7", "--out", str(tmp_path / "srv")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["pki", "issue-client", "lw-0001", "--dir", str(tmp_path / "ca"), "--out", str(tmp_path / "cl")])
    assert r.exit_code == 0, r.output
    for key in (tmp_path / "ca" / "ca.key", tmp_path / "srv" / "server.key", tmp_path / "cl" / "client.key"):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    server = pki.cert_info(tmp_path / "srv" / "server.crt")
    assert server.san == ("mqtt.example.com", "203.0.113.7") and server.issuer_cn == "lonewatch CA"
    assert pki.cert_info(tmp_path / "cl" / "client.crt").subject_cn == "lw-0001"
    assert pki.cert_info(tmp_path / "ca" / "ca.crt").is_ca


def test_pki_refuses_to_overwrite_another_identity_and_reports_missing_ca(tmp_path):
    pki.init_ca(tmp_path / "ca")
    pki.issue_client(tmp_path / "ca", tmp_path / "out", "lw-0001")
    with pytest.raises(pki.PkiError, match="belongs to 'lw-0001'"):
        pki.issue_client(tmp_path / "ca", tmp_path / "out", "lw-0002")
    r = CliRunner().invoke(main, ["pki", "issue-client", "x-1", "--dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "lonewatch pki init --dir" in r.output


def test_pki_half_a_ca_is_an_error_not_a_new_ca(tmp_path):
    pki.init_ca(tmp_path / "ca")
    (tmp_path / "ca" / "ca.key").unlink()
    with pytest.raises(pki.PkiError, match="ca.key missing"):
        pki.init_ca(tmp_path / "ca")


def test_pki_reissues_a_server_certificate_for_a_new_host(tmp_path):
    pki.init_ca(tmp_path / "ca")
    first = pki.issue_server(tmp_path / "ca", tmp_path / "srv", ["a.example"])
    again = pki.issue_server(tmp_path / "ca", tmp_path / "srv", ["a.example"])
    assert first.created and not again.created
    wider = pki.issue_server(tmp_path / "ca", tmp_path / "srv", ["a.example", "b.example"])
    assert wider.created and set(pki.cert_info(wider.cert).san) == {"a.example", "b.example"}


def test_broker_config_command_prints_the_production_config():
    r = CliRunner().invoke(main, ["pki", "broker-config", "--broker-dir", "/etc/mosquitto/lonewatch", "--auth", "certificate"])
    assert r.exit_code == 0
    assert "listener 8883\n" in r.output and "require_certificate true" in r.output
    assert "password_file /etc/mosquitto/lonewatch/passwd" in r.output


# --------------------------------------------------------------------------- provision


def test_provisioned_password_logs_in_and_is_stored_hashed(broker, tmp_path, redis_server):
    result = provision(_request(broker, tmp_path, redis_server.url))
    out = tmp_path / "lw-0042"
    assert result.new_credentials and "SIGHUP" in result.reload
    assert stat.S_IMODE(os.stat(out / "device.toml").st_mode) == 0o600
    password = tomllib.loads((out / "device.toml").read_text())["mqtt"]["password"]
    assert len(password) >= 32
    passwd = (broker.workdir / "passwd").read_text()
    assert "lw-0042:$7$" in passwd and password not in passwd
    assert "relay:" in passwd  # other accounts kept
    assert _login(broker, out) == "Success"
    entry = Store.from_url(redis_server.url).device("lw-0042")
    assert (entry.account, entry.zone, entry.worker, entry.site) == ("1234AB", 42, "Anna Hansen", "Vestergade 12")


def test_provision_is_idempotent_and_keeps_hand_edits(broker, tmp_path, redis_server):
    first = provision(_request(broker, tmp_path, redis_server.url))
    out = tmp_path / "lw-0042"
    text = (out / "device.toml").read_text().replace("button_pin = 17", "button_pin = 5")
    (out / "device.toml").write_text(text)
    password = tomllib.loads(text)["mqtt"]["password"]
    again = provision(_request(broker, tmp_path, redis_server.url, account=None, zone=None))
    after = tomllib.loads((out / "device.toml").read_text())
    assert first.new_credentials and not again.new_credentials
    assert after["mqtt"]["password"] == password and after["gpio"]["button_pin"] == 5
    assert (broker.workdir / "passwd").read_text().count("lw-0042:") == 1
    assert _login(broker, out) == "Success"
    assert Store.from_url(redis_server.url).device("lw-0042").zone == 42


def test_provision_refuses_another_devices_directory(broker, tmp_path):
    provision(_request(broker, tmp_path))
    before = (tmp_path / "lw-0042" / "device.toml").read_bytes()
    with pytest.raises(ProvisionError, match="holds the files of device 'lw-0042'"):
        provision(_request(broker, tmp_path, device_id="lw-0043"))
    assert (tmp_path / "lw-0042" / "device.toml").read_bytes() == before
    assert "lw-0043" not in (broker.workdir / "passwd").read_text()


def test_provision_refuses_to_replace_known_credentials_silently(broker, tmp_path):
    provision(_request(broker, tmp_path))
    with pytest.raises(ProvisionError, match="--rotate"):
        provision(_request(broker, tmp_path, out_dir=tmp_path / "elsewhere"))
    assert not (tmp_path / "elsewhere" / "device.toml").exists()
    rotated = provision(_request(broker, tmp_path, out_dir=tmp_path / "elsewhere", rotate=True))
    assert rotated.new_credentials
    assert _login(broker, tmp_path / "elsewhere") == "Success"
    assert _login(broker, tmp_path / "lw-0042") != "Success"  # the old password is gone


@pytest.mark.parametrize("change,message", [
    ({"device_id": "relay"}, "reserved broker account"),
    ({"device_id": "LW_1"}, "device id"),
    ({"account": "XYZ"}, "3-16 hexadecimal"),
    ({"language": "de"}, "--language"),
    ({"broker_host": ""}, "--broker-host"),
    ({"worker": "x" * 80}, "worker.name"),
])  # fmt: skip
def test_provision_rejects_bad_input_without_writing(broker, tmp_path, change, message):
    passwd = (broker.workdir / "passwd").read_text()
    with pytest.raises(ProvisionError, match=message):
        provision(_request(broker, tmp_path, **change))
    assert not (tmp_path / "lw-0042" / "device.toml").exists()
    assert (broker.workdir / "passwd").read_text() == passwd


def test_provision_without_zone_for_an_unknown_worker_writes_nothing_and_says_how_to_register(broker, tmp_path, redis_server):
    with pytest.raises(ProvisionError, match="--zone.*nothing was written"):
        provision(_request(broker, tmp_path, redis_server.url, zone=None))
    assert not (tmp_path / "lw-0042" / "device.toml").exists()  # issue 15: checked first
    assert Store.from_url(redis_server.url).device("lw-0042") is None
    provision(_request(broker, tmp_path, redis_server.url))  # the re-run registers it
    assert Store.from_url(redis_server.url).device("lw-0042").zone == 42


def test_provision_refuses_a_zone_taken_in_the_account(broker, tmp_path, redis_server):
    provision(_request(broker, tmp_path, redis_server.url))
    with pytest.raises(ProvisionError, match="zone 42"):
        provision(_request(broker, tmp_path, redis_server.url, device_id="lw-0043", worker="Bo Berg",
                           out_dir=tmp_path / "lw-0043"))
    assert Store.from_url(redis_server.url).device("lw-0043") is None
    # Issue 15: checked before anything was written — no half-provisioned device.
    assert not (tmp_path / "lw-0043").exists()
    assert "lw-0043" not in (Path(broker.workdir) / "passwd").read_text()


def test_provision_says_so_when_redis_is_down(broker, tmp_path):
    with pytest.raises(ProvisionError, match="unreachable.*nothing was written"):
        provision(_request(broker, tmp_path, "redis://127.0.0.1:1/0"))
    # Issue 15: the registry is checked first, so nothing changed anywhere.
    assert not (tmp_path / "lw-0042" / "device.toml").exists()
    assert "lw-0042" not in (Path(broker.workdir) / "passwd").read_text()


def test_certificate_mode_issues_a_client_certificate(broker, tmp_path, ca_dir):
    req = _request(broker, tmp_path, auth="certificate", pki_dir=ca_dir)
    provision(req)  # the firmware reads [mqtt] cert_file/key_file
    out = tmp_path / "lw-0042"
    assert pki.cert_info(out / "client.crt").subject_cn == "lw-0042"
    assert stat.S_IMODE(os.stat(out / "client.key").st_mode) == 0o600
    cfg = tomllib.loads((out / "device.toml").read_text())
    assert cfg["mqtt"]["cert_file"].endswith("/client.crt") and cfg["mqtt"]["password"] == ""


def test_ensure_acl_writes_or_completes_the_patterns(tmp_path):
    acl = tmp_path / "acl"
    assert "wrote the project ACL" in ensure_acl(acl)
    assert all(p in acl.read_text() for p in DEVICE_PATTERNS)
    assert ensure_acl(acl) == ""
    acl.write_text("user relay\ntopic read lonewatch/+/event\npattern write lonewatch/%u/event\n")
    assert "added 3" in ensure_acl(acl)
    lines = acl.read_text().splitlines()
    assert all(lines.count(p) == 1 for p in DEVICE_PATTERNS)


def test_provision_cli_json_and_errors(broker, tmp_path, redis_server):
    base = ["provision", "lw-0042", "--worker", "Anna Hansen", "--site", "Vestergade 12", "--account", "1234AB",
            "--zone", "42", "--broker-dir", str(broker.workdir), "--out", str(tmp_path / "lw-0042"),
            "--broker-host", "localhost", "--broker-port", str(broker.port), "--redis-url", redis_server.url]
    r = CliRunner().invoke(main, [*base, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["device"] == "lw-0042" and doc["registry"]["zone"] == 42 and doc["new_credentials"] is True
    secret = tomllib.loads((tmp_path / "lw-0042" / "device.toml").read_text())["mqtt"]["password"]
    assert secret not in r.output  # secrets never printed
    r = CliRunner().invoke(main, [*base[:1], "lw-0043", *base[2:]])
    assert r.exit_code == 2 and "holds the files of device 'lw-0042'" in r.output
    r = CliRunner().invoke(main, ["provision", "lw-0044", "--worker", "W", "--site", "S", "--broker-dir",
                                  str(broker.workdir), "--out", str(tmp_path / "x"), "--broker-host", "h"])
    assert r.exit_code == 2 and "--relay-config" in r.output
