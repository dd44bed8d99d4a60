"""Throwaway highly-available Redis setups on free loopback ports (issue 14 "a real cluster"),
each node with the project's ``conf/redis.conf`` (AOF, ``appendfsync always``):

* :class:`RedisClusterLab` — a Redis Cluster of 3 masters with 1 replica each
  (``redis-server --cluster-enabled yes`` × 6, joined by ``redis-cli --cluster create
  --cluster-replicas 1``), node timeout 1 s so a killed master's replica takes over in ~2 s;
* :class:`SentinelLab` — one master, 2 replicas and 3 Sentinels (``redis-sentinel``, Debian
  package ``redis-sentinel``) watching it as ``master_name``, quorum 2, down after 1 s.

:meth:`kill_master` sends SIGKILL to the current master (the failover tests).

Errors: :class:`labstack.servers.MissingServerError` (binary missing; the message is the
install line), :class:`labstack.servers.ServerStartError` (a node or the cluster did not come
up in time; the message carries the log tail).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from installer.binaries import find_binary
from relay.conffiles import CONF_DIR

from .servers import RedisServer, ServerStartError, _Server, free_port

__all__ = ["RedisClusterLab", "SentinelLab"]


@dataclass
class _Node(RedisServer):
    """One Redis node with extra command-line options."""

    extra: list[str] = field(default_factory=list)
    #: The lab's shared secret: every node requires it (``requirepass``) and replicas and
    #: cluster peers use it (``masterauth``) — services behind passwords, also on loopback.
    secret: str = ""

    def start(self) -> "_Node":
        binary = find_binary("redis-server")
        self._prepare_workdir("redis-node")
        self.port = self.port or free_port()
        # Its own copy: Sentinel failovers CONFIG REWRITE the file a node was started with.
        conf = self.workdir / "redis.conf"
        # The shipped file names the production ACL file (/etc/redis/…); the lab nodes use one
        # shared password instead, which replicas, cluster peers and Sentinels can present.
        text = "".join(ln for ln in (CONF_DIR / "redis.conf").read_text().splitlines(keepends=True)
                       if not ln.startswith("aclfile "))
        conf.write_text(text + f"requirepass {self.secret}\nmasterauth {self.secret}\n")
        conf.chmod(0o600)
        argv = [binary, str(conf), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"), "--daemonize", "no",
                "--repl-diskless-sync-delay", "0", *self.extra]  # fmt: skip
        self._spawn(argv, "redis")
        return self

    def cli(self, *args: str, timeout_s: float = 10.0) -> str:
        """``redis-cli -p <port> <args>``'s output (raises CalledProcessError on failure)."""
        out = subprocess.run([find_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(self.port), "--no-auth-warning",
                              *(["-a", self.secret] if self.secret else []), *args],
                             capture_output=True, text=True, timeout=timeout_s, check=True)  # fmt: skip
        return out.stdout


def _wait(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (subprocess.SubprocessError, OSError, ServerStartError):
            pass
        time.sleep(0.1)
    raise ServerStartError(f"{what} not ready within {timeout_s:.0f} s")


class RedisClusterLab:
    """3 masters + 3 replicas. ``url`` names one node (redis-py discovers the rest)."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="lonewatch-cluster-"))
        self.nodes: list[_Node] = []
        self.secret = secrets.token_urlsafe(16)

    def start(self) -> "RedisClusterLab":
        """Start the six nodes, create the cluster, wait until every slot is served."""
        find_binary("redis-cli")
        try:
            for i in range(6):
                # The cluster bus port is given explicitly (default port + 10000 may be taken or > 65535).
                node = _Node(workdir=self.workdir / f"n{i}", extra=["--cluster-enabled", "yes", "--cluster-config-file",
                             "nodes.conf", "--cluster-node-timeout", "1000", "--cluster-port", str(free_port())], secret=self.secret)  # fmt: skip
                self.nodes.append(node.start())
            addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
            made = subprocess.run([find_binary("redis-cli"), "--no-auth-warning", "-a", self.secret, "--cluster", "create", *addrs, "--cluster-replicas", "1", "--cluster-yes"],
                                  capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
            if made.returncode != 0:
                raise ServerStartError(f"redis-cli --cluster create failed: {(made.stdout + made.stderr)[-800:]}")
            _wait(lambda: all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes), 30, "redis cluster")
            _wait(lambda: len(self.masters()) == 3 and all(self._replicas_of(m) for m in self.masters()), 30, "cluster replicas")
        except BaseException:
            self.cleanup()
            raise
        return self

    @property
    def url(self) -> str:
        """``redis://`` URL of a node that is up (the first live master)."""
        return f"redis://:{self.secret}@127.0.0.1:{self.masters()[0].port}/0"

    def masters(self) -> list[_Node]:
        """The live nodes that are masters now."""
        out = []
        for n in self.nodes:
            if n.running:
                try:
                    if "role:master" in n.cli("info", "replication"):
                        out.append(n)
                except subprocess.SubprocessError:
                    pass
        return out

    def _replicas_of(self, master: _Node) -> bool:
        info = master.cli("info", "replication")  # a replica that never synced cannot take over
        return "connected_slaves:1" in info and "state=online" in info

    def kill_master(self, key: str | None = None) -> _Node:
        """SIGKILL the master serving ``key``'s slot (or the first master); returns it."""
        victim = self.masters()[0]
        if key is not None:
            slot = int(victim.cli("cluster", "keyslot", key).strip())
            victim = next((m for m in self.masters() if self._serves(m, slot)), victim)
        victim.stop(kill=True)
        return victim

    @staticmethod
    def _serves(node: _Node, slot: int) -> bool:
        for line in node.cli("cluster", "nodes").splitlines():
            parts = line.split()
            if "myself" in parts[2] and "master" in parts[2]:
                for rng in parts[8:]:
                    lo, _, hi = rng.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                        return True
        return False

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Wait until three live masters serve every slot again (after a failover)."""
        _wait(lambda: len(self.masters()) == 3
              and all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes if n.running), timeout_s, "cluster after failover")

    def cleanup(self) -> None:
        """Stop every node and remove the work directory."""
        for n in self.nodes:
            n.stop(kill=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "RedisClusterLab":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@dataclass
class _Sentinel(_Server):
    master_port: int = 0
    master_name: str = "lonewatch"
    secret: str = ""
    log_name = "sentinel.log"

    def start(self) -> "_Sentinel":
        binary = find_binary("redis-sentinel")
        self._prepare_workdir("sentinel")
        self.port = self.port or free_port()
        conf = self.workdir / "sentinel.conf"  # Sentinel rewrites its config: its own file
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\nlogfile {self.workdir / 'sentinel.log'}\n"
                        f"sentinel monitor {self.master_name} 127.0.0.1 {self.master_port} 2\n"
                        f"sentinel auth-pass {self.master_name} {self.secret}\n"
                        f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                        f"sentinel failover-timeout {self.master_name} 4000\n"
                        f"sentinel parallel-syncs {self.master_name} 2\n")  # fmt: skip
        self._spawn([binary, str(conf)], "sentinel")
        return self


class SentinelLab:
    """A master with 2 replicas and 3 Sentinels. Use :attr:`sentinels` + :attr:`master_name`."""

    def __init__(self, master_name: str = "lonewatch") -> None:
        self.master_name = master_name
        self.workdir = Path(tempfile.mkdtemp(prefix="lonewatch-sentinel-"))
        self.nodes: list[_Node] = []
        self.secret = secrets.token_urlsafe(16)
        self.watchers: list[_Sentinel] = []

    def start(self) -> "SentinelLab":
        """Start master, replicas and Sentinels; wait until the Sentinels know both replicas."""
        try:
            master = _Node(workdir=self.workdir / "m", secret=self.secret).start()
            self.nodes.append(master)
            for i in range(2):
                self.nodes.append(_Node(workdir=self.workdir / f"r{i}", extra=["--replicaof", "127.0.0.1", str(master.port)],
                                        secret=self.secret).start())
            _wait(lambda: "connected_slaves:2" in (info := master.cli("info", "replication"))
                  and info.count("state=online") == 2, 20, "replicas")
            for i in range(3):
                self.watchers.append(_Sentinel(workdir=self.workdir / f"s{i}", master_port=master.port,
                                               master_name=self.master_name, secret=self.secret).start())
            _wait(lambda: all(self._sentinel_sees(s) for s in self.watchers), 30, "sentinels")
        except BaseException:
            self.cleanup()
            raise
        return self

    def _sentinel_sees(self, s: _Sentinel) -> bool:
        out = subprocess.run([find_binary("redis-cli"), "-p", str(s.port), "sentinel", "master", self.master_name],
                             capture_output=True, text=True, timeout=5).stdout.split()  # fmt: skip
        fields = dict(zip(out[::2], out[1::2]))
        return fields.get("num-slaves") == "2" and fields.get("num-other-sentinels") == "2"

    @property
    def url(self) -> str:
        """``[redis] url`` for the relay: the password (and db); the host comes from the Sentinels."""
        return f"redis://:{self.secret}@localhost/0"

    @property
    def sentinels(self) -> tuple[str, ...]:
        """``host:port`` of each Sentinel (``[redis] sentinels``)."""
        return tuple(f"127.0.0.1:{s.port}" for s in self.watchers)

    def master(self) -> _Node:
        """The node that is master now (asked of the nodes themselves)."""
        for n in self.nodes:
            if n.running and "role:master" in n.cli("info", "replication"):
                return n
        raise ServerStartError("no master")

    def kill_master(self) -> _Node:
        """SIGKILL the current master; returns it."""
        victim = self.master()
        victim.stop(kill=True)
        return victim

    def wait_promoted(self, old: _Node, timeout_s: float = 30.0) -> _Node:
        """Wait until a replica other than ``old`` is master; returns it."""
        _wait(lambda: self.master() is not old, timeout_s, "sentinel failover")
        return self.master()

    def cleanup(self) -> None:
        """Stop Sentinels and nodes; remove the work directory."""
        for s in self.watchers:
            s.stop(kill=True)
        for n in self.nodes:
            n.stop(kill=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "SentinelLab":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
