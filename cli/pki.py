"""``lonewatch pki …``: the project's certificate authority — CA, broker (server) and device/relay
(client) certificates, revocation (CRL) and the production broker config (issue 5, issue 15).
The work is done in :mod:`installer.pki` and :mod:`installer.revoke`; these are the command-line faces.
Exit codes as in :mod:`cli.main`.
"""

from __future__ import annotations

from pathlib import Path

import click


from cli.install_common import (  # noqa: F401  (exit codes and helpers; re-exported)
    DEVICE_TOML, EXIT_CONFIG, EXIT_FAILED, EXIT_MISSING, RELAY_TOML, _echo_json, _fail, _load_device, _load_relay, _redis_url,
)


@click.group()
def pki() -> None:
    """The project's certificate authority: CA, broker and client certificates.

    \b
    Example:
      lonewatch pki init --dir /etc/lonewatch/pki
      lonewatch pki issue-server --dir /etc/lonewatch/pki --host mqtt.example.com \\
          --out /etc/mosquitto/lonewatch --owner mosquitto
    """


_pki_dir = click.option("--dir", "pki_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                        help="CA directory (ca.key mode 0600, ca.crt).")


@pki.command("init")
@_pki_dir
@click.option("--name", default="lonewatch CA", show_default=True, help="The CA's common name.")
def pki_init(pki_dir: Path, name: str) -> None:
    """Create the CA (kept as it is if it exists: replacing it would cut off every device).

    \b
    Example:
      lonewatch pki init --dir /etc/lonewatch/pki
    """
    from installer import pki as p

    try:
        cert, key, created = p.init_ca(pki_dir, name=name)
    except p.PkiError as exc:
        _fail(str(exc))
    except OSError as exc:
        from cli.outputs import cannot_write

        cannot_write(exc, pki_dir)
    click.echo(f"{'created' if created else 'kept existing'} CA: {cert} (key {key}, mode 0600 — keep it safe)")


@pki.command("issue-server")
@_pki_dir
@click.option("--host", "hosts", multiple=True, required=True,
              help="A DNS name or IP address devices dial; repeat for more.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where server.crt, server.key (0600) and ca.crt go (the broker's directory).")
@click.option("--owner", help="chown the files to this user, e.g. mosquitto (the broker reads them as it).")
@click.option("--renew", is_flag=True, help="Issue anew even if a valid certificate is there.")
def pki_issue_server(pki_dir: Path, hosts: tuple[str, ...], out: Path, owner: str | None, renew: bool) -> None:
    """Issue the broker's TLS certificate.

    \b
    Example:
      lonewatch pki issue-server --dir /etc/lonewatch/pki --host mqtt.example.com \\
          --host 203.0.113.7 --out /etc/mosquitto/lonewatch --owner mosquitto
    """
    from installer import pki as p

    try:
        issued = p.issue_server(pki_dir, out, hosts, renew=renew, owner=owner)
    except p.PkiError as exc:
        _fail(str(exc))
    except OSError as exc:
        from cli.outputs import cannot_write

        cannot_write(exc, out)
    click.echo(f"{'issued' if issued.created else 'kept valid'} {issued.cert} for {', '.join(hosts)}")


@pki.command("issue-client")
@click.argument("name")
@_pki_dir
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where client.crt, client.key (0600) and ca.crt go.")
@click.option("--renew", is_flag=True, help="Issue anew even if a valid certificate is there.")
def pki_issue_client(name: str, pki_dir: Path, out: Path, renew: bool) -> None:
    """Issue a client certificate with CN = NAME (a device id, or `relay`).

    `lonewatch provision --auth certificate` does this for devices.

    \b
    Example:
      lonewatch pki issue-client relay --dir /etc/lonewatch/pki --out /etc/lonewatch/relay-cert
    """
    from installer import pki as p

    try:
        issued = p.issue_client(pki_dir, out, name, renew=renew)
    except p.PkiError as exc:
        _fail(str(exc))
    except OSError as exc:
        from cli.outputs import cannot_write

        cannot_write(exc, out)
    click.echo(f"{'issued' if issued.created else 'kept valid'} {issued.cert} (CN={name})")


@pki.command("revoke")
@click.argument("device")
@_pki_dir
@click.option("--broker-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The broker's directory: crl.pem is written there too.")
def pki_revoke(device: str, pki_dir: Path, broker_dir: Path | None) -> None:
    """Revoke every client certificate issued to DEVICE (a lost device) and write the CRL.

    The broker config (`lonewatch pki broker-config --crl`) names crl.pem as its crlfile;
    restart the broker to load it (issue 15).
    """
    from installer.revoke import revoke
    from installer.pki import PkiError

    try:
        serials, note = revoke(pki_dir, device, broker_dir=broker_dir)
    except PkiError as exc:
        _fail(str(exc))
    click.echo(f"revoked {len(serials)} certificate(s) of {device}; {note}")


@pki.command("broker-config")
@click.option("--broker-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory with passwd, acl, ca.crt, server.crt, server.key.")
@click.option("--auth", type=click.Choice(["password", "certificate"]), default="password", show_default=True,
              help="How devices and the relay log in.")
@click.option("--port", default=8883, show_default=True, type=click.IntRange(1, 65535))
@click.option("--bind", default="", help="Listen address (default: every interface).")
@click.option("--data-dir", default="/var/lib/mosquitto", show_default=True, help="Persistence directory.")
@click.option("--log-file", default="/var/log/mosquitto/mosquitto.log", show_default=True)
@click.option("--pid-file", default="/run/mosquitto/mosquitto.pid", show_default=True)
@click.option("--crl", is_flag=True, help="Name <broker-dir>/crl.pem as the CRL (after `lonewatch pki revoke`).")
def pki_broker_config(broker_dir: Path, auth: str, port: int, bind: str, data_dir: str, log_file: str, pid_file: str,
                      crl: bool) -> None:
    """Print the production Mosquitto config (TLS only, project ACL) for these files.

    \b
    Example:
      lonewatch pki broker-config --broker-dir /etc/mosquitto/lonewatch \\
          | sudo tee /etc/mosquitto/mosquitto.conf
    """
    from labstack.servers import render_tls_conf

    click.echo(render_tls_conf(directory=broker_dir, port=port, bind=bind, auth=auth, data_dir=Path(data_dir),
                               log_file=Path(log_file), pid_file=Path(pid_file), crl=crl), nl=False)


# --------------------------------------------------------------------------- provision


