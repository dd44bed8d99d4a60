"""``lonewatch lab``: a complete relay side on this machine for trying the installer commands
(provision, flash, doctor --simulate, test-alarm, status) — the README's "Installing a
device" walkthrough runs against it.

It is a real installation, only small: the project CA (``pki/``), Mosquitto with the
production TLS config and its own password file and ACL (``broker/``, a link to a directory
the ``mosquitto`` user can reach), Redis, pysiaalarm as the ARC, one relay configured by
``relay.toml`` — and a small stand-in Raspberry Pi OS image to flash
(``raspios-lite-test.img.xz``). Everything runs until Ctrl-C / SIGTERM. A restart over the same directory
keeps the ports, passwords, CA, broker password file and Redis data (``lab-state.json``,
:mod:`labstack.labstate`), so provisioned devices keep working; servers left by a killed lab
are stopped at start. The relay logs to ``relay.log``.
"""

from __future__ import annotations

import json
import lzma
import os
import secrets
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import LonewatchError

from installer import pki
from labstack import labstate
from labstack.servers import TLS_AUTH_MODES, BrokerTls, Mosquitto, RedisServer, free_port
from relay.brokeracl import relay_account

__all__ = ["DEFAULT_ACCOUNT", "Lab", "LabError"]

DEFAULT_ACCOUNT = "1234AB"
TEST_IMAGE = "raspios-lite-test.img.xz"
#: The lab relay's instance name; its broker account is relay-lab.
LAB_INSTANCE = "lab"


class LabError(LonewatchError, RuntimeError):
    """The lab could not be set up (directory in use, a server would not start …)."""


@dataclass(frozen=True)
class LabInfo:
    """Where the running lab's parts are (also written to ``<dir>/lab.json``)."""

    directory: Path
    broker_dir: Path
    broker_port: int
    pki_dir: Path
    relay_config: Path
    redis_url: str
    arc: str
    account: str
    image: Path
    #: How devices log in to the broker: ``password`` or ``certificate`` (mutual TLS).
    auth: str = "password"

    def as_dict(self) -> dict[str, str | int]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


class Lab:
    """Start with :meth:`start` (or as a context manager), stop with :meth:`stop`."""

    def __init__(self, directory: Path, *, account: str = DEFAULT_ACCOUNT, auth: str | None = None) -> None:
        """``auth``: the broker's client login, ``password`` or ``certificate`` (mutual TLS,
        :data:`labstack.servers.TLS_AUTH_MODES`); None = as in the directory's last run, else
        ``password``. A restart with another mode than recorded raises LabError at start."""
        self.dir = Path(directory).resolve()
        self.account = account.upper()
        self.auth = auth
        self._stack = ExitStack()
        self.info: LabInfo | None = None
        self.relay = None
        self.arc = None

    def __enter__(self) -> "Lab":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LabInfo:
        """Bring everything up. Raises LabError, MissingServerError, ServerStartError."""
        try:
            return self._start()
        except BaseException:
            self._stack.close()
            raise

    def _start(self) -> LabInfo:
        from relay.app import build_service
        from relay.config import load_relay_config
        from labstack.demo.stack import LocalArc

        self.dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.dir / "lab.pid"
        if pid_file.exists() and _alive(pid_file):
            raise LabError(f"a lab already runs in {self.dir} (pid {pid_file.read_text().strip()}); stop it first")
        pid_file.write_text(f"{os.getpid()}\n")
        self._stack.callback(pid_file.unlink, missing_ok=True)

        # A lab killed with SIGKILL left its servers running: stop them (issue 15).
        labstate.stop_leftovers(self.dir)
        try:
            state = labstate.load_state(self.dir) or {}
        except LonewatchError as exc:
            raise LabError(str(exc)) from exc
        if state:
            self._check_ports(state)
        auth = self.auth or state.get("auth", "password")
        if auth not in TLS_AUTH_MODES:
            raise LabError(f"unknown --auth {auth!r}; choose {' or '.join(TLS_AUTH_MODES)}")
        if state and state.get("auth", "password") != auth:
            raise LabError(
                f"the lab in {self.dir} runs with --auth {state.get('auth', 'password')} and its devices were "
                f"provisioned for that; start it without --auth, or use another directory for --auth {auth}")

        pki_dir = self.dir / "pki"
        pki.init_ca(pki_dir)
        # Mosquitto drops root for its own user, which must reach its files: the broker
        # directory lives in the system temp dir; <dir>/broker links to it. It is kept across
        # restarts (password file = the devices' logins, persistence = the relay's session).
        broker_real = Path(state["broker_dir"]) if state.get("broker_dir") else None
        if broker_real is None or not broker_real.is_dir():
            broker_real = Path(tempfile.mkdtemp(prefix="lonewatch-lab-broker-"))
            keep = self.dir / labstate.PASSWD_KEEP
            if keep.exists():  # the temp dir was emptied (reboot): the devices' logins survive
                labstate.write_private(broker_real / "passwd", keep.read_bytes())
        link = self.dir / "broker"
        if link.is_symlink() or link.exists():
            if not link.is_symlink():
                raise LabError(f"{link} exists and is not the lab's link; move it away")
            link.unlink()
        link.symlink_to(broker_real)
        server = pki.issue_server(pki_dir, broker_real, ["localhost", "127.0.0.1"])

        relay_password = state.get("relay_password") or secrets.token_urlsafe(18)
        # The lab's relay has its own account, relay-<instance> (issue 15: client id = user name).
        broker = Mosquitto(users={relay_account(LAB_INSTANCE): relay_password}, workdir=broker_real,
                           tls=BrokerTls(server.ca, server.cert, server.key, auth=auth), port=state.get("broker_port", 0),
                           keep_passwords=True)
        self._stack.enter_context(broker.start())
        self._stack.callback(self._keep_passwd, broker_real)
        self._keep_passwd(broker_real)
        self._record(labstate.record_server(self.dir, "mosquitto.pid.json", broker.proc.pid, broker_real))
        redis_server = RedisServer(workdir=self.dir / "redis", port=state.get("redis_port", 0),
                                   password=state.get("redis_password", ""))
        if state.get("redis_admin_password"):
            redis_server.admin_password = state["redis_admin_password"]
        self._stack.enter_context(redis_server.start())
        self._record(labstate.record_server(self.dir, "redis.pid.json", redis_server.proc.pid, redis_server.workdir))
        arc_port = state.get("arc_port") or free_port()
        labstate.save_state(self.dir, {
            "broker_dir": str(broker_real), "broker_port": broker.port, "relay_password": relay_password,
            "redis_port": redis_server.port, "redis_password": redis_server.password,
            "redis_admin_password": redis_server.admin_password, "arc_port": arc_port, "auth": auth,
        })  # fmt: skip
        #: The ARC receiver (pysiaalarm); ``arc.events`` are the decoded messages.
        self.arc = self._stack.enter_context(LocalArc(self.account, arc_port))

        relay_config = self.dir / "relay.toml"
        text = _relay_toml(broker.port, relay_password, pki_dir / pki.CA_CERT, redis_server.url, arc_port)
        if auth == "certificate":  # the relay logs in by certificate too, CN = its account
            relay_cert = pki.issue_client(pki_dir, self.dir / "relay-cert", relay_account(LAB_INSTANCE))
            text = text.replace("tls = true\n", f'tls = true\ncert_file = "{relay_cert.cert}"\nkey_file = "{relay_cert.key}"\n', 1)
        fd = os.open(relay_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        cfg = load_relay_config(relay_config)
        self._log_to_file(cfg)
        self.relay = build_service(cfg)
        self.relay.start()
        self._stack.callback(self.relay.stop)
        if not self.relay.wait_connected(15):
            raise LabError("the relay could not log in to the lab broker")

        image = self.dir / TEST_IMAGE
        if not image.exists():
            _write_test_image(image)
        self.info = LabInfo(self.dir, link, broker.port, pki_dir, relay_config, redis_server.url,
                            f"127.0.0.1:{arc_port}", self.account, image, auth)
        # 0600: it holds the Redis URL with the lab's Redis password (issue 15)
        lab_json = self.dir / "lab.json"
        lab_json.unlink(missing_ok=True)
        with os.fdopen(os.open(lab_json, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(json.dumps(self.info.as_dict(), indent=2) + "\n")
        self._stack.callback((self.dir / "lab.json").unlink, missing_ok=True)
        return self.info

    def stop(self) -> None:
        """Stop the relay, ARC, Redis and the broker; the CA, the image, the broker directory,
        Redis' data and ``lab-state.json`` stay for the next start."""
        self._stack.close()

    def _check_ports(self, state: dict) -> None:
        """A restart needs the ports its devices were provisioned with (issue 15)."""
        for key, what in (("broker_port", "broker"), ("redis_port", "Redis"), ("arc_port", "ARC")):
            port = state.get(key)
            if isinstance(port, int) and not labstate.port_free(port):
                raise LabError(
                    f"port {port} of this lab's {what} (recorded in {self.dir / labstate.STATE_FILE}) is taken by "
                    f"another program; devices provisioned against {self.dir} use it. Stop that program and start "
                    f"the lab again, or start a new lab in another directory (and provision the devices again)")

    def _record(self, pid_path: Path) -> None:
        self._stack.callback(pid_path.unlink, missing_ok=True)

    def _keep_passwd(self, broker_dir: Path) -> None:
        passwd = broker_dir / "passwd"
        if passwd.exists():
            labstate.write_private(self.dir / labstate.PASSWD_KEEP, passwd.read_bytes())

    def _log_to_file(self, cfg) -> None:
        """The relay's log goes to ``<dir>/relay.log`` (0600, secrets scrubbed; issue 15)."""
        import logging

        from relay.logs import SecretFilter, secrets_of

        path = self.dir / "relay.log"
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler.addFilter(SecretFilter(secrets_of(cfg)))
        handler.setLevel(logging.INFO)
        logger = logging.getLogger("relay")
        old_level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)

        def _close() -> None:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            handler.close()

        self._stack.callback(_close)


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, OSError):
        return False
    return pid != os.getpid()


def _relay_toml(port: int, password: str, ca: Path, redis_url: str, arc_port: int) -> str:
    return f"""# written by `lonewatch lab`: the relay of the local installation (TLS like production)
[relay]
instance = "{LAB_INSTANCE}"
dispatch_workers = 2

[mqtt]
host = "localhost"
port = {port}
username = "{relay_account(LAB_INSTANCE)}"
password = "{password}"
tls = true
ca_file = "{ca}"

[redis]
url = "{redis_url}"

[arc]
format = "ADM-CID"
attempts_per_receiver = 3
backoff_s = 0.2

# pysiaalarm, the lab's ARC, takes one extended-data block per message.
[[arc.receivers]]
name = "lab-arc"
host = "127.0.0.1"
port = {arc_port}
timeout_s = 3.0
max_xdata_blocks = 1
# NULL polls: /healthz says "degraded" when the ARC stops answering (issue 15)
poll_interval_s = 10
"""


def _write_test_image(dest: Path) -> None:
    """A small stand-in for a Raspberry Pi OS Lite image, xz-compressed like the real one."""
    from installer.bootpart import make_test_image

    with tempfile.TemporaryDirectory(prefix="lonewatch-lab-img-") as tmp:
        raw = make_test_image(Path(tmp) / "raspios.img")
        tmp_dest = dest.with_name(dest.name + ".part")
        with open(raw, "rb") as src, lzma.open(tmp_dest, "wb", format=lzma.FORMAT_XZ, preset=1) as out:
            while chunk := src.read(4 * 1024 * 1024):
                out.write(chunk)
        os.replace(tmp_dest, dest)
