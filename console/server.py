"""Run one console process with uvicorn (``lonewatch console run -c relay.toml``).

uvicorn believes ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only from
``[console] trusted_proxies`` (the TLS reverse proxy, README), so the client address used
by the login throttle and the audit trail, and the https scheme that makes the session
cookie ``Secure``, cannot be forged by a client.
"""

from __future__ import annotations

import logging

from .config import ConsoleConfig

__all__ = ["run"]

log = logging.getLogger(__name__)


def uvicorn_config(cfg: ConsoleConfig, *, host: str | None = None, port: int | None = None):
    """The :class:`uvicorn.Config` of the console (``host``/``port`` override ``listen``)."""
    import uvicorn

    from .web import create_app

    s = cfg.settings
    return uvicorn.Config(create_app(cfg), host=host or s.host, port=port or s.port, proxy_headers=True,
                          forwarded_allow_ips=list(s.trusted_proxies) or None, log_level="warning",
                          access_log=False, lifespan="on", timeout_graceful_shutdown=2, server_header=False)


def run(cfg: ConsoleConfig, *, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT.

    Raises:
        StoreError: the relay's Redis is unreachable at start.
    """
    import uvicorn

    config = uvicorn_config(cfg, host=host, port=port)
    log.info("console listening on http://%s:%d", config.host, config.port)
    uvicorn.Server(config).run()
