"""The registry (issue 4): TOML validation with file:line errors (table of bad input), phone
numbers to E.164, export that reads back unchanged, older device-only files, and the
registry in a real Redis (merge, replace, concurrent-safe change, pipeline entries, lookup)."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.configfile import ConfigError
from labstack.servers import CONF_DIR, RedisServer
from relay.registry import (
    Contact,
    RegistryDoc,
    RegistryStore,
    dump_registry_toml,
    load_registry_toml,
    merge_contacts,
    normalize_phone,
)
from relay.store import DeviceEntry, Store

EXAMPLE = CONF_DIR / "registry.example.toml"

BASE = """\
[[accounts]]
account = "1234ab"

[[workers]]
name = "Anna"
number = 17

[[sites]]
name = "Vaskeriet"
account = "1234AB"

  [[sites.contacts]]
  name = "Per"
  role = "manager"
  phone = "+4520110001"

[[devices]]
id = "lw-0001"
worker = "Anna"
site = "Vaskeriet"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.toml"
    path.write_text(text, encoding="utf-8")
    return path


def errors(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_registry_toml(path)
    return [line.removeprefix(f"{path}:") for line in str(info.value).splitlines()]


def test_example_file_loads_and_resolves() -> None:
    doc = load_registry_toml(EXAMPLE)
    anna = doc.device("lw-0001")
    assert anna is not None
    assert doc.entry(anna) == DeviceEntry("lw-0001", "1234AB", 17, "Anna Hansen", "Vaskeriet Vesterbro", "da")
    assert [c.name for c in doc.contacts_for(anna)] == ["Mette Hansen", "Per Jensen", "Omar Haddad"]
    assert doc.contacts_for(anna)[1].phone == "+4520110001"  # national number read as DK
    oksana = doc.device("lw-0002")
    assert doc.entry(oksana).account == "" and doc.site("Plejehjemmet Solgården").policy == "contacts_only"  # type: ignore[arg-type,union-attr]


def test_export_reads_back_unchanged(tmp_path: Path) -> None:
    doc = load_registry_toml(EXAMPLE)
    again = load_registry_toml(write(tmp_path, dump_registry_toml(doc)))
    assert again == doc and again.to_dict() == doc.to_dict()


def test_older_device_only_files_still_load() -> None:
    doc = RegistryDoc.from_dict({"devices": [
        {"id": "lw-0001", "account": "1234", "zone": 7, "worker": "Anna", "site": "Vaskeriet", "language": "pl"},
        {"id": "lw-0002", "account": "1234", "zone": 8}]})
    assert doc.entry(doc.devices[0]) == DeviceEntry("lw-0001", "1234", 7, "Anna", "Vaskeriet", "pl")
    assert doc.entry(doc.devices[1]).zone == 8


@pytest.mark.parametrize(("change", "expected"), [
    (('number = 17', 'number = 1000'), "6: workers[0].number: must be an integer 1..999, got 1000"),
    (('role = "manager"', 'role = "boss"'), '14: sites[0].contacts[0].role: must be one of "manager", "employer", '
                                            '"safety_representative", "guard", "colleague", got "boss"'),
    (('phone = "+4520110001"', 'phone = "20110001"'),
     '15: sites[0].contacts[0].phone: not a phone number: (0) Missing or invalid default region. '
     '(write it as +<country code>…), got "20110001"'),
    (('phone = "+4520110001"', 'phone = "+451"'),
     'too short to be a phone number., got "+451"'),
    (('phone = "+4520110001"', 'email = "per"'), '15: sites[0].contacts[0].email: must be an e-mail address, got "per"'),
    (('phone = "+4520110001"', 'language = "en"'), '12: sites[0].contacts[0]: a contact needs a phone or an email (or both)'),
    (('worker = "Anna"', 'worker = "Ana"'), '19: devices[0].worker: unknown worker "Ana" (add it to [[workers]])'),
    (('site = "Vaskeriet"\n', 'site = "Vask"\n'), '20: devices[0].site: unknown site "Vask" (add it to [[sites]])'),
    (('account = "1234AB"', 'account = "9999"'), '10: sites[0].account: unknown ARC account "9999" (not in [[accounts]])'),
    (('name = "Vaskeriet"', 'name = "Vaskeriet"\npolicy = "arc_first"'),
     '10: sites[0].policy: must be one of "arc_then_contacts", "contacts_only", "arc_only", got "arc_first"'),
    (('name = "Vaskeriet"', 'name = "Vaskeriet"\ntimezone = "Europe/Copenhagn"'),
     '10: sites[0].timezone: must be an IANA time zone such as "Europe/Copenhagen", got "Europe/Copenhagn"'),
    (('name = "Vaskeriet"', 'name = "Vaskeriet"\nlat = 55.6'), '8: sites[0].lon: give both lat and lon, or neither'),
    (('name = "Vaskeriet"', 'name = "Vaskeriet"\ncolour = "red"'), '10: sites[0].colour: unknown key'),
])
def test_bad_input_is_reported_with_its_line(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    assert any(expected in line for line in errors(tmp_path, BASE.replace(*change, 1)))


def test_duplicates_zones_and_policies_are_checked_across_entries(tmp_path: Path) -> None:
    text = BASE + """
[[workers]]
name = "Anna"
number = 18

[[workers]]
name = "Ole"
number = 17

[[sites]]
name = "Solgården"
policy = "contacts_only"

[[devices]]
id = "lw-0001"
worker = "Anna"
site = "Vaskeriet"

[[devices]]
id = "lw-0002"
worker = "Ole"
site = "Vaskeriet"

[[devices]]
id = "lw-0003"
worker = "Anna"
site = "Solgården"
"""
    assert errors(tmp_path, text) == [
        '23: workers[1].name: duplicate worker name "Anna" (first at line 5)',
        '35: devices[1].id: duplicate device id "lw-0001" (first at line 18)',
        '41: devices[2].worker: zone 17 is already used in account 1234AB by "Anna" (line 18)',
        '47: devices[3].site: site "Solgården" is contacts_only but neither it nor the worker has contacts: '
        'nobody would be told of an alarm',
    ]


def test_device_without_account_anywhere(tmp_path: Path) -> None:
    text = BASE.replace('account = "1234AB"\n', "", 1)
    assert errors(tmp_path, text) == [
        "16: devices[0].account: required key is missing (or give the site an account)"]


def test_phone_numbers_and_contact_merging() -> None:
    assert normalize_phone("+45 20 11 00 01") == "+4520110001"
    assert normalize_phone("020 7946 0018", "GB") == "+442079460018"
    with pytest.raises(ValueError):
        normalize_phone("12")
    a = Contact("A", "manager", "+4520110001", "a@example.org")
    b = Contact("B", "guard", "+4520110001", "b@example.org")  # same phone as A
    c = Contact("C", "guard", "", "A@Example.org")  # same e-mail as A, other case
    assert merge_contacts((a, b, c)) == (a,)


# ----------------------------------------------------------------------------- Redis


@pytest.fixture
def store(redis_module: RedisServer) -> Store:
    s = Store.from_url(redis_module.url)
    s.r.flushall()
    return s


def canon(doc: RegistryDoc) -> dict:
    """The registry as a dict with entries sorted (Redis keeps no order between entries;
    contacts keep theirs)."""
    return {k: sorted(v, key=repr) if isinstance(v, list) else v for k, v in doc.to_dict().items()}


def test_save_load_and_pipeline_entries(store: Store) -> None:
    reg = RegistryStore(store)
    counts = reg.save(load_registry_toml(EXAMPLE))
    assert counts == {"accounts": 1, "workers": 2, "sites": 2, "devices": 2, "removed_devices": 0}
    assert canon(reg.load()) == canon(load_registry_toml(EXAMPLE))
    assert store.device("lw-0001") == DeviceEntry("lw-0001", "1234AB", 17, "Anna Hansen", "Vaskeriet Vesterbro", "da")
    resolved = reg.resolve("lw-0001")
    assert resolved is not None and resolved.policy == "arc_then_contacts" and resolved.escalate_after_s == 120
    assert [c.name for c in resolved.contacts] == ["Mette Hansen", "Per Jensen", "Omar Haddad"]
    assert reg.resolve("lw-9999") is None


def test_merge_keeps_other_entries_replace_removes_them(store: Store) -> None:
    reg = RegistryStore(store)
    reg.save(load_registry_toml(EXAMPLE))
    extra = RegistryDoc.from_dict({"workers": [{"name": "Ole", "number": 19}],
                                   "devices": [{"id": "lw-0003", "worker": "Ole", "site": "Vaskeriet Vesterbro"}]},
                                  partial=True)
    with pytest.raises(ConfigError, match="unknown site"):  # merged it is valid; alone it is not
        reg.save(extra, replace=True)
    counts = reg.save(extra)
    assert counts["devices"] == 3 and store.device("lw-0003").zone == 19  # type: ignore[union-attr]
    only = RegistryDoc.from_dict({"workers": [{"name": "Ole", "number": 19}],
                                  "devices": [{"id": "lw-0003", "worker": "Ole", "account": "ABC"}]})
    assert reg.save(only, replace=True)["removed_devices"] == 2
    assert store.device("lw-0001") is None and store.device("lw-0003").account == "ABC"  # type: ignore[union-attr]


def test_an_invalid_change_writes_nothing(store: Store) -> None:
    reg = RegistryStore(store)
    reg.save(load_registry_toml(EXAMPLE))
    before = reg.load()

    def bad(doc: dict) -> None:
        doc["workers"][1]["number"] = 17  # Anna's number, same account? no: other site, no account
        doc["devices"][1]["account"] = "1234AB"

    with pytest.raises(ConfigError, match="zone 17 is already used"):
        reg.change(bad)
    assert reg.load() == before


def test_provisioned_device_finds_its_site_by_name(store: Store) -> None:
    reg = RegistryStore(store)
    reg.save(load_registry_toml(EXAMPLE))
    store.register(DeviceEntry("lw-0009", "1234AB", 42, "Temp worker", "Vaskeriet Vesterbro", "en"))
    resolved = reg.resolve("lw-0009")
    assert resolved is not None and resolved.entry.zone == 42 and resolved.worker is None
    assert [c.name for c in resolved.contacts] == ["Per Jensen", "Omar Haddad"]
