"""Throwaway Mosquitto and Redis servers on free loopback ports, with the project's own
config files (``relay/conf``): used by ``lonewatch demo`` and the integration tests.

They never touch the servers that may already run on the standard ports (1883, 6379): each
instance gets a fresh port, its own directory and its own config, and :meth:`stop` kills it.

Errors: :class:`MissingServerError` (binary not installed; the message is the exact install
line), :class:`ServerStartError` (it did not come up; the message carries its log tail).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from installer.binaries import MissingServerError, find_binary  # noqa: F401  (re-exported)
from protocol.errors import LonewatchError
from relay.brokeracl import is_relay_account, render_acl
from relay.conffiles import CONF_DIR

class ServerStartError(LonewatchError, RuntimeError):
    """A server did not start or did not accept connections in time."""


#: Lowest port :func:`free_port` hands out (below it: well-known and registered services).
PORT_FLOOR = 20000


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the source ports of outgoing connections (Linux default)."""
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, chosen at random *below* the
    kernel's ephemeral range when there is room: a port the kernel hands out itself
    (``bind(0)``) can be taken as the source port of any outgoing connection — a test's
    client, a relay's Redis link — between this call and the server's bind ("address
    already in use", seen in parallel test runs)."""
    lo, _ = _ephemeral_range()
    if lo - PORT_FLOOR >= 1000:
        for _ in range(50):
            port = PORT_FLOOR + secrets.randbelow(lo - PORT_FLOOR)  # not `random`: tests seed it
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    """True once 127.0.0.1:``port`` accepts TCP connections within ``timeout_s`` seconds;
    False on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


def _readable_by_service_user(paths: list[Path], user: str) -> None:
    """Mosquitto started as root drops to its own user (SPEC §7): hand it its files."""
    if os.geteuid() != 0:
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return
    for p in paths:
        os.chown(p, pw.pw_uid, pw.pw_gid)


@dataclass
class _Server:
    #: Directory for config, data and log. Default: a fresh directory under the system temp
    #: dir, which a service user can reach even when the caller's own tmp dir is 0700.
    workdir: Path | None = None
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if self.workdir is None:
            return "(no log)"
        log = self.workdir / self.log_name
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"

    log_name = "server.log"

    def _spawn(self, argv: list[str], name: str) -> None:
        with open(self.workdir / f"{name}.stdout", "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        if not wait_for_port(self.port, 10.0, self.proc):
            self.stop()
            raise ServerStartError(f"{name} did not start on port {self.port}:\n{self.log_tail()}")

    def _prepare_workdir(self, prefix: str) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"lonewatch-{prefix}-"))
            self._owns_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir

    _owns_workdir = False

    def cleanup(self) -> None:
        """Stop, then delete the work directory if this object created it."""
        self.stop()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill=True``) and wait for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


#: Client authentication modes of the production config ``conf/mosquitto-tls.conf``:
#: ``password`` (TLS + user name/password) or ``certificate`` (mutual TLS, CN = user name).
TLS_AUTH_MODES = ("password", "certificate")


def render_tls_conf(*, directory: Path, port: int = 8883, bind: str = "", auth: str = "password",
                    data_dir: Path | None = None, log_file: Path | None = None,
                    pid_file: Path | None = None, crl: bool = False) -> str:
    """The production broker config (``conf/mosquitto-tls.conf``) for files in ``directory``
    (passwd, acl, ca.crt, server.crt, server.key). ``bind`` "" listens on every interface;
    ``data_dir``/``log_file``/``pid_file`` default to ``directory``; ``crl`` names
    ``directory/crl.pem`` as the broker's ``crlfile`` (revoked certificates, issue 15).

    Raises:
        ValueError: unknown ``auth`` (see :data:`TLS_AUTH_MODES`).
    """
    if auth not in TLS_AUTH_MODES:
        raise ValueError(f"unknown broker auth mode {auth!r}; choose {' or '.join(TLS_AUTH_MODES)}")
    cert = "true" if auth == "certificate" else "false"
    return Template((CONF_DIR / "mosquitto-tls.conf").read_text()).substitute(
        port=port, bind=bind, dir=directory, data_dir=data_dir or directory,
        log_file=log_file or directory / "mosquitto.log", pid_file=pid_file or directory / "mosquitto.pid",
        require_certificate=cert, use_identity_as_username=cert,
        crl_line=f"crlfile {directory}/crl.pem" if crl else "# crlfile (none yet)",
    ).replace(f"listener {port} \n", f"listener {port}\n")


@dataclass(frozen=True)
class BrokerTls:
    """TLS for :class:`Mosquitto`: the CA, the server certificate and key (PEM paths, copied
    into the broker's directory; the key copy is 0600) and the client ``auth`` mode."""

    ca: Path
    cert: Path
    key: Path
    auth: str = "password"

    def install(self, directory: Path) -> list[Path]:
        """Copy the three files to ``directory`` as ca.crt, server.crt, server.key."""
        out = []
        for src, name, mode in ((self.ca, "ca.crt", 0o644), (self.cert, "server.crt", 0o644), (self.key, "server.key", 0o600)):
            dest = directory / name
            if Path(src).resolve() != dest.resolve():
                dest.unlink(missing_ok=True)
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(Path(src).read_bytes())
            out.append(dest)
        return out


@dataclass
class Mosquitto(_Server):
    """A Mosquitto broker rendered from ``conf/mosquitto.conf`` + ``conf/acl``, or with
    ``tls`` from the production config ``conf/mosquitto-tls.conf`` (TLS listener only).

    ``users`` maps username → password (written hashed with ``mosquitto_passwd``; the file is
    mode 0600). Relay accounts are ``relay`` or ``relay-<instance>`` (the ACL gets a relay
    block for each, :func:`relay.brokeracl.render_acl`); device accounts are named after the
    device id. The broker sets each client's id to its user name (issue 15).
    """

    users: dict[str, str] = field(default_factory=dict)
    bind: str = "127.0.0.1"
    tls: BrokerTls | None = None
    #: Keep the entries of an existing password file (a restarted ``lonewatch lab``: its
    #: provisioned devices keep their logins); :attr:`users` are added or updated.
    keep_passwords: bool = False
    log_name = "mosquitto.log"

    def start(self) -> "Mosquitto":
        """Render the config, write credentials, start, wait until it accepts connections.

        Raises:
            MissingServerError, ServerStartError.
        """
        binary = find_binary("mosquitto")
        self._prepare_workdir("mosquitto")
        os.chmod(self.workdir, 0o755)
        self.port = self.port or free_port()
        self.write_passwords()
        # One relay block per relay account among the users (issue 15: each instance its own).
        accounts = [u for u in self.users if is_relay_account(u)] or ["relay"]
        (self.workdir / "acl").write_text(render_acl(accounts))
        own = [self.workdir, self.workdir / "passwd", self.workdir / "acl"]
        if self.tls is None:
            conf = Template((CONF_DIR / "mosquitto.conf").read_text()).substitute(
                port=self.port, bind=self.bind, dir=self.workdir
            )
        else:
            own += self.tls.install(self.workdir)
            conf = render_tls_conf(directory=self.workdir, port=self.port, bind=self.bind, auth=self.tls.auth,
                                   crl=(self.workdir / "crl.pem").exists())
        (self.workdir / "mosquitto.conf").write_text(conf)
        _readable_by_service_user(own, "mosquitto")
        self._spawn([binary, "-c", str(self.workdir / "mosquitto.conf")], "mosquitto")
        return self

    def write_passwords(self) -> None:
        """(Re)write the hashed password file from :attr:`users`, mode 0600."""
        tool = find_binary("mosquitto_passwd")
        path = self.workdir / "passwd"
        if not (self.keep_passwords and path.exists()):
            path.unlink(missing_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        for user, password in self.users.items():
            # -b puts the password on the command line of a short-lived local process only.
            subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence directory."""
        self.stop()
        self.start()


@dataclass
class RedisServer(_Server):
    """A Redis server from ``conf/redis.conf`` (AOF on, fsync always) on a free port, behind
    the ACL of ``conf/redis-users.acl`` (issue 15): every user has a password (the default
    user's is ``admin_password``), :attr:`url` logs in as ``lonewatch`` with :attr:`password`
    (fresh per server, kept across :meth:`restart`). ``admin`` adds the admin commands the fault tests use (SHUTDOWN,
    SAVE, FLUSHALL, CONFIG …) to that user; ``admin=False`` is exactly the shipped rights."""

    password: str = field(default="", repr=False)
    admin: bool = True
    log_name = "redis.log"

    def write_acl(self) -> Path:
        """(Re)write ``users.acl`` (mode 0600) from the shipped template."""
        import secrets

        self.password = self.password or secrets.token_urlsafe(18)
        self.admin_password = getattr(self, "admin_password", "") or secrets.token_urlsafe(18)
        text = Template((CONF_DIR / "redis-users.acl").read_text()).substitute(
            password=self.password, admin_password=self.admin_password, extra="+@all" if self.admin else "")
        path = self.workdir / "users.acl"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path

    def start(self) -> "RedisServer":
        """Start and wait until it accepts connections.

        Raises:
            MissingServerError, ServerStartError.
        """
        binary = find_binary("redis-server")
        self._prepare_workdir("redis")
        self.port = self.port or free_port()
        argv = [
            binary, str(CONF_DIR / "redis.conf"),
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"),
            "--daemonize", "no", "--aclfile", str(self.write_acl()),
        ]  # fmt: skip
        self._spawn(argv, "redis")
        return self

    @property
    def url(self) -> str:
        return f"redis://lonewatch:{self.password}@127.0.0.1:{self.port}/0"

    def restart(self) -> None:
        """Stop and start again on the same port and data directory (AOF is replayed)."""
        self.stop()
        self.start()
