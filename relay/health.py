"""HTTP health and metrics endpoint of one relay (issue 4 operability).

Served by the standard library's :class:`http.server.ThreadingHTTPServer` (one small
thread per request; no extra dependency and no framework): ``GET /healthz`` returns the
JSON of :func:`health_report` with status 200 when the relay can do its job and 503 when
it cannot (broker or Redis unreachable, a worker thread dead) — for systemd, Kubernetes or
a load balancer; ``GET /metrics`` returns the Prometheus text exposition
(:mod:`relay.metrics`). An ARC receiver failing its NULL polls makes the status
``degraded`` (still 200: restarting the relay would not help, an operator must look).
Nothing secret is in either answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["HealthServer", "health_report"]

log = logging.getLogger(__name__)


def health_report(service: Any) -> dict[str, Any]:
    """What ``/healthz`` says about a :class:`relay.service.RelayService`:

    ``status`` (``ok`` / ``degraded`` / ``failing``), ``broker`` (connected), ``redis``
    (answers, round trip ms), ``dispatch`` (pending, lag), ``supervision`` (sweeper running,
    seconds since its last sweep, deadlines overdue), ``arc`` (per receiver: last NULL poll
    ok/failed/unknown, when, failures in a row; last periodic test).
    """
    failing: list[str] = []
    degraded: list[str] = []
    out: dict[str, Any] = {"instance": getattr(service, "instance", "")}

    broker = service.connected.is_set()
    out["broker"] = {"connected": broker}
    if not broker:
        failing.append("broker not connected")

    store = service.store
    t0 = time.monotonic()
    try:
        store.ping()
        out["redis"] = {"ok": True, "ms": round((time.monotonic() - t0) * 1000, 1)}
        out["dispatch"] = store.dispatch_backlog()
        total, overdue = store.index_size()
    except Exception as exc:  # StoreError or anything on the way: Redis is not usable
        out["redis"] = {"ok": False, "error": type(exc).__name__}
        failing.append("redis unreachable")
        total = overdue = None

    threads_ok = service.threads_alive() if hasattr(service, "threads_alive") else True
    if not threads_ok:
        failing.append("a relay thread died")

    sup = getattr(service, "supervisor", None)
    if sup is not None:
        age = None if sup.last_sweep is None else round(time.monotonic() - sup.last_sweep, 2)
        out["supervision"] = {"running": sup.running, "last_sweep_age_s": age, "deadlines": total,
                              "overdue": overdue, "last_lag_s": sup.last_lag_s}  # fmt: skip
        if not sup.running:
            failing.append("supervision sweeper not running")
        elif overdue and age is not None and age > 10 * sup.sweep_interval_s + 5:
            degraded.append("supervision sweeps are late")

    lt = getattr(service, "linktester", None)
    if lt is not None:
        receivers = {}
        for name, st in lt.status().items():
            state = "unknown" if st.ok is None else ("ok" if st.ok else "failed")
            receivers[name] = {"poll": state, "at": st.at, "failures": st.failures, "error": st.error}
            if st.ok is False:
                degraded.append(f"ARC receiver {name} fails NULL polls")
        polled = [st for st in lt.status().values() if st.ok is not None]
        if polled and not any(st.ok for st in polled):  # issue 15: say it plainly
            degraded.insert(0, "no ARC receiver answered its last poll: alarms cannot reach the ARC")
        arc: dict[str, Any] = {"receivers": receivers}
        if lt.last_test is not None:
            at, ok, detail = lt.last_test
            arc["last_test"] = {"at": at, "ok": ok, "detail": detail}
            if not ok:
                degraded.append("last periodic test failed")
        out["arc"] = arc

    try:  # issue 14: alarms no ARC receiver took, the installation-wide broker fault
        from .faults_report import collect_faults

        f = collect_faults(store.r)
        out["faults"] = {"arc_undelivered": len(f["arc_undelivered"]), "installation_fault": f["installation_fault"],
                         "broker_links": f["broker_links"]}  # fmt: skip
        if f["arc_undelivered"]:
            degraded.append(f"{len(f['arc_undelivered'])} alarm(s) not taken by any ARC receiver (retrying)")
        if f["installation_fault"]:
            failing.append("no relay has a broker subscription (installation fault 350)")
    except Exception as exc:
        out["faults"] = {"error": type(exc).__name__}
    out["status"] = "failing" if failing else ("degraded" if degraded else "ok")
    out["problems"] = failing + degraded
    return out


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with at most ``max_threads`` requests in progress (issue 15:
    a scraper or an attacker opening connections cannot make the relay spawn threads without
    limit); further connections wait in the listen backlog."""

    def __init__(self, address: tuple[str, int], handler: type, max_threads: int) -> None:
        self._slots = threading.BoundedSemaphore(max_threads)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HealthServer:
    """``/healthz`` and ``/metrics`` on ``host:port`` (port 0 = a free one, see :attr:`port`).

    Args:
        report: ``() -> dict`` (usually ``lambda: health_report(service)``).
        metrics: ``() -> bytes`` Prometheus exposition, or None (then ``/metrics`` is 404).
        max_threads: requests served at once (issue 15: bounded).
        timeout_s: a connection that sends nothing (or too slowly) is closed after this many
            seconds.
    """

    def __init__(self, host: str, port: int, report: Callable[[], dict[str, Any]],
                 metrics: Callable[[], bytes] | None = None, *, max_threads: int = 8,
                 timeout_s: float = 5.0) -> None:  # fmt: skip
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = timeout_s  # socket timeout per connection (StreamRequestHandler)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path in ("/healthz", "/health"):
                    rep = outer.report()
                    body = json.dumps(rep, default=str).encode()
                    self._send(503 if rep.get("status") == "failing" else 200, body, "application/json")
                elif path == "/metrics" and outer.metrics is not None:
                    self._send(200, outer.metrics(), "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("health endpoint: " + format, *args)

        self.report, self.metrics = report, metrics
        self.server = _BoundedHTTPServer((host, port), Handler, max_threads)
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.server.serve_forever, name="health-http", daemon=True)
        self._thread.start()
        log.info("health and metrics on http://%s:%d/healthz and /metrics", self.host, self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(5)
