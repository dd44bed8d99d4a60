"""The registry: who wears which device, where they work, whom to call (SPEC §3, issue 4).

Model (all names are the keys other entries refer to):

* **ARC accounts** — SIA DC-09 account (3–16 hex, stored uppercase), customer name, notes.
* **Workers** — name, ``number`` (the Contact ID zone, 1–999), language, ordered contacts.
* **Sites** — name, address, ``escape_routes`` and ``alarm_system`` notes shown to contacts,
  escalation ``policy`` (``arc_then_contacts`` default, ``contacts_only``, ``arc_only``),
  ``escalate_after_s`` (default 120 s), default ARC ``account``, ``timezone`` for the times in
  messages, optional ``lat``/``lon`` (map link when the device has no fix), ordered contacts.
* **Contacts** — name, ``role`` (manager, employer, safety_representative, guard, colleague),
  ``phone`` (validated with ``phonenumbers``, kept as E.164), ``email``, ``language``.
* **Devices** — id, worker, site, ARC account (default: the site's).

An alarm's contacts are the worker's contacts, then the site's, duplicates (same phone or
e-mail) dropped (:meth:`RegistryDoc.contacts_for`).

Older registry files that list only ``[[devices]]`` with ``zone``, a free-text ``worker`` and
``site`` and ``language`` still load (the relay of issue 2 wrote them).

TOML import/export (:func:`load_registry_toml`, :func:`dump_registry_toml`) validates with
``file:line`` errors like every config file; :class:`RegistryStore` keeps the registry in Redis
(``lw:{reg}:*`` hashes of JSON, one per kind) and mirrors each device into the pipeline's
``lw:device:<id>`` entry (:class:`relay.store.DeviceEntry`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

import i18n
from protocol.configfile import ConfigChecker, ConfigError, ConfigSource, TableReader, load_toml

from .store import DeviceEntry

__all__ = [
    "LANGUAGES", "POLICIES", "ROLES", "ArcAccount", "Contact", "Device", "RegistryDoc",
    "RegistryStore", "Site", "Worker", "dump_registry_toml", "load_registry_toml", "normalize_phone",
]

LANGUAGES: Final = i18n.LANGUAGES  # the languages with catalogs (issue 13)
ROLES: Final = ("manager", "employer", "safety_representative", "guard", "colleague")
POLICIES: Final = ("arc_then_contacts", "contacts_only", "arc_only")
DEFAULT_ESCALATE_AFTER_S: Final = 120
ACCOUNT_PATTERN: Final = r"[0-9A-Fa-f]{3,16}"
DEVICE_ID_PATTERN: Final = r"[a-z0-9][a-z0-9-]{2,31}"
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_KINDS: Final = ("accounts", "workers", "sites", "devices")


def normalize_phone(text: str, region: str | None = None) -> str:
    """``"+45 20 12 34 56"`` or (with ``region="DK"``) ``"20123456"`` → ``"+4520123456"``.

    Raises:
        ValueError: not a valid phone number (message says why; ``phonenumbers`` rules).
    """
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if region or text.strip().startswith("+") else " (write it as +<country code>…)"
        raise ValueError(f"not a phone number: {exc}{hint}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Contact:
    """A person told about an alarm. ``phone`` is E.164 (``+4520123456``) or ``""``,
    ``email`` or ``""`` (at least one of the two), ``role`` one of :data:`ROLES`."""

    name: str
    role: str
    phone: str = ""
    email: str = ""
    language: str = "da"


@dataclass(frozen=True)
class Worker:
    """A lone worker: ``number`` is the Contact ID zone (1–999) the ARC sees."""

    name: str
    number: int
    language: str = "da"
    contacts: tuple[Contact, ...] = ()


@dataclass(frozen=True)
class Site:
    """A workplace. ``escalate_after_s``: seconds to wait for a contact's acknowledgement
    before the next contact is told. ``lat``/``lon``: WGS84 degrees or None."""

    name: str
    address: str = ""
    escape_routes: str = ""
    alarm_system: str = ""
    policy: str = "arc_then_contacts"
    escalate_after_s: int = DEFAULT_ESCALATE_AFTER_S
    account: str = ""
    timezone: str = ""
    lat: float | None = None
    lon: float | None = None
    contacts: tuple[Contact, ...] = ()
    #: Site voice lines called after the account's (E.164; issue 11), e.g. a guard desk.
    voice_numbers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArcAccount:
    """An SIA DC-09 account at the ARC (3–16 hex digits, uppercase)."""

    account: str
    name: str = ""
    notes: str = ""
    #: The ARC's voice lines for listen-in calls (E.164, in order; issue 11).
    voice_numbers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Device:
    """A device. ``account`` as written ("" = the site's). ``zone``/``language`` are set only
    for old-style entries whose worker is free text (not in ``[[workers]]``)."""

    id: str
    worker: str
    site: str = ""
    account: str = ""
    zone: int | None = None
    language: str | None = None


@dataclass(frozen=True)
class RegistryDoc:
    """A whole, validated registry. Build with :func:`load_registry_toml` or
    :meth:`from_dict`; every cross-reference has been checked."""

    accounts: tuple[ArcAccount, ...] = ()
    workers: tuple[Worker, ...] = ()
    sites: tuple[Site, ...] = ()
    devices: tuple[Device, ...] = ()
    default_region: str = ""
    _index: dict[str, dict[str, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {
            "accounts": {a.account: a for a in self.accounts},
            "workers": {w.name: w for w in self.workers},
            "sites": {s.name: s for s in self.sites},
            "devices": {d.id: d for d in self.devices},
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>", *, partial: bool = False) -> RegistryDoc:
        """Validate a TOML-shaped document. ``partial``: references to workers, sites and
        accounts that are not in the document are allowed (a part to merge into a stored
        registry; :meth:`RegistryStore.save` validates the merged whole).

        Raises ConfigError with every problem."""
        return _build(ConfigSource.from_dict(data, source), partial=partial)

    def to_dict(self) -> dict[str, Any]:
        """The TOML-shaped document (defaults and empty values left out); round-trips
        through :meth:`from_dict`."""
        out: dict[str, Any] = {}
        if self.default_region:
            out["default_region"] = self.default_region
        for kind in _KINDS:
            items = [_entity_dict(kind, e) for e in getattr(self, kind)]
            if items:
                out[kind] = items
        return out

    def worker(self, name: str) -> Worker | None:
        return self._index["workers"].get(name)

    def site(self, name: str) -> Site | None:
        return self._index["sites"].get(name)

    def device(self, device_id: str) -> Device | None:
        return self._index["devices"].get(device_id)

    def account(self, account: str) -> ArcAccount | None:
        return self._index["accounts"].get(account)

    def entry(self, device: Device) -> DeviceEntry:
        """The pipeline's view of ``device``: account, zone, worker, site, language."""
        worker = self.worker(device.worker)
        site = self.site(device.site)
        account = device.account or (site.account if site else "")
        zone = worker.number if worker else (device.zone or 0)
        language = worker.language if worker else (device.language or "da")
        return DeviceEntry(device.id, account, zone, device.worker, device.site, language)

    def voice_numbers_for(self, device: Device) -> tuple[str, ...]:
        """The numbers ``device`` calls for listen-in (issue 11): its ARC account's voice lines,
        then its site's, each once (what ``lonewatch provision`` writes to ``[voice] numbers``)."""
        site = self.site(device.site)
        account = self.account(device.account or (site.account if site else ""))
        numbers = (account.voice_numbers if account else ()) + (site.voice_numbers if site else ())
        return tuple(dict.fromkeys(numbers))

    def contacts_for(self, device: Device) -> tuple[Contact, ...]:
        """The ordered contacts for an alarm from ``device``: the worker's, then the site's,
        a contact whose phone or e-mail was listed already is skipped."""
        worker, site = self.worker(device.worker), self.site(device.site)
        return merge_contacts((worker.contacts if worker else ()) + (site.contacts if site else ()))

    def merged(self, other: RegistryDoc) -> dict[str, Any]:
        """TOML-shaped document of this registry with every entity of ``other`` added or
        replaced (by name / id / account). Validate it with :meth:`from_dict`."""
        out: dict[str, Any] = {"default_region": other.default_region or self.default_region}
        for kind in _KINDS:
            mine = {_key_of(kind, e): e for e in getattr(self, kind)}
            mine.update({_key_of(kind, e): e for e in getattr(other, kind)})
            out[kind] = [_entity_dict(kind, e) for e in mine.values()]
        return out


def merge_contacts(contacts: Iterable[Contact]) -> tuple[Contact, ...]:
    """Contacts in order without repeats (same phone or same e-mail as an earlier one)."""
    seen: set[str] = set()
    out = []
    for c in contacts:
        keys = {k for k in (c.phone, c.email.lower()) if k}
        if keys & seen:
            continue
        seen |= keys
        out.append(c)
    return tuple(out)


_KEY_FIELD: Final = {"accounts": "account", "workers": "name", "sites": "name", "devices": "id"}


def _key_of(kind: str, entity: Any) -> str:
    return getattr(entity, _KEY_FIELD[kind])


def _entity_dict(kind: str, entity: Any) -> dict[str, Any]:
    """An entity as its TOML table: ``None``, empty strings and default policy/timeout left out."""
    out: dict[str, Any] = {}
    for name, spec in type(entity).__dataclass_fields__.items():
        value = getattr(entity, name)
        if name == "contacts":
            if value:
                out["contacts"] = [_entity_dict("contacts", c) for c in value]
            continue
        if value is None or value == "" or value == () or (name in ("policy", "escalate_after_s") and value == spec.default):
            continue
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


# --------------------------------------------------------------------------- validation


def load_registry_toml(path: str | PathLike[str]) -> RegistryDoc:
    """Read and validate a registry TOML file.

    Raises:
        ConfigError: unreadable / invalid TOML, or every problem found (bad fields, unknown
            references, duplicate names, two workers with one zone in an account), one
            ``file:line: key: message`` line each.
    """
    return _build(load_toml(path))


def dump_registry_toml(doc: RegistryDoc) -> str:
    """The registry as TOML text that :func:`load_registry_toml` reads back unchanged: one
    ``[[kind]]`` table per entity and ``[[kind.contacts]]`` per contact, so that errors in an
    edited export point at the right line."""
    lines = ["# lonewatch registry (written by `lonewatch registry export`)"]
    data = doc.to_dict()
    if "default_region" in data:
        lines.append(f"default_region = {_toml_value(data['default_region'])}")
    for kind in _KINDS:
        for item in data.get(kind, ()):
            lines += ["", f"[[{kind}]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in item.items() if k != "contacts"]
            for contact in item.get("contacts", ()):
                lines += ["", f"  [[{kind}.contacts]]"]
                lines += [f"  {k} = {_toml_value(v)}" for k, v in contact.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, list):  # voice_numbers
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"no TOML for {value!r}")
    return repr(value)


def _contact(t: TableReader, region: str | None) -> Contact:
    def phone_check(value: str) -> str | None:
        if not value:
            return None
        try:
            normalize_phone(value, region)
        except ValueError as exc:
            return f"{exc}, got \"{value}\""
        return None

    name = t.string("name", nonempty=True, max_len=64)
    role = t.string("role", choices=ROLES)
    phone = t.string("phone", "", check=phone_check)
    email = t.string("email", "", check=lambda v: None if not v or _EMAIL.fullmatch(v)
                     else f"must be an e-mail address, got \"{v}\"")
    language = t.string("language", "da", choices=LANGUAGES)
    if not phone and not email:
        t.problem(None, "a contact needs a phone or an email (or both)")
    try:
        phone = normalize_phone(phone, region) if phone else ""
    except ValueError:
        pass  # reported above
    return Contact(name, role, phone, email, language)


def read_voice_numbers(t: TableReader, region: str | None) -> tuple[str, ...]:
    """``voice_numbers`` of an account or site: phone numbers (validated with
    ``phonenumbers`` like contacts' phones), stored as E.164, no repeats (issue 11)."""
    out: list[str] = []
    for i, text in enumerate(t.string_list("voice_numbers", [])):
        try:
            number = normalize_phone(text, region)
        except ValueError as exc:
            t.checker.problem(t.keypath + ("voice_numbers", i), f"{exc}, got \"{text}\"")
            continue
        if number in out:
            t.checker.problem(t.keypath + ("voice_numbers", i), f"duplicate {number}")
            continue
        out.append(number)
    return tuple(out)


def _zone_check(value: str) -> str | None:
    if not value:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"must be an IANA time zone such as \"Europe/Copenhagen\", got \"{value}\""
    return None


def _build(source: ConfigSource, *, partial: bool = False) -> RegistryDoc:
    checker = ConfigChecker(source)
    root = checker.root()
    region = root.string("default_region", "", pattern=r"([A-Z]{2})?",
                         describe="a two-letter country code such as \"DK\"")
    if region and region not in phonenumbers.SUPPORTED_REGIONS:
        root.problem("default_region", f"unknown country code \"{region}\"")
        region = ""
    first: dict[tuple[str, str], int | None] = {}

    def unique(t: TableReader, kind: str, key: str, value: str) -> None:
        if not value:
            return
        if (kind, value) in first:
            where = first[(kind, value)]
            t.problem(key, f"duplicate {kind[:-1]} {key} \"{value}\""
                      + (f" (first at line {where})" if where else ""))
        else:
            first[(kind, value)] = t.line_of(key)

    accounts = []
    for t in root.tables("accounts"):
        a = ArcAccount(t.string("account", pattern=ACCOUNT_PATTERN,
                                describe="3-16 hexadecimal characters").upper(),
                       t.string("name", "", max_len=128), t.string("notes", "", max_len=1000),
                       read_voice_numbers(t, region or None))
        unique(t, "accounts", "account", a.account)
        accounts.append(a)
    known_accounts = {a.account for a in accounts}

    def account_ref(t: TableReader, default: str = "") -> str:
        value = t.string("account", default, pattern=f"({ACCOUNT_PATTERN})?",
                         describe="3-16 hexadecimal characters").upper()
        if value and known_accounts and value not in known_accounts and not partial:
            t.problem("account", f"unknown ARC account \"{value}\" (not in [[accounts]])")
        return value

    workers = []
    for t in root.tables("workers"):
        w = Worker(t.string("name", nonempty=True, max_len=64), t.integer("number", min=1, max=999),
                   t.string("language", "da", choices=LANGUAGES),
                   tuple(_contact(c, region or None) for c in t.tables("contacts")))
        unique(t, "workers", "name", w.name)
        workers.append(w)
    worker_by_name: dict[str, Worker] = {}
    for w in workers:
        worker_by_name.setdefault(w.name, w)  # a duplicate was reported; the first one counts

    sites = []
    for t in root.tables("sites"):
        lat = t.number("lat", None, min=-90, max=90) if t.has("lat") else None
        lon = t.number("lon", None, min=-180, max=180) if t.has("lon") else None
        if (lat is None) != (lon is None):
            t.problem("lat" if lat is None else "lon", "give both lat and lon, or neither")
        s = Site(
            name=t.string("name", nonempty=True, max_len=128),
            address=t.string("address", "", max_len=300),
            escape_routes=t.string("escape_routes", "", max_len=1000),
            alarm_system=t.string("alarm_system", "", max_len=1000),
            policy=t.string("policy", "arc_then_contacts", choices=POLICIES),
            escalate_after_s=t.integer("escalate_after_s", DEFAULT_ESCALATE_AFTER_S, min=1, max=86400),
            account=account_ref(t),
            timezone=t.string("timezone", "", check=_zone_check),
            lat=lat, lon=lon,
            contacts=tuple(_contact(c, region or None) for c in t.tables("contacts")),
            voice_numbers=read_voice_numbers(t, region or None),
        )
        unique(t, "sites", "name", s.name)
        sites.append(s)
    site_by_name: dict[str, Site] = {}
    for site in sites:
        site_by_name.setdefault(site.name, site)

    devices = []
    zones: dict[tuple[str, int], tuple[str, int | None]] = {}  # (account, zone) → worker, line
    for t in root.tables("devices"):
        dev_id = t.string("id", pattern=DEVICE_ID_PATTERN,
                          describe="a device id of 3-32 characters a-z, 0-9, - (not starting with -)")
        unique(t, "devices", "id", dev_id)
        worker_name = t.string("worker", "", max_len=64)
        site_name = t.string("site", "", max_len=128)
        zone = t.integer("zone", None, min=1, max=999) if t.has("zone") else None
        language = t.string("language", None, choices=LANGUAGES) if t.has("language") else None
        worker = worker_by_name.get(worker_name)
        site = site_by_name.get(site_name)
        legacy = worker is None and zone is not None
        if worker is None and zone is None and not (partial and worker_name):
            t.problem("worker", f"unknown worker \"{worker_name}\" (add it to [[workers]])"
                      if worker_name else "required key is missing")
        if worker is not None and zone is not None and zone != worker.number:
            t.problem("zone", f"zone {zone} differs from worker \"{worker.name}\"'s number {worker.number}")
        if site is not None and site.policy == "contacts_only" and not (
                site.contacts or (worker.contacts if worker else ())):
            t.problem("site", f"site \"{site.name}\" is contacts_only but neither it nor the worker has "
                      "contacts: nobody would be told of an alarm")
        if site_name and site is None and not legacy and not partial:
            t.problem("site", f"unknown site \"{site_name}\" (add it to [[sites]])")
        account = account_ref(t)
        effective = account or (site.account if site else "")
        if not effective and not (site and site.policy == "contacts_only") and not (partial and site_name):
            t.problem("account", "required key is missing (or give the site an account)")
        number = worker.number if worker else zone
        if effective and number:
            holder = worker_name or dev_id
            slot = (effective, number)
            if slot in zones and zones[slot][0] != holder:
                other, line = zones[slot]
                t.problem("zone" if legacy else "worker",
                          f"zone {number} is already used in account {effective} by \"{other}\""
                          + (f" (line {line})" if line else ""))
            zones.setdefault(slot, (holder, t.line_of("id")))
        devices.append(Device(dev_id, worker_name, site_name, account,
                              zone if legacy else None, language if legacy else None))
    checker.finish()
    return RegistryDoc(tuple(accounts), tuple(workers), tuple(sites), tuple(devices), region)


def check_registry_file(path: str | PathLike[str]) -> RegistryDoc:
    """Alias of :func:`load_registry_toml` for ``lonewatch check-config registry``."""
    return load_registry_toml(path)


__all__ += ["ConfigError", "Resolved", "check_registry_file", "import_registry_file", "merge_contacts"]

# The Redis side, re-exported so that ``from relay.registry import RegistryStore`` keeps working
# (imported last: it builds on the model above).
from relay.registry_store import RegistryStore, Resolved, import_registry_file  # noqa: E402
