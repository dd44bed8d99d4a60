"""``[voice]`` numbers for ``lonewatch provision`` (issue 11): the registry's voice lines of the
device's ARC account and site become ``[voice] numbers`` (called in order for listen-in), its
contacts' phones ``[voice] callback_numbers`` (answered during an alarm).

The device need not be registered yet: the lookup uses the request's worker, site and account
(or the account the registry has for the device). Without a registry (no Redis URL) or when it
cannot be read, nothing is changed here — registering the device then fails with the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from protocol.configfile import ConfigError

log = logging.getLogger(__name__)

__all__ = ["voice_settings"]


def voice_settings(req: Any) -> dict[str, list[str]]:
    """``{"numbers": [...], "callback_numbers": [...]}`` for ``req`` (a
    :class:`installer.provision.ProvisionRequest`) from the relay registry; ``{}`` when there is
    no registry, it cannot be read, or it has no voice numbers for this device."""
    if not req.redis_url:
        return {}
    from relay.registry import Device, RegistryStore
    from relay.store import Store, StoreError

    try:
        doc = RegistryStore(Store.from_url(req.redis_url)).load()
    except (StoreError, ConfigError) as exc:
        log.warning("registry unreadable, [voice] numbers not filled in: %s", exc)
        return {}
    known = doc.device(req.device_id)
    account = (req.account or (known.account if known else "")).upper()
    device = Device(req.device_id, req.worker, req.site, account)
    numbers = list(doc.voice_numbers_for(device))
    callback = [c.phone for c in doc.contacts_for(device) if c.phone and c.phone not in numbers]
    out: dict[str, list[str]] = {}
    if numbers:
        out["numbers"] = numbers
    if callback:
        out["callback_numbers"] = callback
    return out
