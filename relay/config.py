"""Relay configuration: ``relay.toml`` → frozen :class:`RelayConfig` (SPEC §3, §4).

Built once at start; every problem reported together with file:line
(:class:`protocol.configfile.ConfigError`). Secrets (MQTT password, AES keys, the password
inside the Redis URL) never appear in error messages nor in ``repr()``.
Durations are in seconds (``*_s``).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from protocol.errors import ValidationError
from protocol.configfile import ConfigChecker, ConfigSource, load_toml

from .arc import ArcReceiver
from .config_faults import FaultsSection, faults_section
from .retention import RetentionSection, retention_section

__all__ = [
    "ARC_FORMATS",
    "ArcConfig",
    "ArcReceiver",
    "RedisConfig",
    "RegistrySection",
    "RelayConfig",
    "RelayMqttConfig",
    "RelaySection",
    "load_relay_config",
    "MetricsSection",
    "ModemSection",
    "SupervisionSection",
    "NotifySection",
    "SmtpSection",
    "redact_url",
]

ARC_FORMATS = ("ADM-CID", "SIA-DCS")
_HEX_1_6 = r"[0-9A-Fa-f]{1,6}"
_AES_KEY = r"([0-9A-Fa-f]{16}|[0-9A-Fa-f]{24}|[0-9A-Fa-f]{32})?"
_DEFAULT_RECEIVER_NAMES = ("primary", "secondary")


@dataclass(frozen=True)
class RelaySection:
    """``[relay]``: ``instance`` names this process (default: the host name; set it when
    several relays run on one host — it must stay the same across restarts); stream
    lengths are Redis ``MAXLEN`` caps; ``dispatch_workers`` concurrent ARC/contact dispatches;
    ``reclaim_idle_s``: a dispatch job of a relay that died is taken over after this many
    seconds; ``log_format`` ``text`` or ``json`` (one object per line, for log shippers)."""

    instance: str
    dead_letter_maxlen: int = 100_000
    event_log_maxlen: int = 1_000_000
    dispatch_workers: int = 4
    reclaim_idle_s: float = 30.0
    log_format: str = "text"
    #: Fair shares (issue 15, relay/fairshare.py): routine events per device per minute and
    #: burst at ingest; one test signal per device per this period to the ARC (0 = no gate).
    routine_per_minute: float = 60.0
    routine_burst: int = 30
    test_signal_period_s: float = 60.0


@dataclass(frozen=True)
class RelayMqttConfig:
    """``[mqtt]``: broker connection. ``client_id`` defaults to ``lonewatch-relay-<instance>``;
    instances share the load through ``$share/<shared_group>/…`` subscriptions (MQTT v5)."""

    client_id: str
    host: str = "localhost"
    port: int = 8883
    username: str = "relay"
    password: str = field(default="", repr=False)
    tls: bool = True
    ca_file: str = ""
    #: Client certificate login instead of a password: both or neither.
    cert_file: str = ""
    key_file: str = ""
    shared_group: str = "lonewatch-relay"
    keepalive_s: int = 30
    #: How long the broker keeps this relay's session (and the messages it queues for it)
    #: while the relay is away, s. Mosquitto 2.0 keeps giving a disconnected member of a
    #: shared subscription its share of the messages: with several relays, keep this to a
    #: few minutes so a relay that is gone for good stops taking messages (devices resend
    #: whatever it took without acking).
    session_expiry_s: int = 7 * 24 * 3600


@dataclass(frozen=True)
class RedisConfig:
    """``[redis]``: ``url`` as redis-py takes it (``redis://``, ``rediss://``, ``unix://``).
    May hold a password: log :attr:`redacted_url`, never ``url``. ``cluster``: the URL names
    a node of a Redis Cluster (the key layout keeps each script on one slot)."""

    url: str = field(default="redis://localhost:6379/0", repr=False)
    cluster: bool = False
    #: Sentinel mode (issue 14): ``"host:port"`` of each Sentinel and the monitored master's
    #: name; the master's address then comes from the Sentinels (``url`` gives db/password).
    sentinels: tuple[str, ...] = ()
    master_name: str = ""

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"RedisConfig(url={self.redacted_url!r}, cluster={self.cluster})"


@dataclass(frozen=True)
class ArcConfig:
    """``[arc]``: message format, retry policy and the ordered receivers (primary first; none
    is allowed for firms without an ARC contract). ``backoff_s`` is the first retry delay."""

    format: str = "ADM-CID"
    attempts_per_receiver: int = 3
    backoff_s: float = 0.5
    partition: int = 1
    receivers: tuple[ArcReceiver, ...] = ()
    #: The relay's own SIA account (NULL polls, ``relay`` link tests).
    account: str = "0000"
    #: Periodic test 602: ``off``, ``relay`` (one per installation) or ``device`` (one each).
    link_test: str = "off"
    link_test_interval_s: float = 86400.0


@dataclass(frozen=True)
class RegistrySection:
    """``[registry]``: optional registry TOML merged into Redis at start (:mod:`relay.registry`);
    relative paths are resolved against the config file's directory."""

    file: Path | None = None


@dataclass(frozen=True)
class SmtpSection:
    """``[notify.smtp]``: the SMTP server for e-mail to contacts. ``security``: ``starttls``
    (default, port 587), ``ssl`` (465) or ``none``; ``password`` is a secret."""

    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str = ""


@dataclass(frozen=True)
class NotifySection:
    """``[notify]``: contacts' channels and escalation (:mod:`relay.escalation`).

    ``email_url`` / ``sms_gateway_url``: apprise URL templates with ``{to}`` (secrets, never
    logged); ``email_url`` wins over ``[notify.smtp]``. ``map_url`` takes ``{lat}``/``{lon}``.
    ``timezone`` (IANA) for sites without one; ``default_region`` (e.g. ``DK``) for reply
    numbers in national format; ``max_rounds`` times through the contact list;
    ``poll_s`` (s) how often due escalation steps are looked for; ``reclaim_idle_s`` (s)
    after which another relay takes over a dead relay's notification."""

    email_url: str = field(default="", repr=False)
    sms_gateway_url: str = field(default="", repr=False)
    smtp: SmtpSection = field(default_factory=SmtpSection)
    map_url: str = "https://maps.google.com/?q={lat:.5f},{lon:.5f}"
    timezone: str = ""
    default_region: str = ""
    max_rounds: int = 3
    poll_s: float = 0.5
    reclaim_idle_s: float = 60.0


@dataclass(frozen=True)
class ModemSection:
    """``[modem]``: a modem on the relay for SMS to contacts and their replies. ``port``
    empty = no modem; ``sim_pin`` is a secret; ``poll_s`` (s) how often the SIM store is read
    even without a ``+CMTI`` notice."""

    port: str = ""
    flavour: str = "auto"
    sim_pin: str = field(default="", repr=False)
    poll_s: float = 10.0
    send_timeout_s: float = 60.0


@dataclass(frozen=True)
class SupervisionSection:
    """``[supervision]`` (SPEC §3, :mod:`relay.supervision`): lost contact after
    ``alive_interval_s × missed_alives + grace_s`` s of silence while ``mode`` says so
    (``on_shift``, ``always``, ``off``); ``checkin_grace_s`` added to a relay-side check-in;
    ``sweep_interval_s`` how often deadlines are looked at; ``requeue_after_s`` after which
    an event stored but not queued (its relay died) is queued by a sweep."""

    mode: str = "on_shift"
    alive_interval_s: float = 60.0
    missed_alives: int = 3
    grace_s: float = 5.0
    checkin_grace_s: float = 5.0
    sweep_interval_s: float = 0.5
    requeue_after_s: float = 5.0


@dataclass(frozen=True)
class MetricsSection:
    """``[metrics]``: ``listen`` ``"HOST:PORT"`` of the HTTP endpoint serving ``/metrics``
    (Prometheus) and ``/healthz`` (:mod:`relay.health`); ``""`` = off."""

    listen: str = ""


@dataclass(frozen=True)
class ReadinessSection:
    """``[readiness]`` (issue 12, :mod:`relay.readiness`): a device on shift whose self-test
    has not reported "ready" within ``ready_timeout_s`` seconds of its shift start makes the
    relay tell the first contact (``enabled`` false: only recorded)."""

    enabled: bool = True
    ready_timeout_s: float = 300.0


@dataclass(frozen=True)
class RelayConfig:
    """The whole ``relay.toml``. Build with :func:`load_relay_config` or :meth:`from_dict`."""

    relay: RelaySection
    mqtt: RelayMqttConfig
    redis: RedisConfig = field(default_factory=RedisConfig)
    arc: ArcConfig = field(default_factory=ArcConfig)
    registry: RegistrySection = field(default_factory=RegistrySection)
    notify: NotifySection = field(default_factory=NotifySection)
    modem: ModemSection = field(default_factory=ModemSection)
    supervision: SupervisionSection = field(default_factory=SupervisionSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    faults: FaultsSection = field(default_factory=FaultsSection)
    retention: RetentionSection = field(default_factory=RetentionSection)  # issue 13
    readiness: ReadinessSection = field(default_factory=ReadinessSection)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> RelayConfig:
        """Validate an in-memory document shaped like ``relay.toml`` (relative registry paths
        are then resolved against the current directory).

        Raises:
            ConfigError: every problem found.
        """
        return _build(ConfigSource.from_dict(data, source))


def load_relay_config(path: str | PathLike[str]) -> RelayConfig:
    """Read and validate ``relay.toml``.

    Raises:
        ConfigError: unreadable / non-UTF-8 / invalid TOML, or every schema problem found.
    """
    return _build(load_toml(path))


def redact_url(url: str) -> str:
    """``redis://user:s3cret@host/0`` → ``redis://user:<hidden>@host/0`` (also a
    ``password=`` query parameter). Unparseable input → ``"<hidden>"``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, _pw = userinfo.partition(":")
            netloc = f"{user}:<hidden>@{hostport}" if colon else f"{userinfo}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "<hidden>" if k.lower() == "password" else v)
                               for k, v in pairs], safe="<>")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<hidden>"


def _check_redis_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"must be a redis://, rediss:// or unix:// URL, got \"{redact_url(url)}\""
    ok = (parts.scheme in ("redis", "rediss") and bool(parts.hostname)) or (
        parts.scheme == "unix" and bool(parts.path))
    if not ok:
        return f"must be a redis://, rediss:// or unix:// URL, got \"{redact_url(url)}\""
    return None


def _build(source: ConfigSource) -> RelayConfig:
    checker = ConfigChecker(source)
    root = checker.root()

    t = root.table("relay")
    instance = t.string("instance", "", pattern=r"([A-Za-z0-9._-]{1,64})?",
                        describe="1-64 characters A-Z a-z 0-9 . _ -")
    relay = RelaySection(
        # Stable across restarts: the MQTT client id (and so the broker's persistent session
        # with the messages queued for this relay) derives from it.
        instance=instance or socket.gethostname(),
        dead_letter_maxlen=t.integer("dead_letter_maxlen", RelaySection.dead_letter_maxlen,
                                     min=1),
        event_log_maxlen=t.integer("event_log_maxlen", RelaySection.event_log_maxlen, min=1),
        dispatch_workers=t.integer("dispatch_workers", RelaySection.dispatch_workers,
                                   min=1, max=256),
        reclaim_idle_s=t.number("reclaim_idle_s", RelaySection.reclaim_idle_s, min=0.5, max=3600),
        log_format=t.string("log_format", RelaySection.log_format, choices=("text", "json")),
        routine_per_minute=t.number("routine_per_minute", RelaySection.routine_per_minute, min=0.1, max=1e6),
        routine_burst=t.integer("routine_burst", RelaySection.routine_burst, min=1, max=1_000_000),
        test_signal_period_s=t.number("test_signal_period_s", RelaySection.test_signal_period_s, min=0, max=86400),
    )

    t = root.table("mqtt")
    d = RelayMqttConfig
    mqtt = RelayMqttConfig(
        host=t.string("host", d.host, nonempty=True),
        port=t.integer("port", d.port, min=1, max=65535),
        username=t.string("username", d.username),
        password=t.string("password", ""),
        tls=t.boolean("tls", d.tls),
        ca_file=t.string("ca_file", d.ca_file),
        cert_file=t.string("cert_file", ""),
        key_file=t.string("key_file", ""),
        client_id=t.string("client_id", "", max_len=128) or f"lonewatch-relay-{relay.instance}",
        shared_group=t.string("shared_group", d.shared_group, pattern=r"[A-Za-z0-9_-]{1,64}",
                              describe="1-64 characters A-Z a-z 0-9 _ - (no / + #)"),
        keepalive_s=t.integer("keepalive_s", d.keepalive_s, min=5, max=600),
        session_expiry_s=t.integer("session_expiry_s", d.session_expiry_s, min=0, max=2**32 - 1),
    )
    if bool(mqtt.cert_file) != bool(mqtt.key_file):
        t.problem("key_file" if mqtt.cert_file else "cert_file", "cert_file and key_file go together (client certificate login)")

    t = root.table("redis")
    redis = RedisConfig(url=t.string("url", RedisConfig.url, secret=True,
                                     check=_check_redis_url),
                        cluster=t.boolean("cluster", False),
                        sentinels=tuple(t.string_list("sentinels", [], pattern=r"[^\s:]+:[0-9]{1,5}",
                                                      describe="\"host:port\" of a Sentinel")),
                        master_name=t.string("master_name", ""))
    if redis.sentinels and not redis.master_name:
        t.problem("master_name", "required with sentinels (the name the Sentinels monitor)")
    if redis.sentinels and redis.cluster:
        t.problem("sentinels", "Sentinel and Redis Cluster exclude each other")

    t = root.table("arc")
    receivers: list[ArcReceiver] = []
    names: dict[str, int] = {}
    for i, r in enumerate(t.tables("receivers")):
        default_name = (_DEFAULT_RECEIVER_NAMES[i] if i < len(_DEFAULT_RECEIVER_NAMES)
                        else f"receiver-{i + 1}")
        name = r.string("name", default_name, nonempty=True)
        if name in names:
            r.problem("name", f"duplicate receiver name \"{name}\" "
                      f"(also arc.receivers[{names[name]}])")
        names.setdefault(name, i)
        max_x = r.integer("max_xdata_blocks", None, min=0, max=8) if r.has(
            "max_xdata_blocks") else None
        problems_before = len(checker.problems)
        fields = dict(
            name=name,
            host=r.string("host", nonempty=True),
            port=r.integer("port", min=1, max=65535),
            timeout_s=r.number("timeout_s", 5.0, min=0.1, max=60),
            max_xdata_blocks=max_x,
            # pysiaalarm-compatible: the key string's ASCII bytes are the AES key.
            key=r.string("key", "", pattern=_AES_KEY,
                         describe="16, 24 or 32 hexadecimal characters (AES-128/192/256) "
                                  "or empty").encode() or None,
            receiver_no=r.string("receiver_no", "1", pattern=_HEX_1_6,
                                 describe="1-6 hexadecimal digits").upper(),
            line_no=r.string("line_no", "1", pattern=_HEX_1_6,
                             describe="1-6 hexadecimal digits").upper(),
            protocol=r.string("protocol", "tcp", choices=("tcp", "udp")),
            poll_interval_s=r.number("poll_interval_s", 0.0, min=0, max=86400),
            format_fallback=r.boolean("format_fallback", False),
        )
        if len(checker.problems) > problems_before:
            continue  # already reported field by field
        try:
            receivers.append(ArcReceiver(**fields))
        except ValidationError as exc:
            r.problem(exc.field or "host", exc.reason)
    arc = ArcConfig(
        format=t.string("format", ArcConfig.format, choices=ARC_FORMATS),
        attempts_per_receiver=t.integer("attempts_per_receiver",
                                        ArcConfig.attempts_per_receiver, min=1, max=100),
        backoff_s=t.number("backoff_s", ArcConfig.backoff_s, min=0, max=60),
        partition=t.integer("partition", ArcConfig.partition, min=0, max=99),
        receivers=tuple(receivers),
        account=t.string("account", ArcConfig.account, pattern=r"[0-9A-Fa-f]{3,16}",
                         describe="3-16 hexadecimal characters").upper(),
        link_test=t.string("link_test", ArcConfig.link_test, choices=("off", "relay", "device")),
        link_test_interval_s=t.number("link_test_interval_s", ArcConfig.link_test_interval_s,
                                      min=1, max=7 * 86400),
    )
    if arc.link_test != "off" and not t.data.get("receivers"):
        t.problem("link_test", f"\"{arc.link_test}\" needs at least one [[arc.receivers]]")

    t = root.table("registry")
    file = t.string("file", "")
    registry_path: Path | None = None
    if file:
        registry_path = Path(file).expanduser()
        if not registry_path.is_absolute() and source.base_dir is not None:
            registry_path = source.base_dir / registry_path

    notify, modem = _notify_sections(root)
    supervision, metrics = _operations_sections(root)
    retention = retention_section(root)
    root.has("console")  # [console] belongs to the console process: console.config checks it (issue 13)
    t = root.table("readiness")
    readiness = ReadinessSection(enabled=t.boolean("enabled", True),
                                 ready_timeout_s=t.number("ready_timeout_s", ReadinessSection.ready_timeout_s, min=1, max=86400))
    faults = faults_section(root)
    checker.finish()
    return RelayConfig(relay=relay, mqtt=mqtt, redis=redis, arc=arc,
                       registry=RegistrySection(file=registry_path), notify=notify, modem=modem,
                       supervision=supervision, metrics=metrics, retention=retention, readiness=readiness,
                       faults=faults)


def _check_listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if value and not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        return f"must be \"HOST:PORT\" (e.g. \"127.0.0.1:9187\") or empty, got \"{value}\""
    return None


def _operations_sections(root: Any) -> tuple[SupervisionSection, MetricsSection]:
    """``[supervision]`` and ``[metrics]`` (issue 4: supervision and operability)."""
    t = root.table("supervision")
    d = SupervisionSection
    supervision = SupervisionSection(
        mode=t.string("mode", d.mode, choices=("on_shift", "always", "off")),
        alive_interval_s=t.number("alive_interval_s", d.alive_interval_s, min=1, max=86400),
        missed_alives=t.integer("missed_alives", d.missed_alives, min=1, max=100),
        grace_s=t.number("grace_s", d.grace_s, min=0, max=3600),
        checkin_grace_s=t.number("checkin_grace_s", d.checkin_grace_s, min=0, max=3600),
        sweep_interval_s=t.number("sweep_interval_s", d.sweep_interval_s, min=0.05, max=10),
        requeue_after_s=t.number("requeue_after_s", d.requeue_after_s, min=0.5, max=3600),
    )
    t = root.table("metrics")
    metrics = MetricsSection(listen=t.string("listen", "", check=_check_listen))
    return supervision, metrics


def _notify_sections(root: Any) -> tuple[NotifySection, ModemSection]:
    """``[notify]``, ``[notify.smtp]`` and ``[modem]`` (issue 4: contacts' channels)."""
    def has_to(value: str) -> str | None:
        return None if not value or "{to}" in value else "must contain {to} where the recipient goes"

    def zone(value: str) -> str | None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            if value:
                ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            return f"must be an IANA time zone such as \"Europe/Copenhagen\", got \"{value}\""
        return None

    t = root.table("notify")
    s = t.table("smtp")
    d = SmtpSection
    smtp = SmtpSection(
        host=s.string("host", ""), port=s.integer("port", d.port, min=1, max=65535),
        security=s.string("security", d.security, choices=("starttls", "ssl", "none")),
        username=s.string("username", ""), password=s.string("password", ""),
        sender=s.string("from", "", pattern=r"([^@\s]+@[^@\s]+)?", describe="an e-mail address"),
    )
    if smtp.host and not smtp.sender:
        s.problem("from", "required when host is set (the sender address of alarm e-mails)")
    n = NotifySection
    notify = NotifySection(
        email_url=t.string("email_url", "", secret=True, check=has_to),
        sms_gateway_url=t.string("sms_gateway_url", "", secret=True, check=has_to),
        smtp=smtp,
        map_url=t.string("map_url", n.map_url, check=lambda v: None if "{lat" in v and "{lon" in v
                         else "must contain {lat} and {lon}"),
        timezone=t.string("timezone", "", check=zone),
        default_region=t.string("default_region", "", pattern=r"([A-Z]{2})?",
                                describe="a two-letter country code such as \"DK\""),
        max_rounds=t.integer("max_rounds", n.max_rounds, min=1, max=100),
        poll_s=t.number("poll_s", n.poll_s, min=0.05, max=60),
        reclaim_idle_s=t.number("reclaim_idle_s", n.reclaim_idle_s, min=1, max=3600),
    )
    t = root.table("modem")
    m = ModemSection
    modem = ModemSection(
        port=t.string("port", ""), flavour=t.string("flavour", m.flavour, choices=("auto", "sim7600", "quectel")),
        sim_pin=t.string("sim_pin", "", pattern=r"(\d{4,8})?", describe="4-8 digits"),
        poll_s=t.number("poll_s", m.poll_s, min=0.1, max=600),
        send_timeout_s=t.number("send_timeout_s", m.send_timeout_s, min=1, max=300),
    )
    return notify, modem
