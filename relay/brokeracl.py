"""Broker identities (issue 15 "identity at the broker"): relay account names and the
project ACL rendered for them.

Rules, enforced by the shipped Mosquitto configs (``relay/conf/mosquitto*.conf``):

* ``use_username_as_clientid true`` — Mosquitto 2.0.11 (Debian 12) replaces the client id a
  client sends by its user name (for certificate logins the user name is the certificate's CN,
  ``use_identity_as_username``). A device logged in with its own credentials therefore can
  never take over the relay's or another device's session: the client id it claims is ignored.
  Chosen over the dynamic-security plugin because it needs no second source of truth (the
  password file / the CA stay the only identity store) and works the same for both logins.
* Each relay instance logs in with its own account, ``relay`` or ``relay-<instance>``
  (:data:`RELAY_ACCOUNT_RE`), so two instances never share a client id. The ACL gives each such
  account the relay's topics: Mosquitto ACLs have no user-name wildcards, so the ``user relay``
  block of ``relay/conf/acl`` is repeated once per account (:func:`render_acl`).
* Device ids that look like relay accounts are refused by ``provision``
  (:func:`is_relay_account`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from .conffiles import CONF_DIR

#: A relay's broker account: ``relay`` or ``relay-<instance>`` (instance as in ``[relay] instance``).
RELAY_ACCOUNT_RE: Final = re.compile(r"^relay(-[A-Za-z0-9._-]{1,64})?$")

_TEMPLATE_USER = "relay"


def is_relay_account(name: str) -> bool:
    """True if ``name`` is a relay account name (never a device's)."""
    return bool(RELAY_ACCOUNT_RE.match(name))


def relay_account(instance: str) -> str:
    """The broker account of relay instance ``instance``: ``relay-<instance>``.

    Raises:
        ValueError: the result is not a valid relay account name.
    """
    name = f"relay-{instance}"
    if not is_relay_account(name):
        raise ValueError(f"relay instance {instance!r} gives no valid broker account name")
    return name


def _split_template(text: str) -> tuple[list[str], list[str], list[str]]:
    """(lines before the relay block, the relay block's topic lines, lines after)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split() == ["user", _TEMPLATE_USER])
    end = start + 1
    while end < len(lines) and lines[end].split()[:1] == ["topic"]:
        end += 1
    return lines[:start], lines[start + 1:end], lines[end:]


def render_acl(relay_accounts: Iterable[str], template: str | None = None) -> str:
    """The project ACL (``relay/conf/acl``) with one ``user`` block per relay account.

    Args:
        relay_accounts: account names; each must match :data:`RELAY_ACCOUNT_RE`.
        template: ACL text to render (default: the shipped ``relay/conf/acl``).

    Raises:
        ValueError: a name that is not a relay account, or no account at all.
    """
    accounts = sorted(set(relay_accounts))
    if not accounts:
        raise ValueError("the broker ACL needs at least one relay account")
    bad = [a for a in accounts if not is_relay_account(a)]
    if bad:
        raise ValueError(f"not relay account names (relay or relay-<instance>): {', '.join(bad)}")
    head, topics, tail = _split_template(template if template is not None else (CONF_DIR / "acl").read_text())
    block: list[str] = []
    for a in accounts:
        block += [f"user {a}", *topics]
    return "\n".join(head + block + tail) + "\n"


def acl_relay_accounts(text: str) -> list[str]:
    """The relay accounts an ACL text names in ``user`` lines."""
    return [ln.split()[1] for ln in text.splitlines() if ln.split()[:1] == ["user"] and len(ln.split()) == 2
            and is_relay_account(ln.split()[1])]


def ensure_relay_account(acl_path: Path, account: str) -> str:
    """Add ``account``'s relay block to the ACL file at ``acl_path`` if missing (the file
    must exist). Returns a note of what changed ("" if nothing).

    Raises:
        ValueError: not a relay account name. OSError: cannot read/write the file.
    """
    if not is_relay_account(account):
        raise ValueError(f"{account!r} is not a relay account name (relay or relay-<instance>)")
    text = acl_path.read_text()
    if account in acl_relay_accounts(text):
        return ""
    _, topics, _ = _split_template((CONF_DIR / "acl").read_text())
    with open(acl_path, "a") as fh:
        fh.write(("" if text.endswith("\n") or not text else "\n")
                 + f"# relay account added by lonewatch\nuser {account}\n" + "\n".join(topics) + "\n")
    return f"added relay account {account} to {acl_path}"
