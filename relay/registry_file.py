"""Registry file: which devices exist, whose they are and how the ARC knows them (SPEC §3).

Format (TOML, validated with file:line like the config files)::

    [[devices]]
    id = "lw-0001"        # device id, as in device.toml
    account = "1234"      # SIA DC-09 account: 3-16 hex characters (stored uppercase)
    zone = 5              # Contact ID zone 1..999 = worker number, unique within the account
    worker = "Anna Hansen"
    site = "Vaskeriet, Vesterbro"
    language = "da"       # da, en, pl, ro, uk, ar

Duplicate device ids, or two devices with one zone in the same account, are errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from protocol.configfile import ConfigChecker, ConfigSource, load_toml

__all__ = ["ACCOUNT_PATTERN", "RegisteredDevice", "Registry", "load_registry"]

ACCOUNT_PATTERN = r"[0-9A-Fa-f]{3,16}"
DEVICE_ID_PATTERN = r"[a-z0-9][a-z0-9-]{2,31}"  # same as device.config.DEVICE_ID_PATTERN
LANGUAGES = ("da", "en", "pl", "ro", "uk", "ar")


@dataclass(frozen=True)
class RegisteredDevice:
    """One ``[[devices]]`` entry. ``zone`` is the Contact ID zone (worker number, 1..999)."""

    id: str
    account: str
    zone: int
    worker: str = ""
    site: str = ""
    language: str = "da"


@dataclass(frozen=True)
class Registry:
    """All registered devices, in file order; look up with :meth:`get` or ``in``."""

    devices: tuple[RegisteredDevice, ...] = ()
    _by_id: dict[str, RegisteredDevice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {d.id: d for d in self.devices})

    def get(self, device_id: str) -> RegisteredDevice | None:
        return self._by_id.get(device_id)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._by_id

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[RegisteredDevice]:
        return iter(self.devices)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Registry:
        """Validate an in-memory registry document.

        Raises:
            ConfigError: every problem found.
        """
        return _build(ConfigSource.from_dict(data, source))


def load_registry(path: str | PathLike[str]) -> Registry:
    """Read and validate a registry TOML file.

    Raises:
        ConfigError: unreadable / invalid TOML, or every problem (bad fields, duplicate ids,
            duplicate zone within an account), one ``file:line: key: message`` line each.
    """
    return _build(load_toml(path))


def _build(source: ConfigSource) -> Registry:
    checker = ConfigChecker(source)
    root = checker.root()
    devices: list[RegisteredDevice] = []
    ids: dict[str, int] = {}
    zones: dict[tuple[str, int], int] = {}
    for i, t in enumerate(root.tables("devices")):
        dev = RegisteredDevice(
            id=t.string("id", pattern=DEVICE_ID_PATTERN,
                        describe="a device id of 3-32 characters a-z, 0-9, - "
                                 "(not starting with -)"),
            account=t.string("account", pattern=ACCOUNT_PATTERN,
                             describe="3-16 hexadecimal characters").upper(),
            zone=t.integer("zone", min=1, max=999),
            worker=t.string("worker", "", max_len=64),
            site=t.string("site", "", max_len=64),
            language=t.string("language", "da", choices=LANGUAGES),
        )
        if dev.id:
            if dev.id in ids:
                t.problem("id", f"duplicate device id \"{dev.id}\" "
                          f"(first at {_where(source, ids[dev.id], 'id')})")
            else:
                ids[dev.id] = i
        if dev.account and dev.zone:
            slot = (dev.account, dev.zone)
            if slot in zones:
                t.problem("zone", f"zone {dev.zone} is already used in account {dev.account} "
                          f"(first at {_where(source, zones[slot], 'zone')})")
            else:
                zones[slot] = i
        devices.append(dev)
    checker.finish()
    return Registry(tuple(devices))


def _where(source: ConfigSource, index: int, key: str) -> str:
    line = source.line_of(("devices", index, key))
    return f"line {line}" if line is not None else f"devices[{index}]"
