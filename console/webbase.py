"""The console's web plumbing (issue 13): the per-process :class:`Console` (stores,
feed, templates), the gettext-enabled Jinja2 environment, and the two handler decorators —
:func:`_read` (a page for a signed-in user) and :func:`_write` (a POST: CSRF token, ``Origin``,
session and role checked, every refusal audited) — plus the security headers."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from relay.store import Store, StoreError

from . import figures, queries
from .audit import Audit
from .config import ConsoleConfig
from .errors import Forbidden
from .live import Feed, Snapshot
from .queries import N_
from .security import CSRF_FIELD, LoginThrottle, SessionStore, csrf_ok, new_csrf_token, origin_ok
from .users import User, UserStore

__all__ = ["Console", "card_url", "template_env"]

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _clock(ts: float | None) -> str:
    if not ts:
        return "—"
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} s" if value < 60 else _ago(value)


def card_url(worker: str) -> str:
    """The console path of ``worker``'s card PDF (``/card/Anna%20Hansen``; :mod:`console.web_card`)."""
    return "/card/" + quote(worker, safe="")


def template_env(language: str) -> jinja2.Environment:
    """The Jinja2 environment with the gettext catalog of domain ``console`` in ``language``
    (Jinja2's i18n extension, newstyle gettext: ``_("…")`` and ``{% trans %}``)."""
    import i18n

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(i18n.translation("console", language), newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(ago=_ago, clock=_clock, secs=_secs)
    env.globals.update(language=language, rtl=language in ("ar", "he", "fa", "ur"), OUTCOME_LABELS=queries.OUTCOME_LABELS,
                       STATE_LABELS=queries.STATE_LABELS, KIND_LABELS=queries.KIND_LABELS,
                       ROLE_LABELS=queries.ROLE_LABELS, card_url=card_url)
    return env


class Console:
    """Everything one console process holds (all state is in Redis)."""

    def __init__(self, cfg: ConsoleConfig, store: Store) -> None:
        s = cfg.settings
        self.cfg, self.settings, self.store = cfg, s, store
        self.users = UserStore(store)
        self.sessions = SessionStore(store, s.session_max_age_s)
        self.throttle = LoginThrottle(store, s.login_max_failures, s.login_window_s,
                                      addr_max_failures=s.login_max_failures_per_address,
                                      backoff_max_s=s.login_backoff_max_s)
        self.audit = Audit(store)
        self.env = template_env(s.language)
        self.feed = Feed(store, s.poll_s, on_minute=lambda: figures.refresh_month(store, figures.month_of(time.time()),
                                                                                s.figures_keep_days))

    # --- rendering --------------------------------------------------------------------

    def page(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        token = request.session.get("csrf")
        if not token:
            token = request.session["csrf"] = new_csrf_token()
        user = ctx.pop("user", None) or request.scope.get("lw_user")
        html = self.env.get_template(name).render(user=user, csrf=token, csrf_field=CSRF_FIELD, path=request.url.path,
                                                  tile_url=self.settings.tile_url, **ctx)
        return HTMLResponse(html, status_code=status, headers=_NO_STORE)

    def queue_html(self, snap: Snapshot, user: User, csrf: str) -> tuple[str, list[dict[str, Any]]]:
        rows = queries.queue(list(snap.alarms))
        html = self.env.get_template("_queue_rows.html").render(rows=rows, user=user, csrf=csrf, csrf_field=CSRF_FIELD,
                                                                redis_ok=snap.redis_ok)
        return html, rows

    # --- who is asking ----------------------------------------------------------------

    def current_user(self, request: Request) -> User | None:
        got = self.sessions.get(request.session.get("sid", ""))
        return None if got is None else self.users.session_valid(*got)


_NO_STORE = {"Cache-Control": "no-store"}
#: What the alarm page says after an action (``?done=``); msgids.
NOTICES = {
    "take_acked": N_("You have taken charge. Escalation stopped; the contacts told so far are told that you have it."),
    "take_already": N_("Someone else had already taken charge (see who has it)."),
    "take_closed": N_("The alarm was already closed (cancelled or restored): nothing to take."),
    "take_missing": N_("No such alarm."),
    "resolve_resolved": N_("Resolved."),
    "resolve_already": N_("This alarm was already resolved."),
    "resolve_closed": N_("Could not take charge of the alarm first, so it was not resolved."),
    "resolve_missing": N_("No such alarm."),
    "note": N_("Note added to the history."),
    "note_missing": N_("No such alarm: the note was not kept."),
}
_SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: https: http:; style-src 'self'; "
                                 b"script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def _addr(request: Request) -> str:
    return request.client.host if request.client else ""


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse("/login?next=" + quote(request.url.path), status_code=303)


def _read(fn: Callable[..., Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A page for any signed-in user (``read``); redirects to the login page otherwise."""

    async def handler(request: Request) -> Response:
        c: Console = request.app.state.console
        try:
            user = await run_in_threadpool(c.current_user, request)
            if user is None:
                return _login_redirect(request)
            request.scope["lw_user"] = user
            return await fn(request, c, user)
        except StoreError:
            return c.page(request, "error.html", 503, title=N_("Relay data unavailable"),
                          message=N_("The relay's Redis does not answer. The console shows nothing it cannot read; "
                                  "SMS and the relay keep working on their own. Try again in a moment."))

    return handler


def _write(permission: str, action: str) -> Callable:
    """A POST handler: CSRF token + Origin, a live session, the role's ``permission``;
    every refusal answered 403 and written to the audit trail."""

    def deco(fn: Callable[..., Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            c: Console = request.app.state.console
            try:
                form = await request.form()
                target = request.path_params.get("alarm_id", "")
                user = await run_in_threadpool(c.current_user, request)
                sent = form.get(CSRF_FIELD) or request.headers.get("x-csrf-token")
                if not origin_ok(request.headers.get("origin"), request.headers.get("host")) or \
                        not csrf_ok(request.session.get("csrf"), str(sent) if sent else None):
                    await run_in_threadpool(c.audit.record, user.login if user else "-", user.role if user else "-", action,
                                            target=target, outcome="refused", detail="CSRF token missing or wrong",
                                            addr=_addr(request))
                    return c.page(request, "error.html", 403, user=user, title=N_("Refused"),
                                  message=N_("This form was not sent by this console page (security token missing or "
                                          "wrong). Reload the page and try again."))
                if user is None:
                    return _login_redirect(request)
                request.scope["lw_user"] = user
                if not user.may(permission):
                    await run_in_threadpool(c.audit.record, user.login, user.role, action, target=target,
                                            outcome="refused", detail=f"role {user.role} may not {permission}",
                                            addr=_addr(request))
                    return c.page(request, "error.html", 403, title=N_("Refused"),
                                  message=N_("Your role may look but not change anything."))
                return await fn(request, c, user, form)
            except Forbidden as exc:
                return c.page(request, "error.html", 403, title=N_("Refused"), message=str(exc))
            except StoreError:
                return c.page(request, "error.html", 503, title=N_("Relay data unavailable"),
                              message=N_("The relay's Redis does not answer: nothing was changed. Try again, or use "
                                      "an SMS reply / `lonewatch alarm ack` on the relay host."))

        handler.csrf_protected = True  # type: ignore[attr-defined]
        return handler

    return deco


class _SecurityHeaders:
    """Content-Security-Policy (no inline script, assets only from the console) and friends."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_wrapper if scope["type"] == "http" else send)
