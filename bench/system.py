"""A whole local installation made of real processes, for fault injection and benchmarks.

Throwaway Mosquitto and Redis (the project's config files, :mod:`labstack.servers`), a
pysiaalarm ARC (:class:`bench.arcrecorder.ArcRecorder`), one or more relays as
``lonewatch relay run`` subprocesses, and device daemons as subprocesses — each optionally
behind a :class:`bench.netproxy.TcpProxy` so the network between it and the broker can fail.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from labstack.servers import Mosquitto, RedisServer, free_port
from relay.store import Store

from .arcrecorder import ArcRecorder
from .netproxy import TcpProxy
from .procs import DeviceProc, DeviceSpec, RelayProc, device_config, registry_toml, relay_toml


class SystemError_(RuntimeError):
    """The installation could not be brought up (message names the part and its log)."""


class System:
    """Context manager: everything started is stopped on exit, also on errors.

    Args:
        devices: registry entries (each also gets a broker account).
        relays: how many relay processes (instances ``r0``, ``r1`` …; shared subscription).
        arc: start the ARC receiver (accounts of ``devices``).
        arc_timeband: pysiaalarm's accepted timestamp window (before, after) in seconds.
        relay_clock_offset_s: wall-clock error of every relay process.
        dispatch_workers, arc_timeout_s: relay.toml settings.
        arc_proxy: put a :class:`TcpProxy` between the relays and the ARC (``arc_proxy``
            attribute; set its ``on_chunk`` to act at an exact point of an exchange).
        workdir: where configs/logs go (default: a fresh temp dir, removed on exit unless
            ``keep``).
    """

    def __init__(self, devices: list[DeviceSpec], *, relays: int = 1, arc: bool = True,
                 arc_timeband: tuple[int, int] = (40, 20), relay_clock_offset_s: float = 0.0,
                 dispatch_workers: int = 4, arc_timeout_s: float = 2.0, arc_proxy: bool = False,
                 workdir: Path | None = None,
                 keep: bool = False) -> None:  # fmt: skip
        self.devices = devices
        self.n_relays = relays
        self.want_arc = arc
        self.arc_timeband = arc_timeband
        self.relay_clock_offset_s = relay_clock_offset_s
        self.dispatch_workers = dispatch_workers
        self.arc_timeout_s = arc_timeout_s
        self.want_arc_proxy = arc_proxy
        self.arc_proxy: TcpProxy | None = None
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="lonewatch-system-"))
        self.keep = keep
        self._stack = ExitStack()
        self.passwords = {d.id: secrets.token_urlsafe(12) for d in devices}
        self.relay_password = secrets.token_urlsafe(12)
        self.relays: list[RelayProc] = []
        self.device_procs: list[DeviceProc] = []
        self.arc: ArcRecorder | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> "System":
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if self._own_workdir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(self) -> None:
        st = self._stack
        self.mq = st.enter_context(Mosquitto(users={"relay": self.relay_password, **{f"relay-r{i}": self.relay_password for i in range(10)}, **self.passwords}).start())
        self.redis_server = st.enter_context(RedisServer().start())
        self.r = redis.Redis.from_url(self.redis_server.url, socket_timeout=5)
        st.callback(self.r.close)
        self.arc_port = free_port()
        if self.want_arc:
            self.arc = ArcRecorder({d.account for d in self.devices}, self.arc_port, allowed_timeband=self.arc_timeband).start()
            st.callback(lambda: self.arc.stop() if self.arc else None)
        self.relay_arc_port = self.arc_port
        if self.want_arc_proxy:
            self.arc_proxy = TcpProxy(("127.0.0.1", self.arc_port)).start()
            st.callback(self.arc_proxy.stop)
            self.relay_arc_port = self.arc_proxy.port
        self.registry = self.workdir / "registry.toml"
        self.registry.write_text(registry_toml(self.devices))
        for i in range(self.n_relays):
            self.add_relay(f"r{i}")

    def relay_config(self, instance: str) -> str:
        """The relay.toml text for relay ``instance``."""
        return relay_toml(instance=instance, mq_port=self.mq.port, relay_password=self.relay_password,
                          redis_url=self.redis_server.url, registry=self.registry,
                          arc_port=self.relay_arc_port if self.want_arc else None,
                          dispatch_workers=self.dispatch_workers, timeout_s=self.arc_timeout_s)  # fmt: skip

    def add_relay(self, instance: str, *, wait: bool = True) -> RelayProc:
        """Start one more relay process named ``instance``."""
        rp = RelayProc(self.workdir, self.relay_config(instance), name=f"relay-{instance}",
                       clock_offset_s=self.relay_clock_offset_s).start()  # fmt: skip
        self._stack.callback(rp.stop)
        self.relays.append(rp)
        if wait and not rp.wait_connected(20):
            raise SystemError_(f"relay {instance} did not connect:\n{rp.log_text()[-3000:]}")
        return rp

    def proxy(self) -> TcpProxy:
        """A TCP proxy to the broker (for one device's link)."""
        p = TcpProxy(("127.0.0.1", self.mq.port)).start()
        self._stack.callback(p.stop)
        return p

    def device(self, spec: DeviceSpec, *, port: int | None = None, connect: bool = True,
               clock_offset_s: float = 0.0, modem_port: str | None = None, **cfg: Any) -> DeviceProc:
        """Start a device daemon subprocess for ``spec`` (state dir under the workdir).

        ``port`` overrides the broker port (a proxy's); ``connect`` waits until it is
        connected; further keywords go to :func:`bench.procs.device_config`.
        """
        config = device_config(spec.id, mq_port=port or self.mq.port, password=self.passwords[spec.id],
                               state_dir=self.workdir / f"state-{spec.id}", **cfg)
        dp = DeviceProc(self.workdir, config, modem_port=modem_port, clock_offset_s=clock_offset_s).start()
        self._stack.callback(dp.stop)
        self.device_procs.append(dp)
        if connect and dp.wait_step("connection", 20, connected=True) is None:
            raise SystemError_(f"device {spec.id} did not connect:\n{dp.log_text()[-3000:]}")
        return dp

    # --- observation --------------------------------------------------------------------

    def arc_state(self, event_id: str) -> str | None:
        """The relay's ``arc`` field of an event (``pending``, ``retrying``, ``acked`` …)."""
        found = Store(self.r).event(event_id)
        return found[1].get("arc") if found is not None else None

    def store_state(self, device_id: str) -> dict[str, str]:
        """The relay's state record of a device (``status``, ``last_seen`` …)."""
        return Store(self.r).state(device_id)

    def stored_event(self, event_id: str):
        """The event as the relay stored it (:class:`protocol.messages.Event`), or None."""
        found = Store(self.r).event(event_id)
        return found[0] if found is not None else None

    def all_acked(self, event_ids: list[str]) -> bool:
        """True when every event is marked ``arc = acked`` in Redis."""
        return all(self.arc_state(e) == "acked" for e in event_ids)

    def logs(self) -> str:
        """The tail of every relay and device log (for assertion messages)."""
        parts = [f"--- {rp.name}\n{rp.log_text()[-2500:]}" for rp in self.relays]
        parts += [f"--- {dp.name}\n{dp.log_text()[-1500:]}" for dp in self.device_procs]
        return "\n".join(parts)
