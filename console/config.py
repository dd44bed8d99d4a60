"""``[console]`` of relay.toml → frozen :class:`ConsoleConfig` (issue 13 "Console").

The console reads the same ``relay.toml`` as the relay: ``[redis] url`` (through
:func:`relay.config.load_relay_config`, so one file validates the same way for both) and its
own ``[console]`` table, validated here with file:line errors (:mod:`protocol.configfile`)::

    [console]
    listen = "127.0.0.1:8080"        # behind a TLS reverse proxy (README)
    language = "da"                  # texts of the console (gettext domain "console")
    tile_url = ""                    # e.g. "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    cookie_secure = "auto"           # auto: Secure when the request came over https
    trusted_proxies = ["127.0.0.1"]  # whose X-Forwarded-For/-Proto uvicorn believes
    session_max_age_s = 28800
    login_max_failures = 5           # per (user name, client address), then wait 2**k s after the k-th
    login_window_s = 300             # a pair's count is forgotten this long after its last failure
    login_max_failures_per_address = 50  # any names, per window (the window starts at the first)
    login_backoff_max_s = 900        # longest back-off of one (name, address) pair
    low_battery_pct = 20
    offline_after_s = 185            # last seen longer ago: shown as offline
    poll_s = 0.25                    # how often Redis is looked at for changes (live feed)
    figures_keep_days = 400          # anonymous monthly-figure facts (no names)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike

from protocol.configfile import ConfigChecker, load_toml

__all__ = ["ConsoleConfig", "ConsoleSettings", "load_console_config"]

COOKIE_SECURE = ("auto", "always", "never")


@dataclass(frozen=True)
class ConsoleSettings:
    """The ``[console]`` table (defaults as in the module docstring). Durations in seconds."""

    listen: str = "127.0.0.1:8080"
    language: str = "en"
    tile_url: str = ""
    cookie_secure: str = "auto"
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)
    session_max_age_s: int = 8 * 3600
    login_max_failures: int = 5
    login_window_s: int = 300
    login_max_failures_per_address: int = 50
    login_backoff_max_s: int = 900
    low_battery_pct: int = 20
    offline_after_s: float = 185.0
    poll_s: float = 0.25
    figures_keep_days: int = 400

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class ConsoleConfig:
    """What a console process needs: the relay's Redis URL (may hold a password: never log
    it) and :class:`ConsoleSettings`."""

    redis_url: str = field(repr=False)
    settings: ConsoleSettings = field(default_factory=ConsoleSettings)
    redis_cluster: bool = False


def _check_listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        return f"must be \"HOST:PORT\" (e.g. \"127.0.0.1:8080\"), got \"{value}\""
    return None


def _check_tile_url(value: str) -> str | None:
    if value and not (value.startswith(("http://", "https://", "/")) and all(p in value for p in ("{z}", "{x}", "{y}"))):
        return "must be an http(s) URL (or a path) with {z}, {x} and {y}, or empty for no map"
    return None


def settings_from(path: str | PathLike[str]) -> ConsoleSettings:
    """Read and validate only ``[console]`` of ``path`` (the relay validates the rest).

    Raises:
        ConfigError: unreadable file or every problem of ``[console]``.
    """
    checker = ConfigChecker(load_toml(path))
    root = checker.root()
    for key in list(root.data):
        if key != "console":
            root.has(key)  # the relay's tables: relay.config checks them
    t = root.table("console")
    d = ConsoleSettings
    s = ConsoleSettings(
        listen=t.string("listen", d.listen, check=_check_listen),
        language=t.string("language", d.language, pattern=r"[a-z]{2,3}(_[A-Z]{2})?", describe="a language code such as da or en"),
        tile_url=t.string("tile_url", d.tile_url, check=_check_tile_url),
        cookie_secure=t.string("cookie_secure", d.cookie_secure, choices=COOKIE_SECURE),
        trusted_proxies=tuple(t.string_list("trusted_proxies", list(d.trusted_proxies))),
        session_max_age_s=t.integer("session_max_age_s", d.session_max_age_s, min=60, max=30 * 86400),
        login_max_failures=t.integer("login_max_failures", d.login_max_failures, min=1, max=1000),
        login_window_s=t.integer("login_window_s", d.login_window_s, min=1, max=86400),
        login_max_failures_per_address=t.integer("login_max_failures_per_address", d.login_max_failures_per_address,
                                                 min=1, max=100000),
        login_backoff_max_s=t.integer("login_backoff_max_s", d.login_backoff_max_s, min=1, max=86400),
        low_battery_pct=t.integer("low_battery_pct", d.low_battery_pct, min=0, max=100),
        offline_after_s=t.number("offline_after_s", d.offline_after_s, min=1, max=86400),
        poll_s=t.number("poll_s", d.poll_s, min=0.05, max=5),
        figures_keep_days=t.integer("figures_keep_days", d.figures_keep_days, min=1, max=3660),
    )
    checker.finish()
    return s


def load_console_config(path: str | PathLike[str]) -> ConsoleConfig:
    """``relay.toml`` → :class:`ConsoleConfig`.

    Raises:
        ConfigError: the file is unreadable or invalid (the relay's part or ``[console]``).
    """
    from relay.config import load_relay_config

    relay = load_relay_config(path)
    return ConsoleConfig(redis_url=relay.redis.url, settings=settings_from(path), redis_cluster=relay.redis.cluster)
