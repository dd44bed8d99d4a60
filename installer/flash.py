"""``lonewatch flash``: write a Raspberry Pi OS image to an SD card (or an image file), check
what landed, then put the device's configuration and a first-boot step into the card's FAT
boot partition (:mod:`installer.bootpart`).

Safety first — a wrong target destroys somebody's disk. :func:`probe_target` refuses:

* a partition (``/dev/sdb1``) instead of the whole card,
* a disk with anything mounted, used as swap or held by LVM/RAID/dm-crypt (``holders``),
* the disk that holds ``/``, ``/boot``, ``/usr`` or ``/var`` (the system disk),
* a disk smaller than the image, and the image file itself.

It reads ``/proc/self/mountinfo`` (device numbers, so ``/dev/root`` aliases do not hide a
mount), ``/proc/swaps`` and ``/sys/dev/block``. The block device is then opened with
``O_EXCL``, which the kernel refuses (EBUSY) for a mounted or otherwise claimed disk — a
second guard that does not depend on our parsing.

Images: ``.img`` as is, ``.img.xz`` decompressed on the fly with the standard library's
``lzma`` (a 400 MB download stays 400 MB on disk). ``--sha256`` checks the downloaded file
against the published checksum while it is read. After writing, the target is flushed, its
page cache dropped (``posix_fadvise DONTNEED``) and read back: the SHA-256 of what is on the
card must equal that of the decompressed image.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from protocol.errors import LonewatchError

__all__ = [
    "CHUNK",
    "FlashError",
    "Target",
    "TargetRefused",
    "WriteResult",
    "claim",
    "open_image",
    "probe_target",
    "read_back",
    "write_image",
]

CHUNK = 4 * 1024 * 1024
#: ``progress(n)`` is called with the number of bytes just done (click.progressbar.update).
Progress = Callable[[int], None]


class FlashError(LonewatchError, RuntimeError):
    """The image could not be read, written or verified."""


class TargetRefused(FlashError):
    """The target must not be written (mounted, system disk, partition, too small …)."""


@dataclass(frozen=True)
class Target:
    """A checked write target: ``kind`` is ``"file"`` or ``"block"``; ``size`` in bytes
    (None for a file); ``description`` for the confirmation prompt (model, size, removable)."""

    path: Path
    kind: str
    size: int | None
    description: str


# --------------------------------------------------------------------------- target checks


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _devnum(text: str) -> tuple[int, int] | None:
    major, sep, minor = text.partition(":")
    return (int(major), int(minor)) if sep and major.isdigit() and minor.isdigit() else None


def _mounted_devnums(proc_root: Path) -> set[tuple[int, int]]:
    nums = set()
    for line in _read(proc_root / "self" / "mountinfo").splitlines():
        fields = line.split()
        if len(fields) > 2 and (n := _devnum(fields[2])) is not None:
            nums.add(n)
    # /proc/mounts names the source device; resolve the ones that are block devices.
    for line in _read(proc_root / "mounts").splitlines():
        source = line.split(" ", 1)[0]
        if source.startswith("/dev/"):
            try:
                st = os.stat(source)
            except OSError:
                continue
            if stat.S_ISBLK(st.st_mode):
                nums.add((os.major(st.st_rdev), os.minor(st.st_rdev)))
    return nums


def _swap_devnums(proc_root: Path) -> set[tuple[int, int]]:
    nums = set()
    for line in _read(proc_root / "swaps").splitlines()[1:]:
        try:
            st = os.stat(line.split()[0])
        except (OSError, IndexError):
            continue
        if stat.S_ISBLK(st.st_mode):
            nums.add((os.major(st.st_rdev), os.minor(st.st_rdev)))
    return nums


def _disk_of(devnum: tuple[int, int], sys_root: Path) -> Path | None:
    """The /sys directory of the whole disk that device ``devnum`` belongs to; walks down
    through device-mapper/md ``slaves`` is done by the caller."""
    link = sys_root / "dev" / "block" / f"{devnum[0]}:{devnum[1]}"
    try:
        node = link.resolve(strict=True)
    except OSError:
        return None
    return node.parent if (node / "partition").exists() else node


def _system_disks(sys_root: Path, proc_root: Path) -> set[Path]:
    """Disks under /, /boot, /usr, /var (following dm/md ``slaves`` to the real disks)."""
    disks: set[Path] = set()
    todo: list[Path] = []
    for mount in ("/", "/boot", "/boot/firmware", "/usr", "/var"):
        try:
            dev = os.stat(mount).st_dev
        except OSError:
            continue
        disk = _disk_of((os.major(dev), os.minor(dev)), sys_root)
        if disk is not None:
            todo.append(disk)
    while todo:
        disk = todo.pop()
        if disk in disks:
            continue
        disks.add(disk)
        slaves = disk / "slaves"
        if slaves.is_dir():
            for s in slaves.iterdir():
                d = _disk_of(_devnum(_read(s.resolve() / "dev")) or (0, 0), sys_root)
                if d is not None:
                    todo.append(d)
    return disks


def probe_target(path: Path, *, image: Path | None = None, image_size: int | None = None,
                 sys_root: Path = Path("/sys"), proc_root: Path = Path("/proc")) -> Target:
    """Check that ``path`` may be overwritten with an image of ``image_size`` bytes.

    A missing path or a regular file is an image-file target. A block device must be a whole
    disk, unmounted, not swap, not held, not the system disk, and big enough.

    Raises:
        TargetRefused: with the reason and what to do instead.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise TargetRefused(f"{path.parent} does not exist") from None
        return Target(path, "file", None, f"new image file {path}")
    if stat.S_ISREG(st.st_mode):
        if image is not None and os.path.samefile(path, image):
            raise TargetRefused(f"{path} is the image itself")
        return Target(path, "file", None, f"image file {path} ({st.st_size} bytes, will be replaced)")
    if not stat.S_ISBLK(st.st_mode):
        raise TargetRefused(f"{path} is neither a block device (SD card) nor a regular file")

    devnum = (os.major(st.st_rdev), os.minor(st.st_rdev))
    node = (sys_root / "dev" / "block" / f"{devnum[0]}:{devnum[1]}")
    try:
        node = node.resolve(strict=True)
    except OSError:
        raise TargetRefused(f"{path}: no entry in {sys_root}/dev/block; cannot check that it is safe") from None
    if (node / "partition").exists():
        raise TargetRefused(f"{path} is a partition of /dev/{node.parent.name}; give the whole card "
                            f"(/dev/{node.parent.name}), the image brings its own partition table")
    name = node.name
    parts = [p for p in node.iterdir() if (p / "partition").exists()]
    numbers = {devnum} | {n for p in parts if (n := _devnum(_read(p / "dev")))}

    if node in _system_disks(sys_root, proc_root):
        raise TargetRefused(f"{path} is the system disk (it holds / or /boot); refusing to overwrite it")
    mounted = numbers & _mounted_devnums(proc_root)
    if mounted:
        raise TargetRefused(f"{path} is mounted ({_names(mounted, node, parts)}); unmount every partition first, "
                            f"e.g. `sudo umount /dev/{name}*` (and eject it in the file manager)")
    swap = numbers & _swap_devnums(proc_root)
    if swap:
        raise TargetRefused(f"{path} is in use as swap ({_names(swap, node, parts)}); `sudo swapoff` it first")
    held = [d.name for d in [node, *parts] if (d / "holders").is_dir() and any((d / "holders").iterdir())]
    if held:
        raise TargetRefused(f"{path} is in use by LVM, RAID or dm-crypt ({', '.join(held)}); release it first")

    sectors = _read(node / "size")
    size = int(sectors) * 512 if sectors.isdigit() else None
    if size is not None and image_size is not None and size < image_size:
        raise TargetRefused(f"{path} holds {size / 1e9:.1f} GB, the image needs {image_size / 1e9:.1f} GB")
    model = " ".join(filter(None, (_read(node / "device" / "vendor"), _read(node / "device" / "model"))))
    removable = _read(node / "removable") == "1"
    desc = f"/dev/{name}: {model or 'unknown model'}, {size / 1e9:.1f} GB" if size else f"/dev/{name}"
    desc += ", removable" if removable else ", NOT marked removable"
    return Target(path, "block", size, desc)


def _names(nums: set[tuple[int, int]], node: Path, parts: list[Path]) -> str:
    by_num = {_devnum(_read(p / "dev")): p.name for p in [node, *parts]}
    return ", ".join(sorted(f"/dev/{by_num.get(n, f'{n[0]}:{n[1]}')}" for n in nums))


# --------------------------------------------------------------------------- image


class _Counting:
    """A raw file that counts the bytes read and hashes them (the download's checksum)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.count, self.sha = fh, 0, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.count += len(data)
        self.sha.update(data)
        return data

    def readinto(self, b) -> int:  # lzma reads with readinto
        n = self.fh.readinto(b)
        if n:
            self.count += n
            self.sha.update(memoryview(b)[:n])
        return n or 0

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.fh.close()


@dataclass
class ImageReader:
    """An open image: :meth:`read` yields decompressed bytes; :attr:`consumed` counts the
    file's bytes read so far (for the progress bar, which runs over :attr:`file_size`);
    :meth:`file_sha256` is the checksum of the file as downloaded (complete after EOF)."""

    path: Path
    file_size: int
    _raw: _Counting
    _stream: BinaryIO

    @property
    def consumed(self) -> int:
        return self._raw.count

    def read(self, n: int) -> bytes:
        try:
            return self._stream.read(n)
        except (lzma.LZMAError, EOFError) as exc:
            raise FlashError(f"{self.path}: broken xz data after {self.consumed} bytes ({exc}); download it again") from exc

    def file_sha256(self) -> str:
        while self._raw.read(CHUNK):  # hash anything the decompressor did not need
            pass
        return self._raw.sha.hexdigest()

    def close(self) -> None:
        self._stream.close()
        self._raw.close()

    def __enter__(self) -> "ImageReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_image(path: Path) -> ImageReader:
    """Open ``.img`` or ``.img.xz`` (``.xz``).

    Raises:
        FlashError: missing/unreadable, or not an image we can read (e.g. ``.zip``).
    """
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".img") or name.endswith(".xz")):
        raise FlashError(f"{path}: expected a .img or .img.xz file (unzip .zip images first)")
    try:
        raw = _Counting(open(path, "rb"))
    except OSError as exc:
        raise FlashError(f"{path}: {exc.strerror}") from exc
    size = os.fstat(raw.fh.fileno()).st_size
    stream: BinaryIO = lzma.LZMAFile(raw, "rb", format=lzma.FORMAT_XZ) if name.endswith(".xz") else raw  # type: ignore[assignment,arg-type]
    return ImageReader(path, size, raw, stream)


@dataclass(frozen=True)
class WriteResult:
    """``length`` bytes written (decompressed image size) and their SHA-256 (hex);
    ``file_sha256`` of the image file as read (the download's checksum)."""

    length: int
    sha256: str
    file_sha256: str


def _open_target(target: Target, *, exclusive: bool = True) -> int:
    if target.kind == "file":
        return os.open(target.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        # O_EXCL on a block device: the kernel says EBUSY if it is mounted or claimed.
        return os.open(target.path, os.O_WRONLY | (os.O_EXCL if exclusive else 0) | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 16:  # EBUSY
            raise TargetRefused(f"{target.path} is busy (mounted or in use); unmount it first") from exc
        raise FlashError(f"{target.path}: cannot open for writing: {exc.strerror} (try sudo)") from exc


@contextlib.contextmanager
def claim(target: Target) -> Iterator[bool]:
    """Hold the block device exclusively (``O_EXCL``) for the whole flash: while it is held
    the kernel refuses to mount its partitions, so a desktop's automounter cannot mount the
    freshly written boot partition while we still write into it, and the partition rescan
    waits until we are done. Yields True when a claim is held (pass ``claimed=True`` to
    :func:`write_image`); a no-op for image files.

    Raises:
        TargetRefused: the device is busy (mounted, or claimed by another program).
    """
    if target.kind != "block":
        yield False
        return
    fd = _open_target(target)
    try:
        yield True
    finally:
        os.close(fd)


def write_image(image: Path, target: Target, *, progress: Progress | None = None,
                expect_sha256: str | None = None, claimed: bool = False) -> WriteResult:
    """Write the (decompressed) image to ``target`` and fsync. ``progress`` gets the number
    of *image-file* bytes consumed per step (so it matches ``ImageReader.file_size``);
    ``claimed``: the caller holds :func:`claim` on the device.

    Raises:
        FlashError: unreadable/broken image, write error, or ``expect_sha256`` does not match
            the image file (then the target has been written with a bad image: do not use it).
        TargetRefused: the block device is busy.
    """
    sha = hashlib.sha256()
    length = 0
    with open_image(image) as reader:
        fd = _open_target(target, exclusive=not claimed)
        try:
            last = 0
            while chunk := reader.read(CHUNK):
                view = memoryview(chunk)
                while view:
                    try:
                        n = os.write(fd, view)
                    except OSError as exc:
                        raise FlashError(f"{target.path}: write failed after {length} bytes: {exc.strerror}") from exc
                    view = view[n:]
                    length += n
                sha.update(chunk)
                if progress is not None:
                    progress(reader.consumed - last)
                    last = reader.consumed
            os.fsync(fd)
        finally:
            os.close(fd)
        file_sha = reader.file_sha256()
    if length == 0:
        raise FlashError(f"{image}: the image is empty")
    if expect_sha256 is not None and file_sha != expect_sha256.lower():
        raise FlashError(f"{image}: SHA-256 is {file_sha}, expected {expect_sha256.lower()}: the download is "
                         f"damaged or not the published image; {target.path} now holds it — do not use the card")
    return WriteResult(length, sha.hexdigest(), file_sha)


def read_back(target: Path, length: int, *, progress: Progress | None = None) -> str:
    """SHA-256 of the first ``length`` bytes of ``target``, read from the device itself
    (the page cache is dropped first, so a card that silently lost writes is caught).

    Raises:
        FlashError: unreadable or shorter than ``length``.
    """
    sha = hashlib.sha256()
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise FlashError(f"{target}: cannot read back: {exc.strerror}") from exc
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        left = length
        while left:
            data = os.read(fd, min(CHUNK, left))
            if not data:
                raise FlashError(f"{target}: only {length - left} of {length} bytes could be read back")
            sha.update(data)
            left -= len(data)
            if progress is not None:
                progress(len(data))
    finally:
        os.close(fd)
    return sha.hexdigest()
