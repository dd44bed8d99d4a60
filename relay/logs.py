"""Relay log output (issue 4 operability): plain text or one JSON object per line, and a
filter that keeps secrets out of every record.

The relay never formats a secret into a log message on purpose; :class:`SecretFilter` is the
second line of defence: any configured secret (broker password, Redis password, AES keys,
gateway URLs) that shows up in a message or exception text — e.g. echoed by a library — is
replaced by ``<hidden>`` before a handler sees it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["JsonFormatter", "SecretFilter", "setup_logging", "secrets_of"]

HIDDEN = "<hidden>"
_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class SecretFilter(logging.Filter):
    """Replace each of ``secrets`` (strings of at least 4 characters) in a record's message,
    arguments and exception text by ``<hidden>``. Attach it to handlers."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, HIDDEN)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        msg = record.getMessage()
        clean = self.scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (Unix s), ``time`` (UTC ISO 8601), ``level``,
    ``logger``, ``thread``, ``msg``, ``exc`` (traceback text, if any) and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        for k, v in vars(record).items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        return json.dumps(out, ensure_ascii=False, default=str)


def secrets_of(cfg: Any) -> list[str]:
    """Every secret value in a :class:`relay.config.RelayConfig`: the broker password, the
    Redis URL's password, the receivers' AES keys, notification URLs and the SMTP password /
    SIM PIN when present."""
    from urllib.parse import parse_qsl, urlsplit

    out = [cfg.mqtt.password]
    try:
        parts = urlsplit(cfg.redis.url)
        out.append(parts.password or "")
        out += [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
    except ValueError:
        pass
    for r in cfg.arc.receivers:
        if r.key:
            out.append(r.key.decode() if isinstance(r.key, bytes) else str(r.key))
    notify, modem = getattr(cfg, "notify", None), getattr(cfg, "modem", None)
    if notify is not None:
        out += [notify.email_url, notify.sms_gateway_url, getattr(notify.smtp, "password", "")]
    if modem is not None:
        out.append(modem.sim_pin)
    return [s for s in out if s]


def setup_logging(*, fmt: str = "text", level: int = logging.INFO, secrets: Iterable[str] = (), stream: Any = None) -> logging.Handler:
    """Log to ``stream`` (default stderr) in ``text`` or ``json`` with secrets scrubbed;
    replaces the root logger's handlers. Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
