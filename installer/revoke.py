"""Revocation of client certificates (issue 15): a lost device's certificate stops working.

The CA records every client certificate it issues (``<pki>/issued.json``: CN → serials, via
:func:`record_issued`, called by :mod:`installer.pki`). ``lonewatch pki revoke DEVICE``
(:func:`revoke`) adds every serial issued to that CN to ``<pki>/revoked.json`` and writes a
CRL signed by the CA (``crl.pem``, X.509 v2 CRL, RFC 5280 §5) into the PKI directory and the
broker's directory, then makes Mosquitto load it. The production broker config
(``relay/conf/mosquitto-tls.conf``) names it with ``crlfile`` when ``crl.pem`` is present
(:func:`labstack.servers.render_tls_conf`, ``crl=True``). Mosquitto 2.0 reads the CRL when
its listener starts, so the reload is a broker restart (``systemctl restart mosquitto``;
the lab/test broker restarts itself): persistent sessions survive it (persistence on).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .pki import PkiError, load_ca, write_file

ISSUED = "issued.json"
REVOKED = "revoked.json"
CRL = "crl.pem"
#: How long a CRL is valid before it must be re-issued (``nextUpdate``), days.
CRL_DAYS = 3650


def record_issued(pki_dir: Path, cn: str, serial: int) -> None:
    """Remember that the CA issued ``serial`` to ``cn`` (for :func:`revoke`)."""
    path = Path(pki_dir) / ISSUED
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(cn, [])
    if str(serial) not in data[cn]:
        data[cn].append(str(serial))
    write_file(path, (json.dumps(data, indent=1) + "\n").encode(), secret=False)


def write_crl(pki_dir: Path, dest: Path | None = None) -> Path:
    """Write the CRL of every revoked serial (possibly none) to ``<pki>/crl.pem`` and, if
    given, ``dest`` (a file path). Returns the PKI copy.

    Raises:
        PkiError: no CA.
    """
    ca_cert, ca_key = load_ca(Path(pki_dir))
    revoked = _revoked(Path(pki_dir))
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=CRL_DAYS)))
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(serial))
            .revocation_date(dt.datetime.fromtimestamp(when, dt.timezone.utc)).build())
    pem = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    out = Path(pki_dir) / CRL
    write_file(out, pem, secret=False)
    if dest is not None:
        write_file(Path(dest), pem, secret=False)
    return out


def _revoked(pki_dir: Path) -> dict[str, float]:
    path = pki_dir / REVOKED
    return json.loads(path.read_text()) if path.exists() else {}


def revoke(pki_dir: Path, cn: str, *, broker_dir: Path | None = None,
           reload: Callable[[], str] | None = None) -> tuple[list[str], str]:
    """Revoke every certificate issued to ``cn`` and publish the CRL.

    Args:
        pki_dir: the CA directory. cn: the device id (certificate CN).
        broker_dir: where the broker reads ``crl.pem`` (the CRL is copied there).
        reload: makes the broker load the new CRL; returns what it did (for the user).

    Returns:
        (the revoked serials, what the reload did or a hint to restart the broker).
    Raises:
        PkiError: no CA, or the CA never issued a certificate to ``cn``.
    """
    pki_dir = Path(pki_dir)
    issued = json.loads((pki_dir / ISSUED).read_text()) if (pki_dir / ISSUED).exists() else {}
    serials = issued.get(cn)
    if not serials:
        raise PkiError(f"this CA ({pki_dir}) issued no certificate to {cn!r}; nothing to revoke")
    revoked = _revoked(pki_dir)
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    for s in serials:
        revoked.setdefault(s, now)
    write_file(pki_dir / REVOKED, (json.dumps(revoked, indent=1) + "\n").encode(), secret=False)
    write_crl(pki_dir, None if broker_dir is None else Path(broker_dir) / CRL)
    note = reload() if reload is not None else "restart the broker (systemctl restart mosquitto) to load the new CRL"
    return serials, note
