"""Finding the modem's AT port again after USB re-enumeration (SPEC §2, §7).

A USB modem that resets (brown-out, firmware crash, power-cycle) comes back as a *new* set of
``/dev/ttyUSB*`` nodes, often under other numbers: the AT port that was ``/dev/ttyUSB2`` may now
be ``/dev/ttyUSB3``. Two ways to name the port so the driver finds it again:

* a **stable udev name** (the recommended install, ``/dev/lonewatch-modem`` made by a udev rule
  on the USB vendor/product id and interface number, which also sets
  ``ENV{ID_MM_DEVICE_IGNORE}="1"``): the path stays the same, the node behind it changes;
* a **USB id spec** ``usb:VID:PID[:INTERFACE]`` in hex, e.g. ``usb:1e0e:9001:02`` for the
  SIM7600 AT port or ``usb:2c7c:0125:02`` for the Quectel EC25 AT port: looked up with
  ``serial.tools.list_ports`` every time the port is opened.

A plain device path (``/dev/ttyUSB2``) works too: on the first successful open the locator
remembers that node's USB identity and, when the path is gone later, looks the identity up.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["PortLocator", "UsbIdentity", "parse_usb_spec"]

_USB_SPEC = re.compile(r"^usb:([0-9a-fA-F]{4}):([0-9a-fA-F]{4})(?::([0-9a-fA-F]{1,2}))?$")


@dataclass(frozen=True)
class UsbIdentity:
    """A USB serial interface: vendor id, product id (ints) and interface number (None = any)."""

    vid: int
    pid: int
    interface: int | None = None

    def matches(self, info: Any) -> bool:
        """True if a ``serial.tools.list_ports`` entry is this interface."""
        if getattr(info, "vid", None) != self.vid or getattr(info, "pid", None) != self.pid:
            return False
        return self.interface is None or interface_of(info) == self.interface


def interface_of(info: Any) -> int | None:
    """USB interface number of a list_ports entry, from its ``location`` (``"1-1.3:1.2"`` → 2)."""
    location = getattr(info, "location", None) or ""
    _, sep, tail = location.rpartition(":")
    if not sep:
        return None
    _, _, number = tail.rpartition(".")
    return int(number) if number.isdigit() else None


def parse_usb_spec(spec: str) -> UsbIdentity | None:
    """``"usb:1e0e:9001:02"`` → UsbIdentity(0x1e0e, 0x9001, 2); None for anything else."""
    m = _USB_SPEC.match(spec)
    if not m:
        return None
    return UsbIdentity(int(m.group(1), 16), int(m.group(2), 16),
                       int(m.group(3), 16) if m.group(3) else None)


def _default_comports() -> list[Any]:
    from serial.tools import list_ports

    return list(list_ports.comports())


class PortLocator:
    """Turns the configured port (path or ``usb:`` spec) into the device node to open now.

    Args:
        spec: ``/dev/lonewatch-modem``, ``/dev/ttyUSB2`` or ``usb:VID:PID[:IF]``.
        comports: returns the current ``serial.tools.list_ports`` entries (tests inject a fake,
            since a pty is not a USB device).
    """

    def __init__(self, spec: str, comports: Callable[[], Iterable[Any]] | None = None) -> None:
        self.spec = spec
        self._comports = comports or _default_comports
        self.identity: UsbIdentity | None = parse_usb_spec(spec)
        self._fixed = self.identity is not None

    def locate(self) -> str:
        """The device node to open now. For a ``usb:`` spec, or a plain path that has vanished
        after its identity was learnt, the node is looked up by USB identity; otherwise the
        configured path is returned as it is (opening it then tells whether it exists)."""
        if self.identity is not None and (self._fixed or not os.path.exists(self.spec)):
            found = self._find(self.identity)
            if found:
                if found != self.spec:
                    log.info("modem port %s found at %s", self.spec, found)
                return found
        return self.spec

    def learn(self, opened: str) -> None:
        """Remember the USB identity of the node just opened (plain paths only; best effort)."""
        if self._fixed:
            return
        real = os.path.realpath(opened)
        try:
            for info in self._comports():
                if os.path.realpath(getattr(info, "device", "")) == real and getattr(info, "vid", None):
                    self.identity = UsbIdentity(info.vid, info.pid, interface_of(info))
                    return
        except Exception:  # noqa: BLE001 - discovery is best effort, never fatal
            log.debug("could not list serial ports", exc_info=True)

    def _find(self, identity: UsbIdentity) -> str | None:
        try:
            candidates = sorted((i for i in self._comports() if identity.matches(i)),
                                key=lambda i: getattr(i, "device", ""))
        except Exception:  # noqa: BLE001
            log.warning("could not list serial ports while looking for the modem", exc_info=True)
            return None
        return candidates[0].device if candidates else None
