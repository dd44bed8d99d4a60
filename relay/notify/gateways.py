"""E-mail and SMS gateways through apprise (a well-kept library that speaks SMTP and the
common SMS gateway APIs: Twilio, ClickSend, BulkSMS, Sinch, MessageBird, Vonage …), so the
relay has no hand-written HTTP or SMTP client.

A channel is an apprise URL *template* with ``{to}`` where the recipient goes (URL-quoted):

* SMS gateway, e.g. ``twilio://ACCOUNT_SID:AUTH_TOKEN@+4570000000/{to}``;
* e-mail, e.g. ``mailtos://smtp.example.org:587?user=relay&pass=…&from=alarm@example.org&to={to}``,
  or built from ``[notify.smtp]`` by :func:`smtp_url`.

These URLs hold secrets: they never appear in logs, errors or :class:`Delivery` details
(:func:`redact`).
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote, urlencode

import apprise

from . import Delivery, NotifyError

__all__ = ["AppriseChannel", "redact", "smtp_url"]

log = logging.getLogger(__name__)
_SECURITY = {"starttls": ("mailtos", "starttls"), "ssl": ("mailtos", "ssl"), "none": ("mailto", "insecure")}
#: ``scheme://user:password@`` and ``pass=``/``password=``/``token=``/``key=`` query values.
_SECRET_RE = re.compile(r"(?i)(://)[^/@\s]*@|((?:pass|password|token|secret|apikey|key)=)[^&\s]*")


def redact(text: str) -> str:
    """Hide credentials in apprise URLs and log lines: ``twilio://<hidden>@…``, ``pass=<hidden>``."""
    return _SECRET_RE.sub(lambda m: (m.group(1) + "<hidden>@") if m.group(1) else m.group(2) + "<hidden>", text)


def smtp_url(host: str, port: int, *, security: str = "starttls", username: str = "",
             password: str = "", sender: str) -> str:
    """The apprise e-mail URL template (with ``{to}``) for an SMTP server.

    ``security``: ``starttls`` (port 587), ``ssl`` (465) or ``none`` (plain SMTP, e.g. a
    local relay on port 25). Raises NotifyError for an unknown ``security``."""
    if security not in _SECURITY:
        raise NotifyError(f"smtp security must be one of {', '.join(_SECURITY)}, got {security!r}")
    scheme, mode = _SECURITY[security]
    query = {"from": sender, "mode": mode, "format": "text"}
    if username:
        query["user"] = username
    if password:
        query["pass"] = password
    return f"{scheme}://{host}:{port}/?{urlencode(query, quote_via=quote)}&to={{to}}"


class AppriseChannel:
    """One apprise URL template as a :class:`relay.notify.Channel`.

    Args:
        name: ``"email"`` or ``"sms-gateway"`` (shown in the alarm's history).
        url_template: apprise URL with ``{to}``; a secret.
        title: whether the subject is sent (e-mail: yes; SMS gateways: the body only).

    Raises:
        NotifyError: the template lacks ``{to}`` or apprise does not understand it (checked
            once here with a sample recipient, so a typo fails at relay start).
    """

    def __init__(self, name: str, url_template: str, *, title: bool = True) -> None:
        if "{to}" not in url_template:
            raise NotifyError(f"{name}: the apprise URL needs {{to}} where the recipient goes")
        self.name = name
        self._template = url_template
        self._title = title
        sample = "+4520123456" if "sms" in name else "someone@example.org"
        if apprise.Apprise.instantiate(self._url(sample)) is None:
            raise NotifyError(f"{name}: apprise does not understand the URL {redact(url_template)}")
        self._lock = threading.Lock()  # apprise's LogCapture is process-wide

    def _url(self, to: str) -> str:
        return self._template.replace("{to}", quote(to, safe="@+"))

    def send(self, to: str, subject: str, body: str) -> Delivery:
        """Send through apprise; body as plain text (UTF-8, so Arabic arrives as written)."""
        url = self._url(to)
        notifier = apprise.Apprise()
        if not notifier.add(url):
            return Delivery(self.name, False, f"apprise refused the URL {redact(self._template)}")
        with self._lock, apprise.LogCapture(level=logging.WARNING) as logs:
            try:
                ok = bool(notifier.notify(body=body, title=subject if self._title else "",
                                          body_format=apprise.NotifyFormat.TEXT))
            except Exception as exc:  # a library bug must not stop escalation
                log.exception("%s: apprise failed", self.name)
                return Delivery(self.name, False, redact(f"apprise error: {type(exc).__name__}: {exc}"))
            captured = logs.getvalue().strip().splitlines()
        if ok:
            return Delivery(self.name, True, "accepted by the server")
        reason = redact(captured[-1].strip()) if captured else "apprise reported a failure"
        for secret in re.findall(r"(?:pass|password|token)=([^&]+)", url):
            reason = reason.replace(secret, "<hidden>")
        return Delivery(self.name, False, reason[:300])
