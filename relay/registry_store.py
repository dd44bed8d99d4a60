"""The registry in Redis: :class:`RegistryStore` (``lw:{reg}:*`` hashes of JSON, one per kind,
each device mirrored into the pipeline's ``lw:device:<id>`` entry), what escalation reads about
one device (:class:`Resolved`), and storing a registry file (:func:`import_registry_file`).

The model and the TOML format are in :mod:`relay.registry` (import everything from there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from os import PathLike
from typing import Any

import redis

from protocol.configfile import ConfigError, load_toml
from relay.registry import (
    _KINDS,
    DEFAULT_ESCALATE_AFTER_S,
    Contact,
    Device,
    RegistryDoc,
    Site,
    Worker,
    _build,
    _entity_dict,
    _key_of,
    load_registry_toml,
)
from relay.store import DeviceEntry, Store, StoreError, registry_key

__all__ = ["RegistryStore", "Resolved", "import_registry_file"]


def import_registry_file(registry: RegistryStore, path: str | PathLike[str], *, replace: bool = False) -> dict[str, int]:
    """Validate the file and store it (merged by name unless ``replace``). A file that refers
    to workers/sites/accounts stored earlier is fine when merging: the merged registry is
    validated as a whole. Returns the counts of :meth:`RegistryStore.save`.

    Raises:
        ConfigError: the file's own problems with file:line (nothing is written).
        StoreError: Redis failed.
    """
    try:
        doc = load_registry_toml(path)
    except ConfigError as strict:
        if replace:
            raise
        try:
            doc = _build(load_toml(path), partial=True)
            registry.load()  # a merge needs the stored part; fails like save would
        except ConfigError:
            raise strict from None
        try:
            return registry.save(doc)
        except ConfigError:
            raise strict from None
    return registry.save(doc, replace=replace)


@dataclass(frozen=True)
class Resolved:
    """Everything escalation needs about one device, read from Redis in one round trip."""

    device: Device
    entry: DeviceEntry
    worker: Worker | None
    site: Site | None
    contacts: tuple[Contact, ...]

    @property
    def policy(self) -> str:
        return self.site.policy if self.site else "arc_then_contacts"

    @property
    def escalate_after_s(self) -> int:
        return self.site.escalate_after_s if self.site else DEFAULT_ESCALATE_AFTER_S


def _to_json(kind: str, entity: Any) -> str:
    return json.dumps(_entity_dict(kind, entity), ensure_ascii=False, separators=(",", ":"))


class RegistryStore:
    """The registry in Redis (``lw:{reg}:accounts|workers|sites|devices`` hashes of JSON,
    ``lw:{reg}:meta`` for ``default_region``).

    Every method raises :class:`relay.store.StoreError` when Redis fails and
    :class:`protocol.configfile.ConfigError` when a change would make the registry invalid
    (nothing is written then).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.r = store.r

    def load(self) -> RegistryDoc:
        """The whole registry (validated again, so a hand-edited Redis cannot slip through)."""
        pipe = self.r.pipeline(transaction=False)
        for kind in _KINDS:
            pipe.hgetall(registry_key(kind))
        pipe.hget(registry_key("meta"), "default_region")
        *raw, region = self.store._call(pipe.execute)
        data: dict[str, Any] = {"default_region": (region or b"").decode()}
        for kind, items in zip(_KINDS, raw):
            data[kind] = [json.loads(v) for _, v in sorted(items.items())]
        return RegistryDoc.from_dict(data, "redis registry")

    def save(self, doc: RegistryDoc, *, replace: bool = False) -> dict[str, int]:
        """Write ``doc``: merged into what is stored (entities with the same name/id are
        replaced, others kept) or, with ``replace``, instead of it. The result is validated
        as a whole first. Returns counts per kind plus ``removed_devices``.

        Raises ConfigError (nothing written), StoreError.
        """
        for _attempt in range(10):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(registry_key("version"))
                    current = self.load()
                    final = RegistryDoc.from_dict(doc.to_dict() if replace else current.merged(doc),
                                                  "registry after import")
                    pipe.multi()
                    for kind in _KINDS:
                        pipe.delete(registry_key(kind))
                        items = {_key_of(kind, e): _to_json(kind, e) for e in getattr(final, kind)}
                        if items:
                            pipe.hset(registry_key(kind), mapping=items)
                    pipe.hset(registry_key("meta"), "default_region", final.default_region)
                    pipe.incr(registry_key("version"))
                    pipe.execute()
                except redis.WatchError:
                    continue
                except redis.RedisError as exc:
                    raise StoreError(f"redis: {exc}") from exc
            break
        else:
            raise StoreError("registry changed concurrently 10 times in a row; try again")
        removed = {d.id for d in current.devices} - {d.id for d in final.devices}
        self.store.register_many([final.entry(d) for d in final.devices], remove=sorted(removed))
        counts = {kind: len(getattr(final, kind)) for kind in _KINDS}
        counts["removed_devices"] = len(removed)
        return counts

    def change(self, edit: Any) -> RegistryDoc:
        """Apply ``edit(doc_dict) -> None`` (mutating the TOML-shaped dict of the stored
        registry), validate the result and store it. Returns the new registry.

        Raises ConfigError (nothing written), StoreError."""
        data = self.load().to_dict()
        edit(data)
        doc = RegistryDoc.from_dict(data, "registry")
        self.save(doc, replace=True)
        return doc

    def resolve(self, device_id: str) -> Resolved | None:
        """Device, worker, site and merged contacts for ``device_id``; None if unknown."""
        raw = self.store._call(self.r.hget, registry_key("devices"), device_id)
        if raw is not None:
            d = json.loads(raw)
            device = Device(d["id"], d.get("worker", ""), d.get("site", ""), d.get("account", ""),
                            d.get("zone"), d.get("language"))
        else:  # registered only as a pipeline entry (e.g. by `lonewatch provision`)
            entry = self.store.device(device_id)
            if entry is None:
                return None
            device = Device(device_id, entry.worker, entry.site, entry.account, entry.zone, entry.language)
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(registry_key("workers"), device.worker)
        pipe.hget(registry_key("sites"), device.site)
        w_raw, s_raw = self.store._call(pipe.execute)
        worker = _worker_from(json.loads(w_raw)) if w_raw else None
        site = _site_from(json.loads(s_raw)) if s_raw else None
        doc = RegistryDoc(workers=(worker,) if worker else (), sites=(site,) if site else ())
        entry = doc.entry(device)
        if raw is None and worker is not None and device.zone not in (None, worker.number):
            entry = replace(entry, zone=device.zone or 0)  # the ARC knows the zone it was given
        return Resolved(device, entry, worker, site, doc.contacts_for(device))


def _contacts_from(items: list[dict[str, Any]] | None) -> tuple[Contact, ...]:
    return tuple(Contact(**c) for c in items or ())


def _worker_from(d: dict[str, Any]) -> Worker:
    return Worker(d["name"], d["number"], d.get("language", "da"), _contacts_from(d.get("contacts")))


def _site_from(d: dict[str, Any]) -> Site:
    fields = {k: (tuple(v) if k == "voice_numbers" else v) for k, v in d.items() if k != "contacts"}
    return replace(Site(**fields), contacts=_contacts_from(d.get("contacts")))
