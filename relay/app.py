"""Wiring: a :class:`relay.config.RelayConfig` → a running :class:`relay.service.RelayService`
(used by ``lonewatch relay run`` and by ``lonewatch demo``)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable

from .arc import ArcClient
from .config import RelayConfig
from .registry_file import load_registry
from .service import RelayService
from .store import DeviceEntry, Store

log = logging.getLogger(__name__)


def import_registry(store: Store, cfg: RelayConfig) -> int:
    """Load ``[registry] file`` (if set) into Redis; returns how many devices were written.

    Raises:
        protocol.configfile.ConfigError: the registry file is invalid (nothing is written).
        relay.store.StoreError: Redis failed.
    """
    if cfg.registry.file is None:
        return 0
    registry = load_registry(cfg.registry.file)
    for d in registry:
        store.register(DeviceEntry(d.id, d.account, d.zone, d.worker, d.site, d.language))
    return len(registry)


def build_service(
    cfg: RelayConfig,
    *,
    on_stored: Callable | None = None,
    on_result: Callable | None = None,
) -> RelayService:
    """Create (not start) the relay service described by ``cfg``; imports the registry file."""
    store = Store.from_url(cfg.redis.url, event_log_maxlen=cfg.relay.event_log_maxlen, deadletter_maxlen=cfg.relay.dead_letter_maxlen)
    n = import_registry(store, cfg)
    if n:
        log.info("registry: %d device(s) imported from %s", n, cfg.registry.file)
    arc = (
        ArcClient(list(cfg.arc.receivers), store, attempts_per_receiver=cfg.arc.attempts_per_receiver, backoff_s=cfg.arc.backoff_s)
        if cfg.arc.receivers
        else None
    )
    m = cfg.mqtt
    return RelayService(
        mqtt_host=m.host, mqtt_port=m.port, username=m.username, password=m.password,
        client_id=m.client_id, store=store, arc=arc, shared_group=m.shared_group,
        tls_ca=(m.ca_file if m.tls else None), keepalive_s=m.keepalive_s,
        partition=cfg.arc.partition, fmt=cfg.arc.format, dispatch_workers=cfg.relay.dispatch_workers,
        on_stored=on_stored, on_result=on_result,
    )  # fmt: skip


def run_forever(cfg: RelayConfig) -> None:
    """Run the relay until SIGTERM/SIGINT."""
    service = build_service(cfg)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    service.start()
    log.info("relay %s running on %s (pid %d)", cfg.relay.instance, socket.gethostname(), os.getpid())
    done.wait()
    service.stop()
