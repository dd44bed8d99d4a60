"""Relay configuration: ``relay.toml`` → frozen :class:`RelayConfig` (SPEC §3, §4).

Built once at start; every problem reported together with file:line
(:class:`protocol.configfile.ConfigError`). Secrets (MQTT password, AES keys, the password
inside the Redis URL) never appear in error messages nor in ``repr()``.
Durations are in seconds (``*_s``).
"""

from __future__ import annotations

import os
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
    lengths are Redis ``MAXLEN`` caps; ``dispatch_workers`` concurrent ARC/contact dispatches."""

    instance: str
    dead_letter_maxlen: int = 100_000
    event_log_maxlen: int = 1_000_000
    dispatch_workers: int = 4


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
    shared_group: str = "lonewatch-relay"
    keepalive_s: int = 30


@dataclass(frozen=True)
class RedisConfig:
    """``[redis]``: ``url`` as redis-py takes it (``redis://``, ``rediss://``, ``unix://``).
    May hold a password: log :attr:`redacted_url`, never ``url``."""

    url: str = field(default="redis://localhost:6379/0", repr=False)

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"RedisConfig(url={self.redacted_url!r})"


@dataclass(frozen=True)
class ArcConfig:
    """``[arc]``: message format, retry policy and the ordered receivers (primary first; none
    is allowed for firms without an ARC contract). ``backoff_s`` is the first retry delay."""

    format: str = "ADM-CID"
    attempts_per_receiver: int = 3
    backoff_s: float = 0.5
    partition: int = 1
    receivers: tuple[ArcReceiver, ...] = ()


@dataclass(frozen=True)
class RegistrySection:
    """``[registry]``: optional registry TOML loaded at start (:mod:`relay.registry_file`);
    relative paths are resolved against the config file's directory."""

    file: Path | None = None


@dataclass(frozen=True)
class RelayConfig:
    """The whole ``relay.toml``. Build with :func:`load_relay_config` or :meth:`from_dict`."""

    relay: RelaySection
    mqtt: RelayMqttConfig
    redis: RedisConfig = field(default_factory=RedisConfig)
    arc: ArcConfig = field(default_factory=ArcConfig)
    registry: RegistrySection = field(default_factory=RegistrySection)

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
        client_id=t.string("client_id", "", max_len=128) or f"lonewatch-relay-{relay.instance}",
        shared_group=t.string("shared_group", d.shared_group, pattern=r"[A-Za-z0-9_-]{1,64}",
                              describe="1-64 characters A-Z a-z 0-9 _ - (no / + #)"),
        keepalive_s=t.integer("keepalive_s", d.keepalive_s, min=5, max=600),
    )

    t = root.table("redis")
    redis = RedisConfig(url=t.string("url", RedisConfig.url, secret=True,
                                     check=_check_redis_url))

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
    )

    t = root.table("registry")
    file = t.string("file", "")
    registry_path: Path | None = None
    if file:
        registry_path = Path(file).expanduser()
        if not registry_path.is_absolute() and source.base_dir is not None:
            registry_path = source.base_dir / registry_path

    checker.finish()
    return RelayConfig(relay=relay, mqtt=mqtt, redis=redis, arc=arc,
                       registry=RegistrySection(file=registry_path))
