"""Console users and roles, passwords hashed with argon2 (issue 13 "Users and roles").

Roles (what each may do is :data:`PERMISSIONS`):

* ``admin`` — everything an operator may, plus users and the audit trail;
* ``operator`` — take charge, resolve, add notes;
* ``viewer`` — reads every page, writes nothing.

Passwords: argon2id through ``argon2-cffi``'s :class:`argon2.PasswordHasher` with its
defaults (RFC 9106 "second recommended option", the OWASP Password Storage Cheat Sheet's
first choice); at least :data:`MIN_PASSWORD` characters (NIST SP 800-63B §5.1.1.2: length,
no composition rules). A hash made with older parameters is re-hashed at the next login.

Redis: ``lw:console:users`` hash, login name → JSON ``{"role", "name", "hash", "gen",
"created_at"}``. ``gen`` grows on every password change or removal so the sessions signed
for the old password stop working (:meth:`UserStore.session_valid`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from relay.store import Store

from .errors import NotFound, UserError

__all__ = ["MIN_PASSWORD", "PERMISSIONS", "ROLES", "User", "UserStore", "console_key"]

ROLES: Final = ("admin", "operator", "viewer")
#: What each role may do: ``read`` pages, ``act`` on alarms (take charge, resolve, note),
#: ``admin`` users and the audit trail.
PERMISSIONS: Final = {"admin": frozenset({"read", "act", "admin"}), "operator": frozenset({"read", "act"}),
                      "viewer": frozenset({"read"})}
MIN_PASSWORD: Final = 10
_LOGIN: Final = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
_HASHER: Final = PasswordHasher()
#: A valid hash of a random password: verified against when the user does not exist, so
#: a wrong user name takes as long as a wrong password (no user enumeration by timing).
_DUMMY_HASH: Final = _HASHER.hash("not a password: " + str(time.time()))


def console_key(kind: str) -> str:
    """``lw:console:<kind>``: the console's own keys in the relay's Redis."""
    return f"lw:console:{kind}"


@dataclass(frozen=True)
class User:
    """A console user: ``login`` (lower case), ``role`` (:data:`ROLES`), ``name`` shown to
    the other contacts when this user takes charge ("Per Jensen"), ``gen`` session generation."""

    login: str
    role: str
    name: str
    gen: int

    def may(self, permission: str) -> bool:
        """Whether the role allows ``permission`` (``read``, ``act``, ``admin``)."""
        return permission in PERMISSIONS.get(self.role, frozenset())


def check_login(login: str) -> str:
    """Normalised login name. Raises UserError unless 1–64 of ``a-z 0-9 . _ @ -``."""
    value = login.strip().lower()
    if not _LOGIN.fullmatch(value):
        raise UserError("user name: 1-64 characters a-z 0-9 . _ @ - (starting with a letter or digit)")
    return value


def check_password(password: str) -> None:
    """Raises UserError if shorter than :data:`MIN_PASSWORD` characters."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")


class UserStore:
    """Users in the relay's Redis. Every method raises :class:`relay.store.StoreError`
    when Redis is unavailable."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.key = console_key("users")

    def _raw(self, login: str) -> dict | None:
        got = self.store._call(self.store.r.hget, self.key, login)
        return json.loads(got) if got else None

    def _put(self, login: str, rec: dict) -> None:
        self.store._call(self.store.r.hset, self.key, login, json.dumps(rec, ensure_ascii=False))

    def add(self, login: str, role: str, password: str, *, name: str = "") -> User:
        """Create a user. Raises UserError (bad name/role/password, or the user exists)."""
        login = check_login(login)
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        check_password(password)
        rec = {"role": role, "name": (name.strip() or login)[:80], "hash": _HASHER.hash(password), "gen": 1,
               "created_at": round(time.time(), 3)}
        if not self.store._call(self.store.r.hsetnx, self.key, login, json.dumps(rec, ensure_ascii=False)):
            raise UserError(f"user {login!r} exists already (use passwd to change the password)")
        return User(login, role, rec["name"], 1)

    def remove(self, login: str) -> None:
        """Delete a user (their sessions stop working at once). Raises NotFound."""
        login = login.strip().lower()
        if not self.store._call(self.store.r.hdel, self.key, login):
            raise NotFound(f"no console user {login!r}")

    def passwd(self, login: str, password: str) -> None:
        """Set a new password; signs out every session of the user. Raises NotFound, UserError."""
        login = login.strip().lower()
        check_password(password)
        rec = self._raw(login)
        if rec is None:
            raise NotFound(f"no console user {login!r}")
        rec["hash"] = _HASHER.hash(password)
        rec["gen"] = int(rec.get("gen", 1)) + 1
        self._put(login, rec)

    def get(self, login: str) -> User | None:
        """The user, or None."""
        rec = self._raw(login.strip().lower())
        if rec is None:
            return None
        return User(login.strip().lower(), rec["role"], rec.get("name", login), int(rec.get("gen", 1)))

    def all(self) -> list[User]:
        """Every user, sorted by login."""
        raw = self.store._call(self.store.r.hgetall, self.key)
        out = []
        for k, v in raw.items():
            rec = json.loads(v)
            out.append(User(k.decode(), rec["role"], rec.get("name", k.decode()), int(rec.get("gen", 1))))
        return sorted(out, key=lambda u: u.login)

    def authenticate(self, login: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None (also for an unknown or malformed
        name, after the same amount of hashing work)."""
        try:
            login = check_login(login)
        except UserError:
            login = ""
        rec = self._raw(login) if login else None
        try:
            _HASHER.verify(rec["hash"] if rec else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if rec is None:
            return None
        if _HASHER.check_needs_rehash(rec["hash"]):
            rec["hash"] = _HASHER.hash(password)
            self._put(login, rec)
        return User(login, rec["role"], rec.get("name", login), int(rec.get("gen", 1)))

    def session_valid(self, login: str, gen: int) -> User | None:
        """The user if a session signed for (``login``, ``gen``) is still good (user exists,
        password not changed since), else None."""
        user = self.get(login) if login else None
        return user if user is not None and user.gen == gen else None
