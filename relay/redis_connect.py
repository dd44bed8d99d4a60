"""The relay's Redis client from ``[redis]``: one server, a Redis Cluster (``cluster = true``)
or a master watched by Redis Sentinels (``sentinels``, ``master_name``; issue 14).

With Sentinel, redis-py asks the Sentinels for the current master and asks again after a
connection error, so a failover (the master killed, a replica promoted) surfaces as a
:class:`relay.store.StoreError` for the commands in flight — retried by their callers, never
lost: every write path of the relay is idempotent (dedupe by event id, leases, CAS).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.sentinel

from .store import Store, StoreError

__all__ = ["connect_store", "sentinel_client", "wait_replicated"]

log = logging.getLogger(__name__)


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
        store = Store(sentinel_client(cfg.sentinels, cfg.master_name, cfg.url), **kw)
    else:
        store = Store.from_url(cfg.url, cluster=cfg.cluster, **kw)
    if cfg.sentinels or cfg.cluster:
        store.replicas_to_wait = 1  # a stored alarm is on two nodes before anyone is told
    return store


def wait_replicated(store: Store, key: str) -> None:
    """``WAIT`` until ``store.replicas_to_wait`` replicas hold every write made so far on the
    node of ``key`` (issue 14: a failover must lose no alarm and send none twice).

    ``WAIT`` counts the writes of *its own connection*, so a marker write in ``key``'s slot
    (``lw:{<tag>}:repl``) goes first on the same connection: its replication offset covers
    every earlier write of the node. A node with no replica attached (the one left after a
    failover) is accepted with a warning — refusing would stop every ack of that shard.

    Raises:
        StoreError: replicas are attached but fewer confirmed within
            ``store.replica_wait_ms`` (the caller retries; nothing was acked yet).
    """
    import redis.cluster

    want, ms = store.replicas_to_wait, store.replica_wait_ms
    tag = key[key.index("{"):key.index("}") + 1] if "{" in key and "}" in key else ""
    marker = f"lw:{tag}:repl"
    r = store.r
    if isinstance(r, redis.cluster.RedisCluster):
        r = r.get_node_from_key(marker).redis_connection
    pipe = r.pipeline(transaction=False)
    pipe.set(marker, "1", px=60_000)
    pipe.execute_command("WAIT", want, ms)
    pipe.info("replication")
    _, n, info = store._call(pipe.execute)
    if int(n) >= want:
        return
    if int(info.get("connected_slaves", 0)) < want:
        log.warning("Redis node of %s has no replica attached: writes are on one node only", key)
        return
    raise StoreError(f"only {n} of {want} Redis replica(s) confirmed the write within {ms} ms")
