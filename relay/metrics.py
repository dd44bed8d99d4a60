"""Prometheus metrics of one relay instance (issue 4 operability), with ``prometheus-client``.

Each relay has its own :class:`prometheus_client.CollectorRegistry` (several relays in one
process — tests, the demo — do not collide). Counters are fed by the relay's hooks; queue
depths and connection states are read at scrape time (:class:`_LiveCollector`), so a scrape
always shows the truth in Redis, shared by all relays (label them by ``instance`` in
Prometheus' scrape config, not here).

=========================================  =========  ====================================
metric                                     type       labels
=========================================  =========  ====================================
``lonewatch_events_total``                 counter    ``kind``, ``outcome`` (stored/duplicate)
``lonewatch_alarms_total``                 counter    ``kind`` (new alarms, also relay-raised)
``lonewatch_messages_total``               counter    ``outcome`` (pipeline: alive, status …)
``lonewatch_dead_letters_total``           counter    ``reason`` (invalid, unknown_device …)
``lonewatch_arc_latency_seconds``          histogram  ``receiver`` (send → ACK)
``lonewatch_arc_results_total``            counter    ``outcome`` (acked, unreachable, rejected)
``lonewatch_supervision_raised_total``     counter    ``kind`` (lost_contact, missed_checkin …)
``lonewatch_supervision_lag_seconds``      histogram  — (raise time − deadline)
``lonewatch_arc_poll_up``                  gauge      ``receiver`` (1 ok, 0 failing, -1 unknown)
``lonewatch_arc_poll_latency_seconds``     gauge      ``receiver``
``lonewatch_arc_link_tests_total``         counter    ``result`` (ok, failed)
``lonewatch_dispatch_pending``             gauge      — (jobs taken, not finished)
``lonewatch_dispatch_lag``                 gauge      — (jobs not yet taken)
``lonewatch_supervision_deadlines``        gauge      ``state`` (all, overdue)
``lonewatch_dead_letter_stream_length``    gauge      —
``lonewatch_broker_connected``             gauge      —
``lonewatch_redis_up``                     gauge      —
=========================================  =========  ====================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from protocol.messages import Event

from .arc import ArcError, ArcRejectedError, ArcResult
from .store import DEADLETTER, Store, StoreError

__all__ = ["RelayMetrics", "dead_letter_reason"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
_LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30)


def dead_letter_reason(reason: str) -> str:
    """The class of a dead-letter reason for a low-cardinality label: ``invalid``,
    ``unknown_device``, ``internal`` or ``other``."""
    if reason.startswith("invalid"):
        return "invalid"
    if reason.startswith("unknown device"):
        return "unknown_device"
    if reason.startswith("internal"):
        return "internal"
    return "other"


class RelayMetrics:
    """The metrics of one relay; hook its methods into the relay (see :mod:`relay.app`).

    Args:
        store: read at scrape time (queue depths); Redis errors show as ``redis_up 0``.
        broker_connected: ``() -> bool``; pipeline_counts: ``() -> Counter`` of the pipeline.
    """

    def __init__(self, store: Store, *, broker_connected: Callable[[], bool] = lambda: False,
                 pipeline_counts: Callable[[], Any] | None = None) -> None:  # fmt: skip
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("lonewatch_events", "Device events stored by the pipeline.", ["kind", "outcome"], registry=r)
        self.alarms = Counter("lonewatch_alarms", "New alarms (device and relay-raised).", ["kind"], registry=r)
        self.dead_letters = Counter("lonewatch_dead_letters", "Messages kept as dead letters.", ["reason"], registry=r)
        self.arc_latency = Histogram("lonewatch_arc_latency_seconds", "ARC delivery: send to ACK.", ["receiver"],
                                     buckets=_LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.arc_results = Counter("lonewatch_arc_results", "ARC delivery outcomes (per attempt round).", ["outcome"], registry=r)
        self.raised = Counter("lonewatch_supervision_raised", "Events raised by supervision.", ["kind"], registry=r)
        self.lag = Histogram("lonewatch_supervision_lag_seconds", "Supervision alarm raised after its deadline, s.",
                             buckets=_LAG_BUCKETS, registry=r)  # fmt: skip
        self.poll_up = Gauge("lonewatch_arc_poll_up", "Last NULL poll: 1 ok, 0 failed, -1 not yet.", ["receiver"], registry=r)
        self.poll_latency = Gauge("lonewatch_arc_poll_latency_seconds", "Last NULL poll round trip.", ["receiver"], registry=r)
        self.link_tests = Counter("lonewatch_arc_link_tests", "Periodic tests (602) sent.", ["result"], registry=r)
        r.register(_LiveCollector(store, broker_connected, pipeline_counts))

    # --- hooks --------------------------------------------------------------------------

    def on_stored(self, event: Event, is_new: bool) -> None:
        """Pipeline hook: a device event was stored (or was a duplicate)."""
        self.events.labels(event.kind, "stored" if is_new else "duplicate").inc()
        if is_new and event.is_alarm:
            self.alarms.labels(event.kind).inc()

    def on_raised(self, event: Event) -> None:
        """Store hook: the relay raised an event (lost contact, restore, missed check-in)."""
        self.raised.labels(event.kind).inc()
        if event.is_alarm:
            self.alarms.labels(event.kind).inc()
        late = event.data.get("late_s")
        if isinstance(late, (int, float)):
            self.lag.observe(max(0.0, float(late)))

    def on_result(self, event: Event, outcome: object) -> None:
        """Dispatcher hook: the ARC's answer for one event (or why there was none)."""
        if isinstance(outcome, ArcResult):
            self.arc_latency.labels(outcome.receiver).observe(outcome.latency_s)
            self.arc_results.labels("acked").inc()
        elif isinstance(outcome, ArcRejectedError):
            self.arc_results.labels("rejected").inc()
        elif isinstance(outcome, ArcError):
            self.arc_results.labels("unreachable").inc()

    def on_dead_letter(self, reason: str) -> None:
        """Store hook: a message was dead-lettered with ``reason``."""
        self.dead_letters.labels(dead_letter_reason(reason)).inc()

    def on_poll(self, status: Any) -> None:
        """Link tester hook: one NULL poll (:class:`relay.linktest.PollStatus`)."""
        self.poll_up.labels(status.receiver).set(1 if status.ok else 0)
        if status.latency_s is not None:
            self.poll_latency.labels(status.receiver).set(status.latency_s)

    def on_test(self, ok: bool, detail: str) -> None:
        """Link tester hook: one periodic test sent."""
        self.link_tests.labels("ok" if ok else "failed").inc()

    def exposition(self) -> bytes:
        """The text exposition format (``/metrics``)."""
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    """Gauges read at scrape time: dispatch backlog, supervision index, dead-letter stream,
    broker and Redis connection, pipeline message counts."""

    def __init__(self, store: Store, broker_connected: Callable[[], bool], pipeline_counts: Callable[[], Any] | None) -> None:
        self.store, self.broker_connected, self.pipeline_counts = store, broker_connected, pipeline_counts

    def collect(self) -> Iterator[Any]:
        def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=list(labels or {}))
            g.add_metric(list((labels or {}).values()), value)
            return g

        yield gauge("lonewatch_broker_connected", "1 while connected to the MQTT broker.", 1 if self.broker_connected() else 0)
        up = 1
        try:
            backlog = self.store.dispatch_backlog()
            total, overdue = self.store.index_size()
            dl = int(self.store._call(self.store.r.xlen, DEADLETTER))
        except StoreError:
            up = 0
        yield gauge("lonewatch_redis_up", "1 if Redis answered this scrape.", up)
        if up:
            yield gauge("lonewatch_dispatch_pending", "Dispatch jobs taken and not finished.", backlog["pending"])
            yield gauge("lonewatch_dispatch_lag", "Dispatch jobs not yet taken by a dispatcher.", backlog["lag"])
            g = GaugeMetricFamily("lonewatch_supervision_deadlines", "Supervision index members.", labels=["state"])
            g.add_metric(["all"], total)
            g.add_metric(["overdue"], overdue)
            yield g
            yield gauge("lonewatch_dead_letter_stream_length", "Entries in the dead-letter stream.", dl)
            try:  # issue 14 faults
                from .faults_report import collect_faults

                f = collect_faults(self.store.r)
                yield gauge("lonewatch_arc_undelivered_alarms", "Alarms no ARC receiver took yet (retrying).", len(f["arc_undelivered"]))
                yield gauge("lonewatch_installation_fault", "1 while no relay has a broker subscription (CID 350).", int(f["installation_fault"]))
                yield gauge("lonewatch_broker_links", "Relays holding a live broker-link lease.", f["broker_links"])
            except Exception:
                pass
        if self.pipeline_counts is not None:
            from prometheus_client.core import CounterMetricFamily

            c = CounterMetricFamily("lonewatch_messages", "Messages handled by the pipeline.", labels=["outcome"])
            for outcome, n in sorted(dict(self.pipeline_counts()).items()):
                c.add_metric([outcome], n)
            yield c
