"""The relay's Redis client from ``[redis]``: one server, a Redis Cluster (``cluster = true``)
or a master watched by Redis Sentinels (``sentinels``, ``master_name``; issue 14).

With Sentinel, redis-py asks the Sentinels for the current master and asks again after a
connection error, so a failover (the master killed, a replica promoted) surfaces as a
:class:`relay.store.StoreError` for the commands in flight — retried by their callers, never
lost: every write path of the relay is idempotent (dedupe by event id, leases, CAS).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
import redis.sentinel

from .store import Store

__all__ = ["connect_store", "sentinel_client"]


def sentinel_client(sentinels: tuple[str, ...] | list[str], master_name: str, url: str = "redis://localhost/0",
                    *, socket_timeout: float = 5.0) -> redis.Redis:  # fmt: skip
    """A redis-py client for the master ``master_name`` known to ``sentinels``
    (``"host:port"`` each); db and password come from ``url``.

    Raises:
        ValueError: a sentinel address without a port.
    """
    hosts = []
    for item in sentinels:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address must be host:port, got {item!r}")
        hosts.append((host.strip("[]"), int(port)))
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0) if parts.path.strip("/").isdigit() else 0
    kw: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": 3, "db": db}
    if parts.password:
        kw["password"] = parts.password
    sentinel = redis.sentinel.Sentinel(hosts, socket_timeout=1.0, socket_connect_timeout=1.0)
    return sentinel.master_for(master_name, **kw)


def connect_store(cfg: Any, **kw: Any) -> Store:
    """A :class:`relay.store.Store` for a :class:`relay.config.RedisConfig` (``kw`` go to
    the Store: ``event_log_maxlen``, ``deadletter_maxlen``)."""
    if cfg.sentinels:
        return Store(sentinel_client(cfg.sentinels, cfg.master_name, cfg.url), **kw)
    return Store.from_url(cfg.url, cluster=cfg.cluster, **kw)
