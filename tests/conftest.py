"""Shared fixtures: throwaway Mosquitto / Redis servers on free ports (the project's own
config files via :mod:`labstack.servers`), never the ones on the standard ports."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings

from labstack.servers import Mosquitto, RedisServer

# The hostile-input tests (hypothesis) run the same examples every time: `make test` stays
# deterministic; a bug they find is found on every run, not one run in ten.
settings.register_profile("lonewatch", derandomize=True, database=None)
settings.load_profile("lonewatch")

#: Relay instance names the tests use (each gets the broker account relay-<instance>).
RIG_INSTANCES = ("t1", "t2", "a", "b", "c")


class Credentials(dict):
    """username → password for the broker fixture; ``relay`` is the relay's account."""


@pytest.fixture
def broker_users() -> Credentials:
    users = Credentials(relay=secrets.token_urlsafe(12))
    # Each relay instance logs in with its own account (issue 15); the test relays of
    # tests/relayrig.py are relay-<instance> and share the ``relay`` password.
    for inst in RIG_INSTANCES:
        users[f"relay-{inst}"] = users["relay"]
    for dev in ("lw-0001", "lw-0002", "lw-demo-0001"):
        users[dev] = secrets.token_urlsafe(12)
    return users


@pytest.fixture
def mosquitto(broker_users: Credentials) -> Iterator[Mosquitto]:
    """A running Mosquitto with password file + ACL; stopped and removed afterwards."""
    server = Mosquitto(users=dict(broker_users)).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running Redis (AOF, fsync always); stopped and removed afterwards."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def redis_module() -> Iterator[RedisServer]:
    """One Redis for a whole test module (tests flush it themselves)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def wait_until() -> Callable[..., bool]:
    """``wait_until(predicate, timeout_s=10)``: poll until true; returns the final value.
    Used to wait for asynchronous outcomes, never to assert on timing."""

    def _wait(predicate: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval_s)
        return bool(predicate())

    return _wait


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory) -> Path:
    """One cache of the device's wheels (installer/supply.py) for the whole test run, shared by
    the xdist workers (the session's base temp folder); ``lonewatch flash`` uses it through
    ``LONEWATCH_WHEEL_CACHE`` and also fetches this machine's wheels (``LONEWATCH_SUPPLY_HOST``)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if base.name.startswith("popen-gw") else base
    return root / "lonewatch-wheel-cache"


@pytest.fixture
def supply_env(wheel_cache, monkeypatch) -> Path:
    """``lonewatch flash`` in this test builds into :func:`wheel_cache`, host platform included."""
    monkeypatch.setenv("LONEWATCH_WHEEL_CACHE", str(wheel_cache))
    monkeypatch.setenv("LONEWATCH_SUPPLY_HOST", "1")
    return wheel_cache
