"""The project's own certificate authority: a CA, broker (server) and device/relay (client)
certificates, made with the ``cryptography`` library (``lonewatch pki …``).

Why a private CA: devices trust exactly the CA that signed *their* broker (``[mqtt] ca_file``),
not the whole public PKI, and client certificates (``require_certificate``) can only come from a
CA the broker operator controls. Keys are ECDSA P-256: small, fast on a Pi Zero, accepted by
Mosquitto/OpenSSL and Python's ``ssl``.

Files (PEM)::

    <pki_dir>/ca.key      CA private key, mode 0600 — keep it offline if you can
    <pki_dir>/ca.crt      CA certificate, given to every device and to the broker
    <out>/server.key/crt  broker certificate: subjectAltName = the host names/IPs devices dial
    <out>/client.key/crt  client certificate: CN = the device id (= its broker user name)

Private keys are created mode 0600 from the first byte (``os.open``) and written atomically;
certificates are 0644. Validity starts one day in the past: a Pi has no RTC and may boot with
an old clock before NTP (SPEC §7).

Errors: :class:`PkiError` (missing/damaged CA, a certificate that belongs to someone else).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.errors import LonewatchError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CertInfo",
    "Issued",
    "PkiError",
    "cert_info",
    "init_ca",
    "issue_client",
    "issue_server",
    "load_ca",
    "write_file",
]

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
#: Validity in days: CA 10 years; server ~27 months (what browsers accept; the broker is
#: not a browser, but the habit keeps rotation practised); client 5 years (a device's life).
CA_DAYS, SERVER_DAYS, CLIENT_DAYS = 3650, 825, 1825
#: A certificate this close to expiry is renewed by an idempotent re-issue, in days.
RENEW_BEFORE_DAYS = 30
_BACKDATE = dt.timedelta(days=1)


class PkiError(LonewatchError, RuntimeError):
    """The CA is missing or damaged, or a certificate file belongs to another identity."""


@dataclass(frozen=True)
class Issued:
    """Where an issued certificate landed: ``cert``/``key`` paths, ``ca`` the CA certificate,
    ``created`` False when valid existing files were kept (idempotent re-run)."""

    cert: Path
    key: Path
    ca: Path
    created: bool


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says: subject and issuer common names, SAN entries (strings),
    validity (UTC), SHA-256 fingerprint (hex), whether it is a CA."""

    subject_cn: str
    issuer_cn: str
    san: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    is_ca: bool


# --------------------------------------------------------------------------- files


def write_file(path: Path, data: bytes, *, secret: bool, owner: str | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename).
    ``secret`` files are mode 0600 from creation, others 0644. ``owner`` (a user name) chowns
    the file to that user and its primary group — only possible as root.

    Raises:
        OSError: directory missing or not writable.
        PkiError: ``owner`` is not a user on this system.
    """
    uid = gid = -1
    if owner:
        try:
            pw = pwd.getpwnam(owner)
        except KeyError:
            raise PkiError(f"no user {owner!r} on this system (--owner)") from None
        uid, gid = pw.pw_uid, pw.pw_gid
    mode = 0o600 if secret else 0o644
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)  # the umask may have narrowed it
            if uid != -1:
                os.fchown(fh.fileno(), uid, gid)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


# --------------------------------------------------------------------------- CA


def init_ca(pki_dir: Path, *, name: str = "lonewatch CA", days: int = CA_DAYS) -> tuple[Path, Path, bool]:
    """Create the project CA in ``pki_dir`` (made 0700 if missing): ``ca.key`` (0600) and
    ``ca.crt``. Idempotent: an existing, loadable CA is kept untouched (replacing it would
    cut off every device that trusts it).

    Returns:
        ``(ca_cert_path, ca_key_path, created)``.
    Raises:
        PkiError: only one of the two files exists, or they do not load / do not match.
    """
    pki_dir = Path(pki_dir)
    cert_path, key_path = pki_dir / CA_CERT, pki_dir / CA_KEY
    if cert_path.exists() or key_path.exists():
        load_ca(pki_dir)  # raises if half there or damaged
        return cert_path, key_path, False
    pki_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lonewatch")])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    write_file(key_path, _key_pem(key), secret=True)
    write_file(cert_path, _cert_pem(cert), secret=False)
    return cert_path, key_path, True


def load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key from ``pki_dir``.

    Raises:
        PkiError: missing (with the command that makes one), unreadable, or not a pair.
    """
    cert_path, key_path = Path(pki_dir) / CA_CERT, Path(pki_dir) / CA_KEY
    missing = [p.name for p in (cert_path, key_path) if not p.exists()]
    if missing:
        raise PkiError(f"{pki_dir}: no CA ({' and '.join(missing)} missing); "
                       f"create one with: lonewatch pki init --dir {pki_dir}")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"{pki_dir}: the CA files cannot be read: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or (
            key.public_key().public_numbers() != cert.public_key().public_numbers()):  # type: ignore[union-attr]
        raise PkiError(f"{pki_dir}: {CA_KEY} does not belong to {CA_CERT}")
    return cert, key


# --------------------------------------------------------------------------- leaves


def _issue(pki_dir: Path, out_dir: Path, name: str, cn: str, *, server_hosts: Sequence[str] = (),
           days: int, renew: bool, owner: str | None) -> Issued:
    ca_cert, ca_key = load_ca(pki_dir)
    out_dir = Path(out_dir)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    ca_copy = out_dir / CA_CERT
    if cert_path.exists() and not renew:
        info = cert_info(cert_path)
        if info.subject_cn != cn:
            raise PkiError(f"{cert_path} belongs to {info.subject_cn!r}, not {cn!r}; "
                           "use another --out directory")
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        still_good = (key_path.exists() and info.issuer_cn == _cn(ca_cert.subject)
                      and _signed_by(existing, ca_cert)
                      and info.not_after - _now() > dt.timedelta(days=RENEW_BEFORE_DAYS)
                      and (not server_hosts or set(server_hosts) <= set(info.san)))
        if still_good:
            _copy_ca(ca_cert, ca_copy, pki_dir)
            return Issued(cert_path, key_path, ca_copy, created=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )  # fmt: skip
    if server_hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in server_hosts]),
                                        critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                        critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                        critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    if not server_hosts:  # issue 15: remember client certificates so they can be revoked
        from .revoke import record_issued

        record_issued(pki_dir, cn, cert.serial_number)
    write_file(key_path, _key_pem(key), secret=True, owner=owner)
    write_file(cert_path, _cert_pem(cert), secret=False, owner=owner)
    _copy_ca(ca_cert, ca_copy, pki_dir)
    return Issued(cert_path, key_path, ca_copy, created=True)


def _copy_ca(ca_cert: x509.Certificate, dest: Path, pki_dir: Path) -> None:
    if dest.resolve() == (Path(pki_dir) / CA_CERT).resolve():
        return
    pem = _cert_pem(ca_cert)
    if not dest.exists() or dest.read_bytes() != pem:
        write_file(dest, pem, secret=False)


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server(pki_dir: Path, out_dir: Path, hosts: Sequence[str], *, days: int = SERVER_DAYS,
                 renew: bool = False, owner: str | None = None) -> Issued:
    """Issue the broker's certificate into ``out_dir`` (``server.crt``, ``server.key`` 0600,
    and a copy of ``ca.crt`` — the three files Mosquitto's listener needs).

    ``hosts``: every DNS name or IP address devices connect to (subjectAltName; the first is
    also the CN). ``owner``: chown both files to this user (e.g. ``mosquitto``; Mosquitto
    started as root drops to its own user and must still read the key, SPEC §7).
    Idempotent: kept if present, signed by this CA, covering ``hosts`` and not near expiry.

    Raises:
        PkiError: no CA; ``hosts`` empty; the files belong to another name.
    """
    hosts = [h.strip() for h in hosts if h.strip()]
    if not hosts:
        raise PkiError("a server certificate needs at least one --host (the name devices dial)")
    return _issue(pki_dir, out_dir, "server", hosts[0], server_hosts=hosts, days=days,
                  renew=renew, owner=owner)


def issue_client(pki_dir: Path, out_dir: Path, common_name: str, *, days: int = CLIENT_DAYS,
                 renew: bool = False, owner: str | None = None) -> Issued:
    """Issue a client certificate with CN = ``common_name`` (a device id, or ``relay``) into
    ``out_dir`` (``client.crt``, ``client.key`` 0600, ``ca.crt``). With
    ``use_identity_as_username`` the broker takes the CN as the user name, so the ACL's
    ``%u`` patterns apply unchanged. Idempotent like :func:`issue_server`.

    Raises:
        PkiError: no CA, or ``out_dir`` holds another identity's certificate.
    """
    if not common_name:
        raise PkiError("a client certificate needs a common name (the device id)")
    return _issue(pki_dir, out_dir, "client", common_name, days=days, renew=renew, owner=owner)


def cert_info(path: Path) -> CertInfo:
    """Read a PEM certificate.

    Raises:
        PkiError: unreadable or not a PEM certificate.
    """
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: not a readable PEM certificate ({exc})") from exc
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san = tuple(str(v) for v in san_ext.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in san_ext.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        san = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        subject_cn=_cn(cert.subject), issuer_cn=_cn(cert.issuer), san=san,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(), is_ca=is_ca,
    )  # fmt: skip
