"""Voice numbers in the registry (per ARC account and per site, E.164 via phonenumbers) and
``lonewatch provision`` writing them into device.toml ``[voice]`` (issue 11)."""

from __future__ import annotations

import tomllib

import pytest

from device.config import load_device_config
from installer.provision import provision
from protocol.configfile import ConfigError
from relay.registry import RegistryDoc, RegistryStore, dump_registry_toml
from relay.store import Store
from tests.test_provision import _request, broker, ca_dir  # noqa: F401  (fixtures)

REGISTRY = {
    "default_region": "DK",
    "accounts": [{"account": "1234AB", "name": "ARC", "voice_numbers": ["70 10 10 10", "+4570202020"]}],
    "workers": [{"name": "Anna Hansen", "number": 42,
                 "contacts": [{"name": "Bo", "role": "manager", "phone": "+4520110001"}]}],
    "sites": [{"name": "Vestergade 12", "account": "1234AB", "voice_numbers": ["+4533333333", "+4570202020"],
               "contacts": [{"name": "Guard", "role": "guard", "phone": "+4520110002"}]}],
}


def test_registry_voice_numbers_normalised_ordered_and_round_trip() -> None:
    doc = RegistryDoc.from_dict(REGISTRY)
    assert doc.account("1234AB").voice_numbers == ("+4570101010", "+4570202020")
    from relay.registry import Device

    device = Device("lw-0042", "Anna Hansen", "Vestergade 12")
    assert doc.voice_numbers_for(device) == ("+4570101010", "+4570202020", "+4533333333")
    assert RegistryDoc.from_dict(tomllib.loads(dump_registry_toml(doc))) == doc


@pytest.mark.parametrize("numbers,message", [
    (["12"], "accounts[0].voice_numbers[0]: not a phone number"),
    (["+4570101010", "+45 70 10 10 10"], "accounts[0].voice_numbers[1]: duplicate +4570101010"),
    (["+45 1"], "accounts[0].voice_numbers[0]: not a"),
])
def test_bad_voice_numbers_are_reported(numbers, message) -> None:
    with pytest.raises(ConfigError) as err:
        RegistryDoc.from_dict({"accounts": [{"account": "1234AB", "voice_numbers": numbers}]})
    assert message in str(err.value)


def test_provision_writes_voice_numbers_and_callback_numbers(broker, tmp_path, redis_server) -> None:  # noqa: F811
    RegistryStore(Store.from_url(redis_server.url)).save(RegistryDoc.from_dict(REGISTRY))
    provision(_request(broker, tmp_path, redis_server.url, zone=None))
    path = tmp_path / "lw-0042" / "device.toml"
    voice = tomllib.loads(path.read_text())["voice"]
    assert voice["numbers"] == ["+4570101010", "+4570202020", "+4533333333"]
    assert voice["callback_numbers"] == ["+4520110001", "+4520110002"]
    cfg = load_device_config(path)
    assert cfg.voice.numbers[0] == "+4570101010" and cfg.voice.enabled


def test_provision_without_registry_voice_leaves_defaults(broker, tmp_path) -> None:  # noqa: F811
    provision(_request(broker, tmp_path, None))
    voice = tomllib.loads((tmp_path / "lw-0042" / "device.toml").read_text())["voice"]
    assert voice["numbers"] == [] and voice["kinds"] == ["panic", "silent_panic", "man_down"]


def test_cli_registry_voice_numbers_kept_on_update(redis_server) -> None:
    from click.testing import CliRunner

    from cli.main import main

    def run(*args: str):
        return CliRunner().invoke(main, [*args, "--redis", redis_server.url], catch_exceptions=False)

    assert run("registry", "add", "account", "1234ab", "--voice-number", "+45 70 10 10 10",
               "--voice-number", "+4570202020").exit_code == 0
    assert run("registry", "add", "site", "Kontoret", "--account", "1234AB", "--voice-number", "+4533333333").exit_code == 0
    assert run("registry", "add", "account", "1234ab", "--name", "ARC Nord").exit_code == 0  # update keeps them
    doc = RegistryStore(Store.from_url(redis_server.url)).load()
    assert doc.account("1234AB").voice_numbers == ("+4570101010", "+4570202020")
    assert doc.account("1234AB").name == "ARC Nord"
    assert doc.site("Kontoret").voice_numbers == ("+4533333333",)
    bad = run("registry", "add", "account", "1234ab", "--voice-number", "12")
    assert bad.exit_code != 0 and "voice_numbers" in bad.output
