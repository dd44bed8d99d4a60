"""``lonewatch provision``: everything a new device needs, in one idempotent step (SPEC §5).

1. **Broker credentials** — either a random password (32 characters from ``secrets``) stored
   *hashed* in the broker's password file by ``mosquitto_passwd -U`` (the password never
   appears on a command line), or a client certificate from the project CA (CN = device id,
   :mod:`installer.pki`). The broker user name is always the device id.
2. **ACL** — none per device: the project ACL's pattern lines (``pattern write
   lonewatch/%u/event`` …) already limit every account to its own topics, because the user
   name *is* the device id (also for certificates: ``use_identity_as_username``). Provision
   only makes sure those pattern lines are in the broker's ACL file (it writes the project
   ACL if there is none, appends missing pattern lines otherwise). Per-device lines would only
   be needed if user names differed from device ids, which provision never allows.
3. **device.toml** (mode 0600, :func:`device.config.write_device_config`) plus ``ca.crt``
   (and ``client.crt``/``client.key`` 0600) in ``--out``, ready for ``lonewatch flash``.
   Settings a person edited in an existing device.toml of the same device are kept.
4. **Registry** — the device's entry (ARC account, Contact ID zone = worker number, worker,
   site, language) in the relay's Redis.
5. **Reload** — SIGHUP to the broker so it reads the new password at once.

Idempotent: running it again changes nothing a device relies on (the password in an
existing device.toml is kept and re-hashed; a valid certificate is kept). It refuses to touch
an ``--out`` directory that holds another device's files, and refuses to give a device new
credentials silently when the broker already knows it but ``--out`` has no device.toml for it
(``--rotate`` does that on purpose).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.configfile import ConfigError
from protocol.errors import LonewatchError, ValidationError
from protocol.topics import check_device_id

from installer import pki
from installer.binaries import find_binary
from relay.conffiles import CONF_DIR
from relay.registry import ACCOUNT_PATTERN, LANGUAGES
from relay.store import DeviceEntry, Store

__all__ = [
    "AUTH_MODES",
    "RESERVED_USERS",
    "ProvisionError",
    "ProvisionRequest",
    "ProvisionResult",
    "ensure_acl",
    "provision",
    "reload_broker",
]

AUTH_MODES = ("password", "certificate")
#: Broker accounts that are not devices; a device may not take their name.
RESERVED_USERS = frozenset({"relay", "admin", "root", "mosquitto"})
#: The lines of the project ACL that give each device its own topics (``relay/conf/acl``).
DEVICE_PATTERNS = (
    "pattern write lonewatch/%u/event",
    "pattern write lonewatch/%u/alive",
    "pattern write lonewatch/%u/status",
    "pattern read lonewatch/%u/ack",
)
PASSWORD_BYTES = 24  # token_urlsafe(24) → 32 characters, 192 bits


class ProvisionError(LonewatchError, RuntimeError):
    """Provisioning refused or failed; nothing a running device relies on was changed."""


@dataclass(frozen=True)
class ProvisionRequest:
    """What to provision. Paths are on this machine except ``device_dir``/``state_dir``,
    which are where the files will live on the device.

    ``account`` (3–16 hex) and ``zone`` (1–999) are required for a device not yet in the
    registry; ``redis_url`` None skips registration. ``pki_dir`` is the CA directory (needed
    for ``auth="certificate"``; also the fallback source of ``ca.crt``).
    """

    device_id: str
    worker: str
    site: str
    broker_dir: Path
    out_dir: Path
    broker_host: str
    broker_port: int = 8883
    auth: str = "password"
    account: str | None = None
    zone: int | None = None
    language: str = "da"
    fallback_numbers: tuple[str, ...] = ()
    pki_dir: Path | None = None
    device_dir: str = "/etc/lonewatch"
    state_dir: str = "/var/lib/lonewatch"
    redis_url: str | None = field(default=None, repr=False)
    broker_pid_file: Path | None = None
    rotate: bool = False


@dataclass
class ProvisionResult:
    """What was done: the written files, whether new credentials were made, the registry
    entry (None if registration was skipped), how the broker was reloaded, and notes."""

    device_id: str
    config: Path
    files: list[Path]
    new_credentials: bool
    entry: DeviceEntry | None
    reload: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device_id, "config": str(self.config), "files": [str(f) for f in self.files],
            "new_credentials": self.new_credentials,
            "registry": dataclasses.asdict(self.entry) if self.entry else None,
            "reload": self.reload, "notes": self.notes,
        }  # fmt: skip


def provision(req: ProvisionRequest) -> ProvisionResult:
    """Provision one device (see the module docstring for the steps).

    Raises:
        ProvisionError: bad input, another device's files in ``out_dir``, credentials that
            would be replaced silently, zone taken, missing CA, mosquitto_passwd failing,
            Redis unreachable (the message says what was already done).
    """
    _check_request(req)
    out = Path(req.out_dir)
    broker_dir = Path(req.broker_dir)
    if not broker_dir.is_dir():
        raise ProvisionError(f"--broker-dir {broker_dir} is not a directory (it holds the broker's passwd and acl)")
    existing = _existing_config(out, req.device_id)
    passwd = broker_dir / "passwd"
    known_to_broker = req.device_id in _passwd_users(passwd)
    notes: list[str] = []
    new_credentials = False
    mqtt: dict[str, Any] = {"host": req.broker_host, "port": req.broker_port, "tls": True,
                            "username": req.device_id, "ca_file": f"{req.device_dir}/ca.crt"}
    if req.auth == "password":
        password = "" if req.rotate else (existing or {}).get("mqtt", {}).get("password", "")
        if not password and known_to_broker and not req.rotate:
            raise ProvisionError(
                f"the broker already has credentials for {req.device_id} but {out} holds no device.toml "
                "for it: use the --out directory it was provisioned into, or --rotate to issue new "
                "credentials (the old device.toml then stops working)")
        if not password:
            password, new_credentials = secrets.token_urlsafe(PASSWORD_BYTES), True
        mqtt.update(password=password)
    else:
        if req.pki_dir is None:
            raise ProvisionError("--auth certificate needs --pki-dir (the project CA that signs device certificates)")
        mqtt.update(password="", cert_file=f"{req.device_dir}/client.crt", key_file=f"{req.device_dir}/client.key")
        if known_to_broker:
            notes.append(f"the broker's password file still has a line for {req.device_id}; "
                         "it is not used by certificate logins")
    cfg = _device_config(req, existing, mqtt, out / "device.toml")  # validated before anything is written
    if req.redis_url:  # issue 15: the registry is checked before anything is written, too
        _register(req, dry_run=True)

    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    files: list[Path] = []
    with _locked(broker_dir):
        files.append(_install_ca(req, out))
        if req.auth == "certificate":
            try:
                issued = pki.issue_client(req.pki_dir, out, req.device_id, renew=req.rotate)  # type: ignore[arg-type]
            except pki.PkiError as exc:
                raise ProvisionError(str(exc)) from exc
            new_credentials = issued.created
            files += [issued.cert, issued.key]
        from device.config import write_device_config

        config_path = out / "device.toml"
        write_device_config(cfg, config_path)
        files.append(config_path)
        if req.auth == "password":
            _set_password(passwd, req.device_id, password)
        acl_note = ensure_acl(broker_dir / "acl")
        if acl_note:
            notes.append(acl_note)

    # Reload before registering: a registry problem must not leave the broker without the
    # device's new password.
    reload = reload_broker(broker_dir, req.broker_pid_file)
    entry = _register(req) if req.redis_url else None
    if entry is None:
        notes.append("not registered in the relay registry (no --relay-config / --redis-url)")
    return ProvisionResult(req.device_id, config_path, files, new_credentials, entry, reload, notes)


# --------------------------------------------------------------------------- checks


def _check_request(req: ProvisionRequest) -> None:
    try:
        check_device_id(req.device_id)
    except ValidationError as exc:
        raise ProvisionError(f"device id: {exc.reason}") from None
    if req.device_id in RESERVED_USERS:
        raise ProvisionError(f"{req.device_id!r} is a reserved broker account name; choose another device id")
    from relay.brokeracl import is_relay_account

    if is_relay_account(req.device_id):  # relay-<instance> accounts are the relays' (issue 15)
        raise ProvisionError(f"{req.device_id!r} is a relay account name (relay-<instance>); choose another device id")
    if req.auth not in AUTH_MODES:
        raise ProvisionError(f"--auth must be {' or '.join(AUTH_MODES)}, got {req.auth!r}")
    if req.account is not None and not re.fullmatch(ACCOUNT_PATTERN, req.account):
        raise ProvisionError(f"--account must be 3-16 hexadecimal characters (the SIA account), got {req.account!r}")
    if req.zone is not None and not 1 <= req.zone <= 999:
        raise ProvisionError(f"--zone must be 1..999 (the Contact ID zone = worker number), got {req.zone}")
    if req.language not in LANGUAGES:
        raise ProvisionError(f"--language must be one of {', '.join(LANGUAGES)}, got {req.language!r}")
    if not req.broker_host:
        raise ProvisionError("--broker-host is required: the name devices dial (it must be in the server certificate)")


def _existing_config(out: Path, device_id: str) -> dict[str, Any] | None:
    """The existing device.toml in ``out`` as a dict, if it is this device's; refuse if it
    is another device's; None if there is none."""
    path = out / "device.toml"
    if not path.exists():
        return None
    from device.config import load_device_config

    try:
        cfg = load_device_config(path)
    except ConfigError as exc:
        raise ProvisionError(f"{path} exists but is not a valid device.toml; move it away first:\n{exc}") from None
    if cfg.device.id != device_id:
        raise ProvisionError(f"{out} holds the files of device {cfg.device.id!r}; refusing to overwrite them "
                             f"with {device_id!r} — use another --out directory")
    with open(path, "rb") as fh:
        return tomllib.load(fh)  # as written (hand edits included), already validated above


@contextlib.contextmanager
def _locked(broker_dir: Path) -> Iterator[None]:
    """Serialise provisioning runs that edit the same broker files."""
    fd = os.open(broker_dir / ".lonewatch-provision.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- files


def _install_ca(req: ProvisionRequest, out: Path) -> Path:
    candidates = [Path(req.broker_dir) / "ca.crt"]
    if req.pki_dir is not None:
        candidates.append(Path(req.pki_dir) / pki.CA_CERT)
    source = next((c for c in candidates if c.exists()), None)
    if source is None:
        raise ProvisionError("no CA certificate found (looked for " + ", ".join(map(str, candidates))
                             + "); create the CA with `lonewatch pki init` and the broker's certificate "
                               "with `lonewatch pki issue-server`")
    try:
        pki.cert_info(source)
    except pki.PkiError as exc:
        raise ProvisionError(str(exc)) from None
    dest = out / "ca.crt"
    data = source.read_bytes()
    if not dest.exists() or dest.read_bytes() != data:
        pki.write_file(dest, data, secret=False)
    return dest


def _device_config(req: ProvisionRequest, existing: dict[str, Any] | None, mqtt: dict[str, Any], path: Path) -> Any:
    """The device's :class:`device.config.DeviceConfig`: an existing device.toml of the same
    device with the provisioned keys replaced (hand edits such as pins and timings kept)."""
    from device.config import DeviceConfig

    data = {k: dict(v) for k, v in (existing or {}).items()}
    data.setdefault("device", {}).update(id=req.device_id, state_dir=req.state_dir)
    data.setdefault("mqtt", {}).update(mqtt)
    if req.auth == "password":
        for key in ("cert_file", "key_file"):
            data["mqtt"].pop(key, None)
    data.setdefault("worker", {}).update(name=req.worker, site=req.site)
    sms = data.setdefault("sms", {})
    sms["language"] = req.language
    if req.fallback_numbers:
        sms["fallback_numbers"] = list(req.fallback_numbers)
    from installer.provision_voice import voice_settings  # issue 11: [voice] numbers from the registry

    data.setdefault("voice", {}).update(voice_settings(req))
    data = {k: {kk: _plain(vv) for kk, vv in v.items()} for k, v in data.items()}
    try:
        return DeviceConfig.from_dict(data, source=str(path))
    except ConfigError as exc:
        raise ProvisionError(f"the device.toml would be invalid:\n{exc}") from None


def _plain(value: Any) -> Any:
    """Tuples (from dataclasses.asdict) back to lists, recursively, for from_dict."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _passwd_users(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line.split(":", 1)[0] for line in path.read_text().splitlines() if ":" in line and not line.startswith("#")}


def _set_password(path: Path, user: str, password: str) -> None:
    """Put ``user``'s hashed password into the broker's password file, keeping every other
    line and the file's owner and mode (Mosquitto reads it as its own user, SPEC §7)."""
    tool = find_binary("mosquitto_passwd")
    with tempfile.TemporaryDirectory(prefix="lonewatch-passwd-") as tmp:
        plain = Path(tmp) / "one"
        fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{user}:{password}\n")
        done = subprocess.run([tool, "-U", str(plain)], capture_output=True, text=True, timeout=30)
        hashed = plain.read_text().strip() if done.returncode == 0 else ""
        if not hashed.startswith(f"{user}:$"):
            raise ProvisionError(f"mosquitto_passwd -U failed: {done.stderr.strip() or done.stdout.strip() or 'no hash'}")
    lines = [ln for ln in (path.read_text().splitlines() if path.exists() else [])
             if ln.split(":", 1)[0] != user]  # fmt: skip
    lines.append(hashed)
    st = path.stat() if path.exists() else None
    mode = st.st_mode & 0o777 if st else 0o600
    tmp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            if os.geteuid() == 0:
                owner = (st.st_uid, st.st_gid) if st is not None else _mosquitto_ids()
                if owner is not None:
                    os.fchown(fh.fileno(), *owner)
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _mosquitto_ids() -> tuple[int, int] | None:
    """uid/gid of the ``mosquitto`` user: a new password file is given to it, because the
    broker reads the file after dropping root (SPEC §7)."""
    import pwd

    try:
        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def ensure_acl(path: Path) -> str:
    """Make sure the broker ACL at ``path`` gives devices their own topics: write the
    project ACL (``relay/conf/acl``) if the file is missing, append the missing
    :data:`DEVICE_PATTERNS` otherwise. Returns a note of what changed ("" if nothing).

    Raises:
        OSError: cannot read or write the file.
    """
    if not path.exists():
        shutil.copyfile(CONF_DIR / "acl", path)
        os.chmod(path, 0o644)
        return f"wrote the project ACL to {path}"
    text = path.read_text()
    present = {" ".join(ln.split()) for ln in text.splitlines()}
    missing = [p for p in DEVICE_PATTERNS if p not in present]
    if not missing:
        return ""
    with open(path, "a") as fh:
        fh.write(("" if text.endswith("\n") or not text else "\n")
                 + "# added by lonewatch provision: each device account (user name = device id)\n"
                 + "\n".join(missing) + "\n")
    return f"added {len(missing)} device pattern line(s) to {path}"


# --------------------------------------------------------------------------- registry


def _register(req: ProvisionRequest, *, dry_run: bool = False) -> DeviceEntry | None:
    """Add or update the device in the relay registry (:class:`relay.registry.RegistryStore`,
    which validates the whole registry — unknown site, zone already taken — and mirrors the
    device into the pipeline's entry). A worker already in the registry brings their number
    (the zone) and language; otherwise the device is a stand-alone entry with ``--zone``.

    ``dry_run`` (issue 15): check everything, change nothing, return None — provision calls
    it before it writes any file, so a refusal leaves nothing half-provisioned."""
    from relay.registry import RegistryStore
    from relay.registry import RegistryDoc
    from relay.store import StoreError

    done = "nothing was written" if dry_run else "the device files are written"

    try:
        registry = RegistryStore(Store.from_url(req.redis_url))  # type: ignore[arg-type]
        current = registry.load().to_dict()
    except StoreError as exc:
        raise ProvisionError(f"relay registry (Redis) unreachable: {exc}; {done}, "
                             "re-run provision when Redis is back") from None
    except ConfigError as exc:
        raise ProvisionError(f"the stored registry is invalid, fix it first:\n{exc}") from None
    before = next((d for d in current.get("devices", []) if d.get("id") == req.device_id), {})
    known_worker = any(w.get("name") == req.worker for w in current.get("workers", []))
    device: dict[str, Any] = {"id": req.device_id, "worker": req.worker, "site": req.site}
    account = req.account or before.get("account", "")
    if account:
        device["account"] = account.upper()
    zone = req.zone if req.zone is not None else (None if known_worker else before.get("zone"))
    if zone is not None:
        device["zone"] = zone
    if not known_worker:
        if zone is None:
            raise ProvisionError(f"worker {req.worker!r} is not in the relay registry: give --zone (the Contact ID "
                                 f"zone = worker number) or add the worker first (lonewatch registry); {done}, "
                                 "re-run to register")
        device["language"] = req.language

    def edit(doc: dict[str, Any]) -> None:
        doc["devices"] = [d for d in doc.get("devices", []) if d.get("id") != req.device_id] + [device]

    if dry_run:
        data = current
        edit(data)
        try:
            RegistryDoc.from_dict(data, "registry")
        except ConfigError as exc:
            raise ProvisionError(f"the relay registry refuses the device ({done}):\n{exc}") from None
        return None
    try:
        registry.change(edit)
        entry = registry.store.device(req.device_id)
    except ConfigError as exc:
        raise ProvisionError(f"the relay registry refused the device (files are written, registry unchanged):\n{exc}") from None
    except StoreError as exc:
        raise ProvisionError(f"relay registry (Redis) failed: {exc}; the device files are written, re-run provision") from None
    if entry is None:  # pragma: no cover - RegistryStore.save mirrors every device
        raise ProvisionError(f"{req.device_id} was not mirrored into the pipeline registry")
    return entry


# --------------------------------------------------------------------------- broker reload


def reload_broker(broker_dir: Path, pid_file: Path | None = None) -> str:
    """Ask the running Mosquitto to re-read its password file and ACL (SIGHUP).

    The pid comes from ``pid_file``, else ``<broker_dir>/mosquitto.pid``, else
    ``/run/mosquitto/mosquitto.pid``; the process must be called ``mosquitto`` (a stale pid
    file never makes us signal something else). Returns what happened, for the user.
    """
    candidates = [pid_file] if pid_file else [Path(broker_dir) / "mosquitto.pid", Path("/run/mosquitto/mosquitto.pid")]
    for path in candidates:
        if path is None or not path.exists():
            continue
        try:
            pid = int(path.read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            continue
        if comm != "mosquitto":
            continue
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            return f"could not signal the broker (pid {pid}): {exc.strerror}; run: sudo systemctl reload mosquitto"
        return f"broker reloaded (SIGHUP to pid {pid})"
    return "no running broker found: reload it so it reads the new credentials: sudo systemctl reload mosquitto"
