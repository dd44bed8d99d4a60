"""Errors of the console (one root: :class:`protocol.errors.LonewatchError`)."""

from __future__ import annotations

from protocol.errors import LonewatchError

__all__ = ["ConsoleError", "Forbidden", "NotFound", "UserError"]


class ConsoleError(LonewatchError):
    """Something the console could not do."""


class UserError(ConsoleError, ValueError):
    """A bad user name, role or password (the message says which rule)."""


class Forbidden(ConsoleError, PermissionError):
    """The signed-in user's role may not do this (a viewer writing, an operator administering)."""


class NotFound(ConsoleError, LookupError):
    """No such alarm, user or page."""
