"""``lonewatch lab``: a complete relay side on this machine for trying the installer commands
(provision, flash, doctor --simulate, test-alarm, status) — the README's "Installing a
device" walkthrough runs against it.

It is a real installation, only small: the project CA (``pki/``), Mosquitto with the
production TLS config and its own password file and ACL (``broker/``, a link to a directory
the ``mosquitto`` user can reach), Redis, pysiaalarm as the ARC, one relay configured by
``relay.toml`` — and a small stand-in Raspberry Pi OS image to flash
(``raspios-lite-test.img.xz``). Everything runs until Ctrl-C / SIGTERM; each start begins
afresh (new passwords, empty Redis), the CA is kept.
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
from labstack.servers import BrokerTls, Mosquitto, RedisServer, free_port
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

    def as_dict(self) -> dict[str, str | int]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


class Lab:
    """Start with :meth:`start` (or as a context manager), stop with :meth:`stop`."""

    def __init__(self, directory: Path, *, account: str = DEFAULT_ACCOUNT) -> None:
        self.dir = Path(directory).resolve()
        self.account = account.upper()
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

        pki_dir = self.dir / "pki"
        pki.init_ca(pki_dir)
        # Mosquitto drops root for its own user, which must reach its files: the broker
        # directory lives in the system temp dir; <dir>/broker links to it.
        broker_real = Path(tempfile.mkdtemp(prefix="lonewatch-lab-broker-"))
        link = self.dir / "broker"
        if link.is_symlink() or link.exists():
            if not link.is_symlink():
                raise LabError(f"{link} exists and is not the lab's link; move it away")
            link.unlink()
        link.symlink_to(broker_real)
        self._stack.callback(link.unlink, missing_ok=True)
        server = pki.issue_server(pki_dir, broker_real, ["localhost", "127.0.0.1"])

        relay_password = secrets.token_urlsafe(18)
        # The lab's relay has its own account, relay-<instance> (issue 15: client id = user name).
        broker = Mosquitto(users={relay_account(LAB_INSTANCE): relay_password}, workdir=broker_real,
                           tls=BrokerTls(server.ca, server.cert, server.key))
        broker._owns_workdir = True  # removed with the broker
        self._stack.enter_context(broker.start())
        redis_server = self._stack.enter_context(RedisServer().start())
        arc_port = free_port()
        #: The ARC receiver (pysiaalarm); ``arc.events`` are the decoded messages.
        self.arc = self._stack.enter_context(LocalArc(self.account, arc_port))

        relay_config = self.dir / "relay.toml"
        text = _relay_toml(broker.port, relay_password, pki_dir / pki.CA_CERT, redis_server.url, arc_port)
        fd = os.open(relay_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        self.relay = build_service(load_relay_config(relay_config))
        self.relay.start()
        self._stack.callback(self.relay.stop)
        if not self.relay.wait_connected(15):
            raise LabError("the relay could not log in to the lab broker")

        image = self.dir / TEST_IMAGE
        if not image.exists():
            _write_test_image(image)
        self.info = LabInfo(self.dir, link, broker.port, pki_dir, relay_config, redis_server.url,
                            f"127.0.0.1:{arc_port}", self.account, image)
        # 0600: it holds the Redis URL with the lab's Redis password (issue 15)
        lab_json = self.dir / "lab.json"
        lab_json.unlink(missing_ok=True)
        with os.fdopen(os.open(lab_json, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(json.dumps(self.info.as_dict(), indent=2) + "\n")
        self._stack.callback((self.dir / "lab.json").unlink, missing_ok=True)
        return self.info

    def stop(self) -> None:
        """Stop the relay, ARC, Redis and the broker; the CA and the image stay."""
        self._stack.close()


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
