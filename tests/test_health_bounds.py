"""Issue 15: ``/healthz`` says plainly when no ARC receiver answered its last poll (real
relay, real pysiaalarm receiver that goes away), and the health server has bounded threads
and a timeout per connection (idle connections cannot pile up threads)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import pytest

from labstack.demo.stack import LocalArc
from labstack.servers import free_port
from relay.health import HealthServer

from .relayrig import register, relay_dict, running_relay

pytestmark = pytest.mark.integration


def test_healthz_is_degraded_with_the_reason_when_no_arc_receiver_answers(mosquitto, broker_users, redis_server, wait_until):
    port, mport = free_port(), free_port()
    register(redis_server.url, ("lw-0001", 1))
    cfg = relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, port, receiver={"poll_interval_s": 0.3},
                     metrics={"listen": f"127.0.0.1:{mport}"})
    arc = LocalArc("1234AB", port).__enter__()
    with running_relay(cfg) as relay:
        assert wait_until(lambda: relay.linktester.status()["arc"].ok is True, 10)
        arc.__exit__(None, None, None)  # the only receiver goes away
        assert wait_until(lambda: relay.linktester.status()["arc"].ok is False, 10)
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/healthz", timeout=5).read()
        rep = json.loads(body)
        assert rep["status"] == "degraded"
        assert rep["problems"][0] == "no ARC receiver answered its last poll: alarms cannot reach the ARC"


def test_health_server_threads_are_bounded_and_idle_connections_time_out():
    served = []
    server = HealthServer("127.0.0.1", 0, lambda: served.append(1) or {"status": "ok"}, max_threads=3, timeout_s=0.5)
    server.start()
    idle = []
    try:
        before = threading.active_count()
        for _ in range(20):  # connections that never send a request
            idle.append(socket.create_connection(("127.0.0.1", server.port)))
        time.sleep(0.2)
        assert threading.active_count() - before <= 3
        # They time out; a real request is answered after that.
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=30).read()
        assert json.loads(body) == {"status": "ok"} and served == [1]
    finally:
        for s in idle:
            s.close()
        server.stop()
