"""Sessions, CSRF protection and login throttling of the console (issue 13).

**Sessions** — a cookie signed with HMAC (Starlette's ``SessionMiddleware``, itsdangerous
``TimestampSigner``), ``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the request came over
https (also through a trusted TLS reverse proxy's ``X-Forwarded-Proto``; ``cookie_secure``
= ``auto``/``always``/``never``). The cookie carries only a random session id and the CSRF
token; the session itself is ``lw:{console}:session:<sid>`` in Redis (login, session
generation, expiry = ``session_max_age_s``), so signing out, removing a user or changing a
password ends the session on every console at once (OWASP Session Management Cheat Sheet:
server-side invalidation). The signing key is ``lw:console:secret``, made once by the first
console (``SET NX``), shared by all consoles of the installation.

**CSRF** — the *synchronizer token pattern* of the OWASP Cross-Site Request Forgery
Prevention Cheat Sheet: a random 256-bit token per session, kept in the signed session,
sent in a hidden ``csrf`` field of every form (or an ``X-CSRF-Token`` header) and compared
in constant time on every POST; plus the cheat sheet's defence in depth: a request whose
``Origin`` header names another host is refused, and the cookie is ``SameSite=Lax``.

**Login throttling** — failed sign-ins are counted per (user name, client address) in Redis
(shared by all consoles); from ``login_max_failures`` on, that pair waits with exponential
back-off (``2**k`` s after the k-th failure, at most ``login_backoff_max_s``) and attempts in the wait are refused
(429) without checking the password; each address also has ``login_max_failures_per_address``
failures (any names) per ``login_window_s`` (spraying). A good sign-in clears the address's
counters. (OWASP Authentication Cheat Sheet "Login Throttling"; NIST SP 800-63B §5.2.2.)
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Callable, Final

from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.store import Store

from .users import console_key

__all__ = ["CSRF_FIELD", "LoginThrottle", "SESSIONS_INDEX", "SchemeSessions", "SessionStore", "session_key", "csrf_ok", "new_csrf_token",
           "origin_ok", "session_secret"]

CSRF_FIELD: Final = "csrf"
COOKIE: Final = "lwconsole"


def session_secret(store: Store) -> str:
    """The signing key shared by every console (created by the first one)."""
    key = console_key("secret")
    store._call(store.r.set, key, secrets.token_hex(32), nx=True)
    return store._call(store.r.get, key).decode()


def new_csrf_token() -> str:
    """A fresh 256-bit token (URL-safe text)."""
    return secrets.token_urlsafe(32)


def csrf_ok(session_token: str | None, sent: str | None) -> bool:
    """True only if both are present and equal (constant-time comparison)."""
    if not session_token or not sent:
        return False
    return hmac.compare_digest(session_token.encode(), sent.encode())


def origin_ok(origin: str | None, host: str | None) -> bool:
    """False when an ``Origin`` header is present and names another host than ``Host``
    (a cross-site form post); True without ``Origin`` (the token decides)."""
    if not origin:
        return True
    if origin == "null" or not host:
        return False
    return origin.split("://", 1)[-1].rstrip("/") == host


class SchemeSessions:
    """ASGI middleware: the session cookie with ``Secure`` for https requests and without
    for plain http (``auto``), or always/never. Two SessionMiddleware with the same key."""

    def __init__(self, app: ASGIApp, *, secret: str, max_age_s: int, secure: str = "auto") -> None:
        kw = dict(secret_key=secret, session_cookie=COOKIE, max_age=max_age_s, same_site="lax")
        self.plain = SessionMiddleware(app, https_only=False, **kw)  # type: ignore[arg-type]
        self.tls = SessionMiddleware(app, https_only=True, **kw)  # type: ignore[arg-type]
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        https = scope.get("scheme") in ("https", "wss")
        use_tls = self.secure == "always" or (self.secure == "auto" and https)
        await (self.tls if use_tls else self.plain)(scope, receive, send)


#: Session keys as the relay's retention purge knows them (:mod:`relay.retention`,
#: ``sessions_days``): a zset of session id → last used (Unix s) and one hash per session.
SESSIONS_INDEX: Final = "lw:{console}:sessions"


def session_key(sid: str) -> str:
    """``lw:{console}:session:<sid>``."""
    return f"lw:{{console}}:session:{sid}"


class SessionStore:
    """Server-side sessions: ``lw:{console}:session:<sid>`` hashes that expire after
    ``max_age_s``, indexed by last use in ``lw:{console}:sessions`` so that the relay's
    retention purge (``[retention] sessions_days``) removes the ones unused that long."""

    def __init__(self, store: Store, max_age_s: int) -> None:
        self.store, self.max_age_s = store, max_age_s

    def create(self, login: str, gen: int, addr: str) -> str:
        """A new session id for ``login``."""
        sid = secrets.token_urlsafe(24)
        now = time.time()
        pipe = self.store.r.pipeline(transaction=False)
        pipe.hset(session_key(sid), mapping={"login": login, "gen": gen, "created_at": f"{now:.3f}", "addr": addr[:64]})
        pipe.expire(session_key(sid), self.max_age_s)
        pipe.zadd(SESSIONS_INDEX, {sid: now})
        pipe.zremrangebyscore(SESSIONS_INDEX, "-inf", now - self.max_age_s)  # expired ones leave the index
        self.store._call(pipe.execute)
        return sid

    def get(self, sid: str) -> tuple[str, int] | None:
        """``(login, gen)`` of a live session (its last use noted), or None."""
        if not sid:
            return None
        pipe = self.store.r.pipeline(transaction=False)
        pipe.hgetall(session_key(sid))
        pipe.zadd(SESSIONS_INDEX, {sid: time.time()}, xx=True)
        raw, _ = self.store._call(pipe.execute)
        if not raw or b"login" not in raw:
            return None
        return raw[b"login"].decode(), int(raw.get(b"gen", b"0"))

    def end(self, sid: str) -> None:
        """Sign out."""
        if sid:
            pipe = self.store.r.pipeline(transaction=False)
            pipe.delete(session_key(sid))
            pipe.zrem(SESSIONS_INDEX, sid)
            self.store._call(pipe.execute)


class LoginThrottle:
    """Failed sign-ins counted per (user name, client address) with exponential back-off,
    and per address across user names (Redis, shared by all consoles).

    * ``(name, address)``: from ``max_failures`` failures on, the pair waits ``2**k`` s after
      its ``k``-th failure (5 → 32 s, 6 → 64 s, …) counted from the last failure, capped at ``backoff_max_s``; the count is forgotten ``window_s`` after the
      last failure (or the cap, if longer). An attacker elsewhere never locks the real user out.
    * address: ``addr_max_failures`` failures (any names) within ``window_s`` (the window
      starts at the first) block that address (password spraying).
    * A good sign-in clears the pair's and the address's counters.

    Source: OWASP Authentication Cheat Sheet "Login Throttling" (per-account *and* per-source,
    exponential back-off instead of hard lockout); NIST SP 800-63B §5.2.2. ``clock``: Unix s.
    """

    def __init__(self, store: Store, max_failures: int, window_s: int, *, addr_max_failures: int = 50,
                 backoff_max_s: int = 900, clock: Callable[[], float] = time.time) -> None:
        self.store, self.max_failures, self.window_s = store, max_failures, window_s
        self.addr_max_failures, self.backoff_max_s, self.clock = addr_max_failures, backoff_max_s, clock

    def _keys(self, login: str, addr: str) -> tuple[str, str]:
        name, where = login.strip().lower()[:64], addr[:64]
        return console_key(f"loginfail:pair:{where}|{name}"), console_key(f"loginfail:addr:{where}")

    def delay_s(self, failures: int) -> float:
        """Seconds to wait after the last of ``failures`` failures (0 below ``max_failures``)."""
        if failures < self.max_failures:
            return 0.0
        return float(min(2 ** min(failures, 30), self.backoff_max_s))

    def blocked(self, login: str, addr: str) -> bool:
        """True while the (name, address) pair is in its back-off, or the address has
        ``addr_max_failures`` failures in the window."""
        pair, where = self._keys(login, addr)
        pipe = self.store.r.pipeline(transaction=False)
        pipe.hmget(pair, "n", "last")
        pipe.get(where)
        (n, last), addr_count = self.store._call(pipe.execute)
        if addr_count is not None and int(addr_count) >= self.addr_max_failures:
            return True
        if n is None or last is None:
            return False
        return self.clock() < float(last) + self.delay_s(int(n))

    def failed(self, login: str, addr: str) -> None:
        """Count one failure for the pair (back-off from now) and for the address."""
        pair, where = self._keys(login, addr)
        pipe = self.store.r.pipeline(transaction=False)
        pipe.hincrby(pair, "n", 1)
        pipe.hset(pair, "last", f"{self.clock():.3f}")
        pipe.expire(pair, max(self.window_s, self.backoff_max_s))
        pipe.incr(where)
        pipe.expire(where, self.window_s, nx=True)
        self.store._call(pipe.execute)

    def succeeded(self, login: str, addr: str) -> None:
        """A good sign-in clears the pair's and the address's counters."""
        self.store._call(self.store.r.delete, *self._keys(login, addr))
