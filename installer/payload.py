"""What ``lonewatch flash`` puts on a card besides the device's own config: each file has one
source in the tree, reached here as package data.

* systemd units — ``systemd/`` (package ``installer.units``, mapped in pyproject.toml);
* the udev rule naming the modem port — ``hardware/`` (package ``installer.udev``);
* the first-boot scripts — ``installer/files/``.

Raises :class:`FileNotFoundError` for a name that is not shipped.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The source tree (a clone or an editable install); a wheel has the mapped packages instead.
_TREE = Path(__file__).resolve().parent.parent

#: name → (the package holding it in a wheel, its folder in the source tree).
_SOURCES = {
    "lonewatch-device.service": ("installer.units", "systemd"),
    "lonewatch-install.service": ("installer.units", "systemd"),
    "lonewatch-relay.service": ("installer.units", "systemd"),
    "99-lonewatch-modem.rules": ("installer.udev", "hardware"),
    "lonewatch-firstboot.sh": ("installer", "installer/files"),
    "lonewatch-firstrun.sh": ("installer", "installer/files"),
    "lonewatch-install.sh": ("installer", "installer/files"),
}


def read_payload(name: str) -> bytes:
    """The bytes of the shipped file ``name`` (one of :data:`_SOURCES`).

    Raises:
        FileNotFoundError: ``name`` is not a shipped file, or the installation lacks it.
    """
    if name not in _SOURCES:
        raise FileNotFoundError(f"{name}: not a file lonewatch ships")
    package, folder = _SOURCES[name]
    in_tree = _TREE / folder / name
    if in_tree.is_file():
        return in_tree.read_bytes()
    base = resources.files(package)
    path = base / "files" / name if package == "installer" else base / name
    if not path.is_file():
        raise FileNotFoundError(f"{name}: missing from the installed package {package}")
    return path.read_bytes()
