"""MQTT topic layout of lonewatch (SPEC §2, §3).

``lonewatch/<device_id>/<channel>`` where channel is one of:

=========  ================  =====  ========  ==========================================
channel    direction         QoS    retained  payload
=========  ================  =====  ========  ==========================================
event      device → relay    1      no        :class:`protocol.messages.Event`
alive      device → relay    1      no        :class:`protocol.messages.Alive`
status     device → relay    1      yes       :class:`protocol.messages.Status` (LWT too)
ack        relay → device    1      no        :class:`protocol.messages.Ack`
=========  ================  =====  ========  ==========================================
"""

from __future__ import annotations

import re
from typing import Final, Literal

from .errors import ValidationError

PREFIX: Final = "lonewatch"
Channel = Literal["event", "alive", "status", "ack"]
CHANNELS: Final[tuple[str, ...]] = ("event", "alive", "status", "ack")
#: Device ids: lower-case letters, digits and ``-``, 3–32 characters, starting alphanumeric.
DEVICE_ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{2,31}$")

#: What the relay subscribes to (device → relay channels), as MQTT filters.
RELAY_FILTERS: Final[tuple[str, ...]] = (
    f"{PREFIX}/+/event",
    f"{PREFIX}/+/alive",
    f"{PREFIX}/+/status",
)


def check_device_id(device_id: str, field: str = "device") -> str:
    """Return ``device_id`` if it is a valid device id.

    Raises:
        ValidationError: if it does not match :data:`DEVICE_ID_RE`.
    """
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise ValidationError(field, f"device id must match {DEVICE_ID_RE.pattern}, got {device_id!r}")
    return device_id


def topic(device_id: str, channel: Channel) -> str:
    """Build ``lonewatch/<device_id>/<channel>``.

    Raises:
        ValidationError: bad device id or unknown channel.
    """
    check_device_id(device_id)
    if channel not in CHANNELS:
        raise ValidationError("topic", f"unknown channel {channel!r}")
    return f"{PREFIX}/{device_id}/{channel}"


def shared(filter_: str, group: str) -> str:
    """MQTT v5 shared-subscription filter ``$share/<group>/<filter>`` (SPEC §3 scale-out)."""
    return f"$share/{group}/{filter_}"


def parse_topic(name: str) -> tuple[str, str]:
    """Split a lonewatch topic into ``(device_id, channel)``.

    Raises:
        ValidationError: field ``topic`` when the name is not ``lonewatch/<id>/<channel>``.
    """
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != PREFIX or parts[2] not in CHANNELS:
        raise ValidationError("topic", f"not a lonewatch topic: {name!r}")
    check_device_id(parts[1], "topic")
    return parts[1], parts[2]
