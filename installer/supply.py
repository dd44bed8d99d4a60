"""The device's software supply for ``lonewatch flash`` (issue 15, "Supply chain of the device"):
the lonewatch wheel built from the very source the running CLI was installed from, plus the
``device`` extra's runtime dependencies (and ``click`` for the on-device ``lonewatch``
commands) as wheels for the Pi, so the first boot installs **only** from the card:
``pip install --no-index --find-links <card>/lonewatch/wheels "lonewatch[device]==VERSION"``.

Targets (the Pi Zero 2 W runs Python 3.11 on Raspberry Pi OS Bookworm/Trixie):

* ``aarch64`` (64-bit Pi OS, recommended): every dependency comes as a wheel from PyPI,
  pure ones as ``py3-none-any``, ``dbus-fast`` (bleak's D-Bus library) as a manylinux wheel;
* ``armv7l`` (32-bit Pi OS): PyPI has no armv7l wheel of ``dbus-fast``; such packages go into
  ``requirements-armv7l.txt`` pinned by the SHA-256 of their PyPI sdist, installed with
  ``pip install --require-hashes --no-deps`` (the build backend it needs still comes from the
  index — documented limitation; the 64-bit image avoids it).

What is built is cached under ``cache_dir`` (``$LONEWATCH_WHEEL_CACHE`` or
``~/.cache/lonewatch/wheels``): the lonewatch wheel keyed by version and a hash of the source,
the dependency set keyed by the requirements and targets. Entries are written to a temp folder
and renamed into place, so parallel runs never see half an entry.

Errors: :class:`SupplyError` (pip failed, no source tree to build from, a wheel of another
version than the running CLI).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from protocol.errors import LonewatchError

__all__ = ["PI_TARGETS", "Supply", "SupplyError", "Target", "build_supply", "default_cache_dir", "default_targets", "host_target",
           "lonewatch_wheel", "device_requirements"]

#: The source tree this module was loaded from (a clone or an editable install).
TREE = Path(__file__).resolve().parent.parent
#: Besides the ``device`` extra: click, for ``lonewatch doctor``/``test-alarm`` on the device.
EXTRA_REQUIREMENTS = ("click>=8.1",)


class SupplyError(LonewatchError, RuntimeError):
    """The device software could not be put together (see the message for the cause)."""


@dataclass(frozen=True)
class Target:
    """A platform the card may boot on: ``name`` (``uname -m``), pip ``platforms`` tags,
    ``python`` version (``"3.11"``) and ``abi`` (``"cp311"``)."""

    name: str
    platforms: tuple[str, ...]
    python: str = "3.11"
    abi: str = "cp311"


def _manylinux(arch: str) -> tuple[str, ...]:
    return tuple(f"manylinux_2_{v}_{arch}" for v in (36, 35, 34, 31, 28, 17)) + (f"manylinux2014_{arch}", f"linux_{arch}")


#: The Raspberry Pi Zero 2 W under Raspberry Pi OS (glibc 2.36+, Python 3.11).
PI_TARGETS = (Target("aarch64", _manylinux("aarch64")), Target("armv7l", _manylinux("armv7l")))


def default_targets() -> tuple[Target, ...]:
    """:data:`PI_TARGETS`, plus this machine when ``LONEWATCH_SUPPLY_HOST=1`` (tests and the lab
    install a card's payload on the installer's machine to prove it works offline)."""
    return PI_TARGETS + ((host_target(),) if os.environ.get("LONEWATCH_SUPPLY_HOST") == "1" else ())


def host_target() -> Target:
    """This machine as a target (tests install the card's payload here)."""
    import platform
    import sysconfig
    arch = platform.machine()
    tag = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Target(arch, _manylinux(arch) + (tag,), py, f"cp{sys.version_info.major}{sys.version_info.minor}")


@dataclass
class Supply:
    """What goes into ``lonewatch/wheels/`` on the card: ``wheels`` (``.whl`` paths, the
    lonewatch one first), ``requirements`` (``requirements-<arch>.txt`` hash-pinned files),
    ``version`` of lonewatch."""

    version: str
    wheels: list[Path] = field(default_factory=list)
    requirements: list[Path] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [*self.wheels, *self.requirements]


def default_cache_dir() -> Path:
    """``$LONEWATCH_WHEEL_CACHE`` or ``$XDG_CACHE_HOME/lonewatch/wheels`` (``~/.cache/…``)."""
    env = os.environ.get("LONEWATCH_WHEEL_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lonewatch" / "wheels"


def running_version() -> str:
    """The version of the installed lonewatch distribution (the running CLI).

    Raises:
        SupplyError: lonewatch is not installed (no metadata).
    """
    try:
        return version("lonewatch")
    except PackageNotFoundError as exc:
        raise SupplyError("lonewatch is not installed (no package metadata); install it with pip first") from exc


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if done.returncode != 0:
        tail = "\n".join(ln for ln in done.stderr.splitlines() if "is ignored" not in ln)[-1500:]
        raise SupplyError(f"pip {args[0]} failed: {tail.strip()}")


def _source_hash(tree: Path) -> str:
    h = hashlib.sha256()
    pyproject = tomllib.loads((tree / "pyproject.toml").read_text())
    dirs = {p.split(".")[0] for p in pyproject["tool"]["setuptools"]["packages"]}
    dirs |= set(pyproject["tool"]["setuptools"].get("package-dir", {}).values())
    for name in ["pyproject.toml", *sorted(dirs)]:
        base = tree / name
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for p in paths:
            h.update(str(p.relative_to(tree)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _publish(tmp: Path, final: Path) -> None:
    try:
        tmp.rename(final)
    except OSError:  # another run got there first: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)


def lonewatch_wheel(cache_dir: Path, *, tree: Path = TREE, given: Sequence[Path] = ()) -> Path:
    """The lonewatch wheel of the running CLI's version: built by ``pip wheel --no-deps`` from
    the source tree (cached by version + source hash), or — when running from an installed wheel
    without a tree — one of ``given`` whose version matches.

    Raises:
        SupplyError: the build failed; no tree and no matching wheel given; the tree's version
            differs from the running CLI's.
    """
    ver = running_version()
    if not (tree / "pyproject.toml").is_file():
        for w in given:
            if Path(w).name.startswith(f"lonewatch-{ver}-"):
                return Path(w)
        raise SupplyError(f"lonewatch {ver} runs from an installed wheel, not from its source: pass that wheel "
                          f"(--wheel lonewatch-{ver}-py3-none-any.whl) so the card gets the same software")
    tree_ver = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["version"]
    if tree_ver != ver:
        raise SupplyError(f"the source tree is lonewatch {tree_ver} but the running CLI is {ver}: "
                          "reinstall (pip install -e .) before flashing")
    entry = Path(cache_dir) / f"lonewatch-{ver}-{_source_hash(tree)}"
    if not entry.is_dir():
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
        with tempfile.TemporaryDirectory(prefix="lonewatch-build-") as work:
            src = Path(work) / "src"  # a copy: setuptools writes build/ and *.egg-info into the tree
            shutil.copytree(tree, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                                      "__pycache__", ".pytest_cache", "bench", "tests"))
            _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp), str(src))
        _publish(tmp, entry)
    (wheel,) = entry.glob("lonewatch-*.whl")
    return wheel


def device_requirements(tree: Path = TREE) -> list[str]:
    """The ``device`` extra's requirements (from pyproject.toml, else the installed metadata)
    plus :data:`EXTRA_REQUIREMENTS`."""
    if (tree / "pyproject.toml").is_file():
        reqs = list(tomllib.loads((tree / "pyproject.toml").read_text())["project"]["optional-dependencies"]["device"])
    else:
        from importlib.metadata import requires
        reqs = [r.split(";")[0].strip() for r in requires("lonewatch") or () if 'extra == "device"' in r]
    return [*reqs, *EXTRA_REQUIREMENTS]


def _download(dest: Path, target: Target, reqs: Sequence[str], *, deps: bool = True) -> None:
    args = ["download", "-q", "-d", str(dest), "--only-binary=:all:", "--python-version", target.python,
            "--implementation", "cp", "--abi", target.abi, "--abi", "abi3", "--abi", "none"]
    for p in target.platforms:
        args += ["--platform", p]
    if not deps:
        args.append("--no-deps")
    _pip(*args, *reqs)


def _is_pure(wheel: Path) -> bool:
    return wheel.name.endswith("-none-any.whl")


def _dependencies(entry: Path, reqs: Sequence[str], targets: Sequence[Target]) -> None:
    """Fill ``entry`` with wheels resolved for ``targets[0]``; each platform wheel is fetched
    for the other targets too, or hash-pinned (sdist SHA-256) in requirements-<arch>.txt."""
    _download(entry, targets[0], reqs)
    platform_wheels = [w for w in entry.glob("*.whl") if not _is_pure(w)]
    for target in targets[1:]:
        pinned = []
        for w in platform_wheels:
            name, ver = w.name.split("-")[:2]
            try:
                _download(entry, target, [f"{name}=={ver}"], deps=False)
            except SupplyError:
                with tempfile.TemporaryDirectory() as sd:
                    _pip("download", "-q", "--no-deps", "--no-binary=:all:", "-d", sd, f"{name}=={ver}")
                    (sdist,) = Path(sd).iterdir()
                    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
                pinned.append(f"{name.replace('_', '-')}=={ver} --hash=sha256:{digest}")
        if pinned:
            (entry / f"requirements-{target.name}.txt").write_text(
                f"# lonewatch: no {target.name} wheel on PyPI for these; pinned by the SHA-256 of their sdist.\n"
                + "\n".join(pinned) + "\n")


def build_supply(cache_dir: Path | None = None, *, targets: Sequence[Target] | None = None,
                 given: Sequence[Path] = (), tree: Path = TREE) -> Supply:
    """The lonewatch wheel + the device's dependencies for ``targets`` (see the module doc).

    Raises:
        SupplyError: see :func:`lonewatch_wheel`; pip could not get a dependency.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    targets = tuple(targets) if targets else default_targets()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a") as lock:  # parallel flashes build once, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_supply(cache, targets, given, tree)


def _build_supply(cache: Path, targets: Sequence[Target], given: Sequence[Path], tree: Path) -> Supply:
    wheel = lonewatch_wheel(cache, tree=tree, given=given)
    reqs = device_requirements(tree)
    key = hashlib.sha256(json.dumps([reqs, [t.__dict__ for t in targets]], sort_keys=True).encode()).hexdigest()[:16]
    entry = cache / f"deps-{key}"
    if not entry.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".deps-", dir=cache))
        try:
            _dependencies(tmp, reqs, targets)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish(tmp, entry)
    return Supply(running_version(), [wheel, *sorted(entry.glob("*.whl"))], sorted(entry.glob("requirements-*.txt")))
