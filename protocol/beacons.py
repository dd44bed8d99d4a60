"""BLE location beacons on the wire: canonical beacon ids and their parsing (issue 12, SPEC §5b
"Place").

A beacon id names one beacon the same way on the device (what it heard), in the registry
(which room it hangs in) and in the alarm. Two advertisement formats are understood:

* **iBeacon** (Apple, manufacturer data of company 0x004C, type 0x02 length 0x15): a
  16-byte proximity UUID, a 16-bit major and a 16-bit minor. Canonical id
  ``ib:<uuid, lower-case, with dashes>:<major>:<minor>`` (decimal), e.g.
  ``ib:fda50693-a4e2-4fb1-afcf-c6eb07647825:1:17``.
* **Eddystone-UID** (Google, service data of UUID 0xFEAA, frame type 0x00): a 10-byte
  namespace and a 6-byte instance. Canonical id ``eddy:<namespace 20 hex>:<instance 12 hex>``
  (lower case), e.g. ``eddy:edd1ebeac04e5defa017:0000000000a1``.

Installers copy ids from a beacon vendor's app, which writes UUIDs with or without dashes and
in either case (the ``ib:``/``eddy:`` prefix too): :func:`normalize_beacon_id` accepts those spellings and returns the canonical
one; everything else is refused with the reason (:class:`protocol.errors.ValidationError`).

Pure code: no Bluetooth here (the scanner is :mod:`device.beacons`).
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from .errors import ValidationError

__all__ = ["BEACON_ID_MAX", "eddystone_id", "ibeacon_id", "normalize_beacon_id", "parse_eddystone_uid",
           "parse_ibeacon"]

#: Longest canonical beacon id (an iBeacon id with major and minor 65535 is 50 characters).
BEACON_ID_MAX: Final = 64
#: Bluetooth SIG company identifier of Apple (iBeacon manufacturer data).
APPLE_COMPANY_ID: Final = 0x004C
#: 16-bit service UUID of Eddystone, as bleak spells service-data keys.
EDDYSTONE_SERVICE_UUID: Final = "0000feaa-0000-1000-8000-00805f9b34fb"
IBEACON_TYPE: Final = 0x02
IBEACON_LENGTH: Final = 0x15
EDDYSTONE_UID_FRAME: Final = 0x00

_IB_RE = re.compile(r"ib:(?P<uuid>[0-9A-Fa-f-]{32,36}):(?P<major>[0-9]{1,5}):(?P<minor>[0-9]{1,5})", re.IGNORECASE)
_EDDY_RE = re.compile(r"eddy:(?P<ns>[0-9A-Fa-f]{20}):(?P<inst>[0-9A-Fa-f]{12})", re.IGNORECASE)


def ibeacon_id(proximity_uuid: bytes | str, major: int, minor: int) -> str:
    """The canonical id of an iBeacon. ``proximity_uuid`` as 16 bytes or any UUID spelling;
    ``major``/``minor`` 0..65535. Raises ValidationError."""
    try:
        u = uuid.UUID(bytes=bytes(proximity_uuid)) if isinstance(proximity_uuid, (bytes, bytearray)) \
            else uuid.UUID(proximity_uuid)
    except ValueError:
        raise ValidationError("beacon", f"not an iBeacon UUID: {proximity_uuid!r}") from None
    for name, value in (("major", major), ("minor", minor)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise ValidationError("beacon", f"iBeacon {name} must be 0..65535, got {value!r}")
    return f"ib:{u}:{major}:{minor}"


def eddystone_id(namespace: bytes | str, instance: bytes | str) -> str:
    """The canonical id of an Eddystone-UID beacon: 10-byte namespace, 6-byte instance
    (bytes or hex). Raises ValidationError."""
    ns = namespace.hex() if isinstance(namespace, (bytes, bytearray)) else namespace
    inst = instance.hex() if isinstance(instance, (bytes, bytearray)) else instance
    text = f"eddy:{ns}:{inst}"
    if not _EDDY_RE.fullmatch(text):
        raise ValidationError("beacon", f"Eddystone-UID needs a 10-byte namespace and a 6-byte instance: {text!r}")
    return text.lower()


def normalize_beacon_id(text: object, field: str = "beacon") -> str:
    """The canonical spelling of a beacon id (see the module docstring).

    Raises:
        ValidationError: ``field`` is not a beacon id (the message gives both shapes).
    """
    if not isinstance(text, str) or len(text) > BEACON_ID_MAX + 8:
        raise ValidationError(field, "must be a beacon id string")
    s = text.strip()
    m = _IB_RE.fullmatch(s)
    if m:
        try:
            return ibeacon_id(m["uuid"], int(m["major"]), int(m["minor"]))
        except ValidationError as exc:
            raise ValidationError(field, str(exc).partition(": ")[2] or str(exc)) from None
    m = _EDDY_RE.fullmatch(s)
    if m:
        return s.lower()
    raise ValidationError(field, f"not a beacon id: {text!r}; expected ib:<uuid>:<major>:<minor> "
                                 "or eddy:<namespace 20 hex>:<instance 12 hex>")


def parse_ibeacon(manufacturer_data: dict[int, bytes]) -> tuple[str, int] | None:
    """iBeacon id and calibrated TX power (dBm at 1 m) from advertisement manufacturer data
    (company id → payload, as bleak's ``AdvertisementData.manufacturer_data``), or None if
    it is no iBeacon. Layout after the company id: type 0x02, length 0x15, UUID (16),
    major (2, big-endian), minor (2), TX power (1, signed)."""
    data = manufacturer_data.get(APPLE_COMPANY_ID)
    if data is None or len(data) < 23 or data[0] != IBEACON_TYPE or data[1] != IBEACON_LENGTH:
        return None
    major = int.from_bytes(data[18:20], "big")
    minor = int.from_bytes(data[20:22], "big")
    tx = data[22] - 256 if data[22] > 127 else data[22]
    return ibeacon_id(bytes(data[2:18]), major, minor), tx


def parse_eddystone_uid(service_data: dict[str, bytes]) -> tuple[str, int] | None:
    """Eddystone-UID id and TX power (dBm at 0 m) from advertisement service data (UUID →
    payload), or None if it is no UID frame. Layout: frame type 0x00, TX power (1, signed),
    namespace (10), instance (6), 2 reserved bytes (often left out)."""
    data = next((v for k, v in service_data.items() if k.lower() == EDDYSTONE_SERVICE_UUID), None)
    if data is None or len(data) < 18 or data[0] != EDDYSTONE_UID_FRAME:
        return None
    tx = data[1] - 256 if data[1] > 127 else data[1]
    return eddystone_id(bytes(data[2:12]), bytes(data[12:18])), tx
