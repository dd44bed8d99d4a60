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
from .escalation import Escalation, EscalationSettings
from .fairshare import RateLimiter
from .receiver_caps import ReceiverCaps
from .redis_connect import connect_store
from .registry import RegistryStore, import_registry_file
from .service import RelayService
from .store import Store, SupervisionPolicy

log = logging.getLogger(__name__)


def import_registry(store: Store, cfg: RelayConfig) -> int:
    """Load ``[registry] file`` (if set) into Redis (:func:`relay.registry.import_registry_file`);
    returns how many devices the registry holds then.

    Raises:
        protocol.configfile.ConfigError: the registry file is invalid (nothing is written).
        relay.store.StoreError: Redis failed.
    """
    if cfg.registry.file is None:
        return 0
    # Workers, sites, contacts, accounts, devices; merged: what `lonewatch registry add` stored stays.
    return import_registry_file(RegistryStore(store), cfg.registry.file)["devices"]


def build_escalation(cfg: RelayConfig, store: Store) -> Escalation:
    """The escalation engine with the channels ``[notify]`` and ``[modem]`` configure:
    SMS by the relay's modem, then the SMS gateway; e-mail by ``email_url`` or ``[notify.smtp]``.

    Raises:
        relay.notify.NotifyError: an apprise URL that apprise does not understand.
    """
    from .notify.gateways import AppriseChannel, smtp_url
    from .notify.sms_modem import ModemSmsChannel

    n, m = cfg.notify, cfg.modem
    sms: list = []
    modem = None
    if m.port:
        modem = ModemSmsChannel(m.port, flavour=m.flavour, sim_pin=m.sim_pin, poll_s=m.poll_s, send_timeout_s=m.send_timeout_s)
        sms.append(modem)
    if n.sms_gateway_url:
        sms.append(AppriseChannel("sms-gateway", n.sms_gateway_url, title=False))
    email: list = []
    url = n.email_url or (smtp_url(n.smtp.host, n.smtp.port, security=n.smtp.security, username=n.smtp.username,
                                   password=n.smtp.password, sender=n.smtp.sender) if n.smtp.host else "")
    if url:
        email.append(AppriseChannel("email", url))
    settings = EscalationSettings(max_rounds=n.max_rounds, poll_s=n.poll_s, reclaim_idle_s=n.reclaim_idle_s,
                                  map_url=n.map_url, timezone=n.timezone, default_region=n.default_region)
    escalation = Escalation(store, RegistryStore(store), {"sms": sms, "email": email},
                            name=f"{cfg.relay.instance}-escalation", settings=settings)
    if modem is not None:
        modem.on_reply = escalation.handle_reply
    return escalation


def build_service(
    cfg: RelayConfig,
    *,
    on_stored: Callable | None = None,
    on_result: Callable | None = None,
    on_raised: Callable | None = None,
) -> RelayService:
    """Create (not start) the relay service described by ``cfg``; imports the registry file.
    ``on_raised(Event)`` observes events the relay's supervision raised."""
    store = connect_store(cfg.redis, event_log_maxlen=cfg.relay.event_log_maxlen,
                          deadletter_maxlen=cfg.relay.dead_letter_maxlen)  # Sentinel/cluster aware (issue 14)
    sv = cfg.supervision
    store.supervision = SupervisionPolicy(
        alive_interval_s=sv.alive_interval_s, missed_alives=sv.missed_alives, grace_s=sv.grace_s, mode=sv.mode,
        checkin_grace_s=sv.checkin_grace_s, requeue_after_s=sv.requeue_after_s,
    )  # fmt: skip
    n = import_registry(store, cfg)
    if n:
        log.info("registry: %d device(s) imported from %s", n, cfg.registry.file)
    arc = (
        ArcClient(list(cfg.arc.receivers), store, attempts_per_receiver=cfg.arc.attempts_per_receiver, backoff_s=cfg.arc.backoff_s,
                  caps=ReceiverCaps(store.r))  # what each receiver accepted, shared by every relay
        if cfg.arc.receivers
        else None
    )
    m = cfg.mqtt
    service = RelayService(
        mqtt_host=m.host, mqtt_port=m.port, username=m.username, password=m.password,
        client_id=m.client_id, store=store, arc=arc, shared_group=m.shared_group,
        tls_ca=(m.ca_file if m.tls else None), keepalive_s=m.keepalive_s,
        tls_cert=((m.cert_file, m.key_file) if m.tls and m.cert_file else None),
        partition=cfg.arc.partition, fmt=cfg.arc.format, dispatch_workers=cfg.relay.dispatch_workers,
        on_stored=on_stored, on_result=on_result, reclaim_idle_s=cfg.relay.reclaim_idle_s,
        session_expiry_s=m.session_expiry_s,
    )  # fmt: skip
    service.dispatcher.escalation = build_escalation(cfg, store)  # started/stopped with the dispatcher
    # Fair shares (issue 15, relay/fairshare.py)
    service.pipeline.limiter = RateLimiter(cfg.relay.routine_per_minute, cfg.relay.routine_burst)
    service.dispatcher.test_period_s = cfg.relay.test_signal_period_s
    add_operations(service, cfg, arc, on_raised=on_raised)
    return service


def _chain(*hooks: Callable | None) -> Callable:
    """One hook calling each of ``hooks`` in turn (None skipped)."""
    live = [h for h in hooks if h is not None]

    def call(*args):
        for h in live:
            h(*args)

    return call


def add_operations(service: RelayService, cfg: RelayConfig, arc: ArcClient | None, *, on_raised: Callable | None = None) -> None:
    """Supervision sweeper, ARC link tester, Prometheus metrics and the health endpoint
    (issue 4), wired into ``service`` and started/stopped with it."""
    from .health import HealthServer, health_report
    from .linktest import LinkTester
    from .metrics import RelayMetrics
    from .supervision import Supervisor

    store = service.store
    metrics = RelayMetrics(store, broker_connected=service.connected.is_set, pipeline_counts=lambda: service.pipeline.counts)
    service.metrics = metrics  # type: ignore[attr-defined]
    service.pipeline.on_stored = _chain(metrics.on_stored, service.pipeline.on_stored)
    service.dispatcher.on_result = _chain(metrics.on_result, service.dispatcher.on_result)
    store.raised_hooks.append(metrics.on_raised)
    if on_raised is not None:
        store.raised_hooks.append(on_raised)
    store.dead_letter_hooks.append(metrics.on_dead_letter)

    add_outage_guard(service, cfg, arc)
    service.supervisor = Supervisor(store, sweep_interval_s=cfg.supervision.sweep_interval_s,
                                    hold=service.broker_link.hold_until, mass_loss=service.mass_loss)  # type: ignore[attr-defined]
    service.components.append(service.supervisor)
    service.components.append(__import__("relay.retention").retention.Purger(store, cfg.retention))  # issue 13
    if arc is not None:
        a = cfg.arc
        service.linktester = LinkTester(
            arc, store, account=a.account, poll_intervals={r.name: r.poll_interval_s for r in a.receivers},
            test_mode=a.link_test, test_interval_s=a.link_test_interval_s, partition=a.partition, fmt=a.format,
            on_poll=metrics.on_poll, on_test=metrics.on_test,
        )  # fmt: skip
        service.components.append(service.linktester)
    add_readiness(service, cfg, arc)
    if cfg.metrics.listen:
        host, _, port = cfg.metrics.listen.rpartition(":")
        service.health = HealthServer(host.strip("[]"), int(port), lambda: health_report(service), metrics.exposition)  # type: ignore[attr-defined]
        service.components.append(service.health)  # type: ignore[attr-defined]


def add_outage_guard(service: RelayService, cfg: RelayConfig, arc: ArcClient | None) -> None:
    """Issue 14 "no false alarms from our own outages": the broker-link lease (holds lost
    contacts, raises the one installation fault 350), the mass-loss summary and the system
    events to ``[faults] admins`` (:mod:`relay.brokerlink`, :mod:`relay.system_events`)."""
    from .brokerlink import BrokerLink, MassLoss
    from .system_events import SystemEvents

    f, esc = cfg.faults, service.dispatcher.escalation
    events = SystemEvents(service.store, cfg.relay.instance, admins=f.admins, channels=getattr(esc, "channels", None))
    link = BrokerLink(service.store, cfg.relay.instance, alive_interval_s=cfg.supervision.alive_interval_s,
                      lease_s=f.link_lease_s, fault_after_s=f.fault_after_s, arc=arc, account=cfg.arc.account,
                      partition=cfg.arc.partition, fmt=cfg.arc.format, system_events=events)  # fmt: skip
    service.link_hooks.append(link.set_up)
    link.probe = service.probe_broker
    service.system_events = events  # type: ignore[attr-defined]
    service.broker_link = link  # type: ignore[attr-defined]
    service.mass_loss = MassLoss(service.store, events, threshold=f.mass_loss_threshold,  # type: ignore[attr-defined]
                                 window_s=f.mass_loss_window_s)
    service.components.append(link)


def add_readiness(service: RelayService, cfg: RelayConfig, arc: ArcClient | None) -> None:
    """Issue 12: the ARC link answer in the shift-start ack, readiness records, the ready
    timeout (first contact told) and outage spans (:mod:`relay.readiness`)."""
    from .alarms import AlarmStore
    from .readiness import ReadinessTracker

    store = service.store
    tracker = ReadinessTracker(
        store, RegistryStore(store), AlarmStore(store), ready_timeout_s=cfg.readiness.ready_timeout_s,
        enabled=cfg.readiness.enabled, arc_configured=arc is not None,
        poll_status=lambda: service.linktester.status() if service.linktester is not None else {},
    )  # fmt: skip
    service.readiness = tracker  # type: ignore[attr-defined]
    service.pipeline.received_detail = tracker.ack_detail
    service.pipeline.on_stored = _chain(tracker.on_stored, service.pipeline.on_stored)
    service.dispatcher.on_result = _chain(tracker.on_result, service.dispatcher.on_result)
    service.components.append(tracker)


def run_forever(cfg: RelayConfig) -> None:
    """Run the relay until SIGTERM/SIGINT. Logs in ``[relay] log_format`` with every
    configured secret scrubbed (:mod:`relay.logs`)."""
    from .logs import secrets_of, setup_logging

    setup_logging(fmt=cfg.relay.log_format, level=logging.getLogger().level or logging.INFO, secrets=secrets_of(cfg))
    service = build_service(cfg)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    service.start()
    log.info("relay %s running on %s (pid %d)", cfg.relay.instance, socket.gethostname(), os.getpid())
    done.wait()
    service.stop()
