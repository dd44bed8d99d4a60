"""Issue 15 "Redis behind a password": the shipped ACL (relay/conf/redis-users.acl) turns
the default user off — an unauthenticated local client can neither read contacts' phone
numbers nor change a device's account nor add a dispatch job — and the relay's own user
can do everything the relay does, on lonewatch's keys only, without admin commands."""

from __future__ import annotations

import time

import pytest
import redis

from labstack.servers import RedisServer
from protocol.messages import Alive, Event, Position
from relay.alarms import AlarmStore
from relay.pipeline import Pipeline
from relay.registry import RegistryStore
from relay.status_report import collect
from relay.store import DeviceEntry, Store

pytestmark = pytest.mark.integration

A = "lw-0001"


@pytest.fixture(scope="module")
def shipped():
    """A Redis with exactly the shipped rights (no admin extras)."""
    server = RedisServer(admin=False).start()
    yield server
    server.cleanup()


@pytest.mark.parametrize("command", [
    ("HGETALL", f"lw:{{{A}}}:state"), ("HSET", f"lw:device:{A}", "account", "FFFF"),
    ("XADD", "lw:dispatch", "*", "id", f"{A}:1"), ("KEYS", "*"), ("PING",),
])
def test_an_unauthenticated_client_is_refused(shipped, command):
    r = redis.Redis(port=shipped.port, protocol=2)
    with pytest.raises(redis.AuthenticationError):  # "Authentication required."
        r.execute_command(*command)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(shipped.url.replace(shipped.password, "wrong")).ping()


def test_the_relays_user_does_the_relays_work_and_nothing_else(shipped):
    store = Store.from_url(shipped.url)
    store.register(DeviceEntry(A, "1234AB", 1, "Anna", "Site"))
    store.ensure_group()
    acks: list = []
    pipeline = Pipeline(store, lambda d, a: acks.append(a))
    now = time.time()
    assert pipeline.handle(f"lonewatch/{A}/event", b'{"v":1,"type":"event","device":"%s","seq":1,"kind":"panic","ts":%f}' % (A.encode(), now)).outcome == "stored"
    store.update_alive(Alive(A, now, 80, -70, "home", Position(55.0, 12.0, 3.0, now), 1.0, "t", 0))
    assert [e for _, e in store.next_jobs("c", block_ms=10)] == [f"{A}:1"]
    assert store.dispatch_backlog()["pending"] == 1 and collect(store)[0].device == A
    AlarmStore(store).recent(10)
    RegistryStore(store)
    r = redis.Redis.from_url(shipped.url)
    for forbidden in (lambda: r.flushall(), lambda: r.config_set("appendonly", "no"), lambda: r.set("other:key", 1),
                      lambda: r.shutdown()):
        with pytest.raises(redis.exceptions.NoPermissionError):
            forbidden()
    assert [a.stage for a in acks] == ["received"]


def test_stored_events_survive_a_kill_with_the_shipped_users(tmp_path):
    """Redis 7.0 replays MULTI/EXEC from the AOF as the default user: with the default user
    switched off every transaction was dropped on restart (why the shipped ACL keeps it on,
    behind its own password)."""
    server = RedisServer(admin=False).start()
    try:
        store = Store.from_url(server.url)
        store.register(DeviceEntry(A, "1234AB", 1, "Anna", "Site"))
        assert store.store_event(Event(A, 7, "panic", time.time()))
        server.stop(kill=True)
        server.start()
        store = Store.from_url(server.url)
        assert store.event(f"{A}:7") is not None and store.r.xlen("lw:events") == 1
    finally:
        server.cleanup()
