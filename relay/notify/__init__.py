"""Notification channels for contacts (SPEC §3 "Contacts … reached by SMS and e-mail").

* :mod:`relay.notify.sms_modem` — SMS through a modem attached to the relay (the device's AT
  driver :class:`modem.at.Modem` and PDU module :mod:`modem.sms`, reused), and
  the inbound SMS that carry contacts' acknowledgements.
* :mod:`relay.notify.gateways` — e-mail (SMTP) and SMS gateways through apprise.
* :mod:`relay.notify.templates` — the texts, in the contact's language.

Every channel has ``name`` and ``send(to, subject, body) -> Delivery`` and never raises for a
failed delivery: the :class:`Delivery` says what happened, without secrets, and goes into
the alarm's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol.errors import LonewatchError

__all__ = ["Channel", "Delivery", "NotifyError"]


class NotifyError(LonewatchError):
    """A notification channel is misconfigured (bad apprise URL, no modem port …)."""


@dataclass(frozen=True)
class Delivery:
    """The outcome of one send on one channel: ``channel`` name (``sms-modem``,
    ``sms-gateway``, ``email``), ``ok``, ``detail`` (message references, or the reason it
    failed; never a secret)."""

    channel: str
    ok: bool
    detail: str = ""


class Channel(Protocol):
    """A way to reach a contact. ``to`` is an E.164 phone number or an e-mail address."""

    name: str

    def send(self, to: str, subject: str, body: str) -> Delivery:
        """Deliver ``body`` (``subject`` where the channel has one); never raises for a
        delivery failure."""
        ...
