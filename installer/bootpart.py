"""The FAT boot partition of a Raspberry Pi OS card or image: find it in the MBR, read and
write files in it, and add what a lonewatch device needs on first boot (``lonewatch flash``).

FAT access uses GNU **mtools** (``mcopy``/``mmd``/``mdir``, Debian package ``mtools``) on
``<card or image>@@<byte offset>``: no root, no loop device, no mount, the same on an image
file and on ``/dev/sdX``. mtools is what Buildroot's genimage and Yocto's wic use to fill
boot partitions; the pure-Python alternative (pyfatfs) depends on PyFilesystem2, unreleased
since 2022 and built on ``pkg_resources``, which current setuptools no longer ships.

What goes into the partition (``lonewatch/`` folder)::

    device.toml, ca.crt [client.crt client.key]    config and credentials (provision's --out)
    lonewatch-device.service, lonewatch-install.service, 99-lonewatch-modem.rules
    firstboot.sh    run once as root: user, files, units (no network needed)
    install.sh      run by lonewatch-install.service once the network is up: venv, pip
                    install ONLY from wheels/ (never a name from an index), enable + start
    wheels/*.whl    the lonewatch wheel + the device's dependencies (installer/supply.py;
                    ``lonewatch flash`` always puts them), requirements-<arch>.txt hash-pinned

and the hook that runs ``firstboot.sh``: cloud-init ``user-data`` (``runcmd``) on images that
have a ``user-data`` file (Raspberry Pi OS from late 2025), otherwise ``firstrun.sh`` started
by ``systemd.run=`` on the kernel command line (the mechanism Raspberry Pi Imager used for
Bookworm). ``firstboot.sh`` removes the secrets from the FAT partition when it has installed
them (anyone holding the card can read FAT).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import LonewatchError

from .payload import read_payload

__all__ = [
    "BootPartitionError",
    "FatImage",
    "Partition",
    "boot_partition",
    "install_lonewatch",
    "make_test_image",
    "read_partitions",
]

SECTOR = 512
#: MBR partition types holding FAT: FAT12, FAT16 <32M, FAT16, FAT32 CHS, FAT32 LBA, FAT16 LBA.
FAT_TYPES = frozenset({0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E})
FIRSTRUN_ARGS = "systemd.run={boot}/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
SERIAL_CONSOLE_RE = re.compile(r"\s*\bconsole=(serial0|serial1|ttyAMA0|ttyS0),\d+\b")
#: Files that hold secrets; firstboot.sh shreds them from the FAT partition.
SECRET_FILES = ("device.toml", "client.key")


class BootPartitionError(LonewatchError, RuntimeError):
    """No usable FAT boot partition, an mtools failure, or mtools missing."""


@dataclass(frozen=True)
class Partition:
    """One MBR entry: ``number`` 1–4, ``type_id`` (0x0C = FAT32 LBA), ``start``/``size`` in bytes."""

    number: int
    type_id: int
    start: int
    size: int


def read_partitions(path: Path) -> list[Partition]:
    """The primary partitions of the MBR at the start of ``path`` (image file or disk).

    Raises:
        BootPartitionError: no MBR signature, or a GPT disk (Raspberry Pi OS uses MBR).
    """
    with open(path, "rb") as fh:
        mbr = fh.read(SECTOR)
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise BootPartitionError(f"{path}: no MBR partition table (is this a Raspberry Pi OS image?)")
    parts = []
    for i in range(4):
        entry = mbr[446 + 16 * i: 446 + 16 * (i + 1)]
        type_id = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if type_id == 0xEE:
            raise BootPartitionError(f"{path}: GPT disk; Raspberry Pi OS images use an MBR partition table")
        if type_id and count:
            parts.append(Partition(i + 1, type_id, start * SECTOR, count * SECTOR))
    return parts


def boot_partition(path: Path) -> Partition:
    """The first FAT partition whose boot sector looks like FAT.

    Raises:
        BootPartitionError: none found.
    """
    for part in read_partitions(path):
        if part.type_id not in FAT_TYPES:
            continue
        with open(path, "rb") as fh:
            fh.seek(part.start)
            boot = fh.read(SECTOR)
        if boot[510:512] == b"\x55\xaa" and (b"FAT" in boot[0x36:0x3E] or b"FAT" in boot[0x52:0x5A]):
            return part
    raise BootPartitionError(f"{path}: no FAT boot partition found in the partition table")


def _mtool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise BootPartitionError(f"{name} (GNU mtools) is not installed; install it with: sudo apt-get install -y mtools "
                                 "(macOS: brew install mtools)")
    return found


class FatImage:
    """Files in the FAT filesystem at byte ``offset`` of ``path`` through mtools. Paths are
    ``/``-separated inside the partition (``"lonewatch/device.toml"``)."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path, self.offset = Path(path), offset
        self._env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

    @property
    def _image(self) -> str:
        return f"{self.path}@@{self.offset}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run([_mtool(tool), "-i", self._image, *args], capture_output=True, env=self._env, timeout=120)
        if check and done.returncode != 0:
            raise BootPartitionError(f"{tool} {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
        return done

    def exists(self, name: str) -> bool:
        return self._run("mdir", "-b", f"::/{name}", check=False).returncode == 0

    def listdir(self, name: str = "") -> list[str]:
        """Names in a folder (files and folders, folders without a trailing slash)."""
        out = self._run("mdir", "-b", f"::/{name}").stdout.decode()
        prefix = f"::/{name.strip('/')}/" if name.strip("/") else "::/"
        return sorted(line.rstrip("/")[len(prefix):] for line in out.splitlines() if line.startswith(prefix))

    def read(self, name: str) -> bytes:
        return self._run("mcopy", "-n", f"::/{name}", "-").stdout

    def mkdir(self, name: str) -> None:
        if not self.exists(name):
            self._run("mmd", f"::/{name}")

    def write(self, name: str, data: bytes) -> None:
        """Create or replace a file; the data passes through a private 0600 temp file."""
        with tempfile.TemporaryDirectory(prefix="lonewatch-fat-") as tmp:
            src = Path(tmp) / "data"
            fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            self._run("mcopy", "-o", "-n", str(src), f"::/{name}")
        if self.read(name) != data:
            raise BootPartitionError(f"{self.path}: ::/{name} reads back different from what was written")

    def delete(self, name: str) -> None:
        self._run("mdel", f"::/{name}")


# --------------------------------------------------------------------------- lonewatch files


def _template(name: str, **values: str) -> bytes:
    text = read_payload(name).decode()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text.encode()


def _cmdline(text: str, *, hook: str | None, serial_console_off: bool) -> str:
    line = " ".join(text.split())  # one line, single spaces (the firmware reads one line)
    if serial_console_off:
        line = SERIAL_CONSOLE_RE.sub("", line).strip()
    if hook and hook not in line:
        if "systemd.run=" in line:
            raise BootPartitionError("cmdline.txt already runs another first-boot script (systemd.run=); "
                                     "flash a fresh image")
        line = f"{line} {hook}"
    return line + "\n"


def _config_txt(text: str) -> str:
    """Add ``enable_uart=1`` and ``dtoverlay=disable-bt`` (the modem gets the PL011 UART)
    in an ``[all]`` section at the end, unless present."""
    lines = [ln.strip() for ln in text.splitlines()]
    wanted = [w for w in ("enable_uart=1", "dtoverlay=disable-bt") if w not in lines]
    if not wanted:
        return text
    sections = [ln for ln in lines if ln.startswith("[")]
    head = "\n" if sections and sections[-1] == "[all]" else "\n[all]\n"
    return (text.rstrip("\n") + "\n" + head + "# lonewatch: the modem HAT on the UART (hardware/README.md)\n"
            + "\n".join(wanted) + "\n")


def install_lonewatch(target: Path, config: Path, *, wheels: Sequence[Path] = (),
                      extra: Sequence[tuple[Path, str]] = (), uart_modem: bool = False,
                      boot_mount: str = "/boot/firmware", version: str = "") -> list[str]:
    """Put the device's config, credentials and first-boot step into the boot partition.

    ``config`` is provision's device.toml; ``ca.crt``, ``client.crt`` and ``client.key``
    next to it are taken along if present. ``extra`` ``(source, name)`` pairs are copied to
    the partition root (e.g. ``userconf.txt``, ``ssh``). ``uart_modem`` switches the UART on,
    Bluetooth off and the serial console off (a login prompt on the modem's UART breaks AT
    parsing, SPEC §7). Returns the partition paths written, each read back and compared.

    Raises:
        BootPartitionError: no FAT partition / not a Raspberry Pi OS boot partition / mtools
            missing or failing / another first-boot script already in cmdline.txt.
    """
    part = boot_partition(target)
    fat = FatImage(target, part.start)
    if not fat.exists("cmdline.txt") or not fat.exists("config.txt"):
        raise BootPartitionError(f"{target}: the boot partition has no cmdline.txt/config.txt; "
                                 "is this a Raspberry Pi OS image?")
    written: list[str] = []

    def put(name: str, data: bytes) -> None:
        fat.write(name, data)
        written.append(name)

    fat.mkdir("lonewatch")
    put("lonewatch/device.toml", Path(config).read_bytes())
    for cred in ("ca.crt", "client.crt", "client.key"):
        src = Path(config).with_name(cred)
        if src.exists():
            put(f"lonewatch/{cred}", src.read_bytes())
    for name in ("lonewatch-device.service", "lonewatch-install.service", "99-lonewatch-modem.rules"):
        put(f"lonewatch/{name}", read_payload(name))
    put("lonewatch/firstboot.sh", _template("lonewatch-firstboot.sh"))
    put("lonewatch/install.sh", _template("lonewatch-install.sh", VERSION=version))
    if wheels:
        fat.mkdir("lonewatch/wheels")
        for wheel in wheels:  # .whl files and hash-pinned requirements-<arch>.txt (installer/supply.py)
            put(f"lonewatch/wheels/{Path(wheel).name}", Path(wheel).read_bytes())
    for src, name in extra:
        put(name.lstrip("/"), Path(src).read_bytes())

    if fat.exists("user-data"):
        current = fat.read("user-data").decode(errors="replace")
        put("user-data", _user_data(current, boot_mount).encode())
        hook = None
    else:
        put("firstrun.sh", _template("lonewatch-firstrun.sh"))
        hook = FIRSTRUN_ARGS.format(boot=boot_mount)
    cmdline = fat.read("cmdline.txt").decode()
    new_cmdline = _cmdline(cmdline, hook=hook, serial_console_off=uart_modem)
    if new_cmdline != cmdline:
        put("cmdline.txt", new_cmdline.encode())
    if uart_modem:
        cfg = fat.read("config.txt").decode()
        new_cfg = _config_txt(cfg)
        if new_cfg != cfg:
            put("config.txt", new_cfg.encode())
    return written


def _user_data(current: str, boot_mount: str) -> str:
    """cloud-init user-data with a ``runcmd`` entry that runs firstboot.sh: appended to a
    document without ``runcmd``; an existing ``runcmd`` is refused (YAML is not merged by hand)."""
    command = f"  - [bash, {boot_mount}/lonewatch/firstboot.sh]"
    if command in current:
        return current
    meaningful = [ln for ln in current.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if any(ln.startswith("runcmd:") for ln in meaningful):
        raise BootPartitionError("user-data already has a runcmd section; add this line to it by hand:\n" + command)
    head = current if current.startswith("#cloud-config") else "#cloud-config\n" + current
    return head.rstrip("\n") + "\n# lonewatch: install the device service on first boot\nruncmd:\n" + command + "\n"


# --------------------------------------------------------------------------- test images


PI_CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes "
              "rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n")
PI_CONFIG = "# For more options and information see\n# http://rptl.io/configtxt\ndtparam=audio=on\ncamera_auto_detect=1\n\n[all]\n"


def make_test_image(path: Path, *, size_mb: int = 44, boot_mb: int = 36, fat32: bool = True,
                    cloud_init: bool = False) -> Path:
    """A small stand-in for a Raspberry Pi OS image: an MBR (disk signature, partition 1 FAT
    at 4 MiB like Pi OS, partition 2 Linux after it), a FAT filesystem made by ``mformat``
    with Pi OS's ``cmdline.txt`` and ``config.txt`` (and an empty cloud-init ``user-data``
    with ``cloud_init``). For the tests and ``lonewatch lab``; the file is sparse.

    Raises:
        BootPartitionError: mtools missing; ValueError: sizes do not fit (FAT32 needs ≥ 33 MB).
    """
    start = 4 * 1024 * 1024
    boot = boot_mb * 1024 * 1024
    total = size_mb * 1024 * 1024
    if start + boot >= total or (fat32 and boot_mb < 33):
        raise ValueError("sizes do not fit (FAT32 needs a boot partition of at least 33 MB)")
    mbr = bytearray(SECTOR)
    struct.pack_into("<I", mbr, 440, 0x4E639091)
    entries = [(0x0C if fat32 else 0x0E, start, boot), (0x83, start + boot, total - start - boot)]
    for i, (type_id, first, size) in enumerate(entries):
        off = 446 + 16 * i
        mbr[off + 1:off + 4] = b"\xfe\xff\xff"  # CHS: use LBA
        mbr[off + 4] = type_id
        mbr[off + 5:off + 8] = b"\xfe\xff\xff"
        struct.pack_into("<II", mbr, off + 8, first // SECTOR, size // SECTOR)
    mbr[510:512] = b"\x55\xaa"
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(mbr)
        fh.truncate(total)
    args = ["-F"] if fat32 else []
    done = subprocess.run([_mtool("mformat"), "-i", f"{path}@@{start}", *args, "-T", str(boot // SECTOR), "-v", "bootfs", "::"],
                          capture_output=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}, timeout=60)  # fmt: skip
    if done.returncode != 0:
        raise BootPartitionError(f"mformat failed: {done.stderr.decode(errors='replace').strip()}")
    fat = FatImage(path, start)
    fat.write("cmdline.txt", PI_CMDLINE.encode())
    fat.write("config.txt", PI_CONFIG.encode())
    if cloud_init:
        fat.write("user-data", b"#cloud-config\n# This file is used by cloud-init on first boot.\n")
    return path
