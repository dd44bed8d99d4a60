"""The console's pages and routes (Starlette; issue 13). Build with :func:`create_app`.

Routes (all but ``/login``, ``/healthz`` and ``/static`` need a session; every POST goes
through :func:`_write`, which checks the CSRF token, the ``Origin`` and the role, and
audits a refusal):

====================================  ======  ============================================
``/``                                 GET     alarm queue (live: ``/events``)
``/events``                           GET     Server-Sent Events: ``queue`` (HTML + ids)
``/alarm/{id}``                       GET     one alarm: facts, map/positions, history
``/alarm/{id}/take``                  POST    take charge (operator, admin)
``/alarm/{id}/resolve``               POST    resolve with outcome + note (operator, admin)
``/alarm/{id}/note``                  POST    add a note (operator, admin)
``/workers``                          GET     workers on shift
``/figures`` / ``/figures.csv``       GET     monthly figures (``?month=YYYY-MM``)
``/admin``                            GET     users and the audit trail (admin)
``/admin/users/add|remove|passwd``    POST    user administration (admin)
``/login`` / ``/logout``              GET/POST
====================================  ======  ============================================
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from relay.store import Store, StoreError

from . import actions, figures, queries
from .audit import Audit
from .config import ConsoleConfig
from .errors import Forbidden, NotFound, UserError
from .live import Feed, Snapshot
from .security import CSRF_FIELD, LoginThrottle, SchemeSessions, SessionStore, csrf_ok, new_csrf_token, origin_ok, session_secret
from .queries import N_
from .users import MIN_PASSWORD, ROLES, User, UserStore

__all__ = ["create_app", "template_env"]

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


def template_env(language: str) -> jinja2.Environment:
    """The Jinja2 environment with the gettext catalog of domain ``console`` in ``language``
    (Jinja2's i18n extension, newstyle gettext: ``_("…")`` and ``{% trans %}``)."""
    import i18n

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(i18n.translation("console", language), newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(ago=_ago, clock=_clock, secs=_secs)
    env.globals.update(language=language, rtl=language in ("ar", "he", "fa", "ur"), OUTCOME_LABELS=queries.OUTCOME_LABELS,
                       STATE_LABELS=queries.STATE_LABELS, KIND_LABELS=queries.KIND_LABELS)
    return env


class Console:
    """Everything one console process holds (all state is in Redis)."""

    def __init__(self, cfg: ConsoleConfig, store: Store) -> None:
        s = cfg.settings
        self.cfg, self.settings, self.store = cfg, s, store
        self.users = UserStore(store)
        self.sessions = SessionStore(store, s.session_max_age_s)
        self.throttle = LoginThrottle(store, s.login_max_failures, s.login_window_s)
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
ADMIN_NOTICES = {"user_added": N_("User added."), "user_removed": N_("User removed; their sessions ended."),
                 "user_passwd": N_("Password changed; the user's sessions ended.")}
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


# --- sign-in ------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    c: Console = request.app.state.console
    return c.page(request, "login.html", next=request.query_params.get("next", "/"))


async def login_post(request: Request) -> Response:
    c: Console = request.app.state.console
    form = await request.form()
    login, password = str(form.get("username", "")), str(form.get("password", ""))
    nxt = str(form.get("next", "/"))
    nxt = nxt if nxt.startswith("/") and not nxt.startswith("//") else "/"
    addr = _addr(request)
    if not origin_ok(request.headers.get("origin"), request.headers.get("host")) or \
            not csrf_ok(request.session.get("csrf"), str(form.get(CSRF_FIELD) or "") or None):
        await run_in_threadpool(c.audit.record, login[:64] or "-", "-", "login", outcome="refused",
                                detail="CSRF token missing or wrong", addr=addr)
        return c.page(request, "login.html", 403, next=nxt, error=N_("The sign-in form expired or was not sent by this "
                                                                   "page. Please try again."))
    try:
        if await run_in_threadpool(c.throttle.blocked, login, addr):
            await run_in_threadpool(c.audit.record, login[:64], "-", "login", outcome="throttled", addr=addr)
            return c.page(request, "login.html", 429, next=nxt, error=N_("Too many failed sign-ins. Wait a few minutes "
                                                                       "and try again."))
        user = await run_in_threadpool(c.users.authenticate, login, password)
        if user is None:
            await run_in_threadpool(c.throttle.failed, login, addr)
            await run_in_threadpool(c.audit.record, login[:64], "-", "login", outcome="wrong_password", addr=addr)
            return c.page(request, "login.html", 401, next=nxt, error=N_("Wrong user name or password."))
        await run_in_threadpool(c.throttle.succeeded, login, addr)
        sid = await run_in_threadpool(c.sessions.create, user.login, user.gen, addr)
        await run_in_threadpool(c.audit.record, user.login, user.role, "login", addr=addr)
    except StoreError:
        return c.page(request, "login.html", 503, next=nxt, error=N_("The relay's Redis does not answer; try again."))
    request.session.clear()  # a new session id and token at sign-in (no session fixation)
    request.session.update(sid=sid, csrf=new_csrf_token())
    return RedirectResponse(nxt, status_code=303)


@_write("read", "logout")
async def logout(request: Request, c: Console, user: User, form: Any) -> Response:
    await run_in_threadpool(c.sessions.end, request.session.get("sid", ""))
    await run_in_threadpool(c.audit.record, user.login, user.role, "logout", addr=_addr(request))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# --- pages --------------------------------------------------------------------------------


@_read
async def queue_page(request: Request, c: Console, user: User) -> Response:
    await c.feed.poll_once()  # a page load shows what Redis holds now
    snap = c.feed.snapshot
    if not request.session.get("csrf"):
        request.session["csrf"] = new_csrf_token()
    html, rows = c.queue_html(snap, user, request.session["csrf"])
    return c.page(request, "queue.html", rows_html=html, ids=[r["id"] for r in rows], version=snap.version)


@_read
async def events(request: Request, c: Console, user: User) -> Response:
    csrf = request.session.get("csrf", "")

    async def stream():
        yield "retry: 1000\n\n"
        version = -1
        while True:
            snap = await c.feed.wait_change(version, 15.0)
            if snap.version == version:
                yield ": keep-alive\n\n"
                continue
            version = snap.version
            html, rows = c.queue_html(snap, user, csrf)
            data = {"html": html, "ids": [r["id"] for r in rows], "urgent": [r["id"] for r in rows if r["needs_someone"]],
                    "redis_ok": snap.redis_ok, "version": version}
            yield f"event: queue\nid: {version}\ndata: {json.dumps(data)}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@_read
async def alarm_page(request: Request, c: Console, user: User) -> Response:
    alarm_id = request.path_params["alarm_id"]
    alarm = await run_in_threadpool(queries.alarm_view, c.store, alarm_id)
    if alarm is None:
        return c.page(request, "error.html", 404, title=N_("No such alarm"),
                      message=N_("There is no such alarm (alarm records are kept 30 days)."))
    history = await run_in_threadpool(queries.history_view, c.store, alarm_id)
    return c.page(request, "alarm.html", alarm=alarm, history=history, outcomes=queries.OUTCOMES,
                  notice=NOTICES.get(request.query_params.get("done", ""), ""))


@_read
async def workers_page(request: Request, c: Console, user: User) -> Response:
    s = c.settings
    rows = await run_in_threadpool(lambda: queries.workers(c.store, low_battery_pct=s.low_battery_pct,
                                                           offline_after_s=s.offline_after_s))
    return c.page(request, "workers.html", rows=rows, low_battery_pct=s.low_battery_pct)


def _month(request: Request) -> str:
    month = request.query_params.get("month", "") or figures.month_of(time.time())
    figures.month_range(month)  # ValueError on junk
    return month


@_read
async def figures_page(request: Request, c: Console, user: User) -> Response:
    try:
        month = _month(request)
    except ValueError:
        return c.page(request, "error.html", 400, title=N_("Bad month"), message=N_("Give the month as YYYY-MM, e.g. 2026-12."))
    fig = await run_in_threadpool(lambda: figures.monthly(c.store, month, keep_days=c.settings.figures_keep_days))
    return c.page(request, "figures.html", fig=fig)


@_read
async def figures_csv(request: Request, c: Console, user: User) -> Response:
    try:
        month = _month(request)
    except ValueError:
        return PlainTextResponse("month must be YYYY-MM\n", status_code=400)
    fig = await run_in_threadpool(lambda: figures.monthly(c.store, month, keep_days=c.settings.figures_keep_days))
    return Response(figures.figures_csv(fig), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="lonewatch-figures-{month}.csv"', **_NO_STORE})


@_read
async def admin_page(request: Request, c: Console, user: User) -> Response:
    if not user.may("admin"):
        return c.page(request, "error.html", 403, title=N_("Refused"), message=N_("Only an admin sees users and the audit trail."))
    users = await run_in_threadpool(c.users.all)
    audit = await run_in_threadpool(c.audit.recent, 300)
    return c.page(request, "admin.html", users=users, audit=audit, roles=ROLES, min_password=MIN_PASSWORD,
                  notice=ADMIN_NOTICES.get(request.query_params.get("done", ""), ""))


# --- actions ------------------------------------------------------------------------------


def _back(alarm_id: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"/alarm/{quote(alarm_id, safe=':')}?done={done}", status_code=303)


@_write("act", "take_charge")
async def take_post(request: Request, c: Console, user: User, form: Any) -> Response:
    alarm_id = request.path_params["alarm_id"]
    outcome, _who = await run_in_threadpool(lambda: actions.take_charge(c.store, user, alarm_id, addr=_addr(request)))
    await c.feed.poll_once()
    if form.get("from") == "queue":
        return RedirectResponse("/", status_code=303)
    return _back(alarm_id, f"take_{outcome}")


@_write("act", "resolve")
async def resolve_post(request: Request, c: Console, user: User, form: Any) -> Response:
    alarm_id = request.path_params["alarm_id"]
    try:
        result, _ = await run_in_threadpool(lambda: actions.resolve(c.store, user, alarm_id, str(form.get("outcome", "")),
                                                                    str(form.get("note", "")), addr=_addr(request)))
    except UserError as exc:
        return c.page(request, "error.html", 400, title=N_("Not resolved"), message=str(exc))
    await c.feed.poll_once()
    return _back(alarm_id, f"resolve_{result}")


@_write("act", "note")
async def note_post(request: Request, c: Console, user: User, form: Any) -> Response:
    alarm_id = request.path_params["alarm_id"]
    try:
        ok = await run_in_threadpool(lambda: actions.add_note(c.store, user, alarm_id, str(form.get("note", "")),
                                                              addr=_addr(request)))
    except UserError as exc:
        return c.page(request, "error.html", 400, title=N_("No note"), message=str(exc))
    return _back(alarm_id, "note" if ok else "note_missing")


def _admin_back(done: str) -> RedirectResponse:
    return RedirectResponse(f"/admin?done={quote(done)}", status_code=303)


@_write("admin", "user_add")
async def user_add_post(request: Request, c: Console, user: User, form: Any) -> Response:
    login, role = str(form.get("login", "")), str(form.get("role", ""))
    try:
        new = await run_in_threadpool(lambda: c.users.add(login, role, str(form.get("password", "")),
                                                          name=str(form.get("name", ""))))
    except UserError as exc:
        return c.page(request, "error.html", 400, title=N_("Not added"), message=str(exc))
    await run_in_threadpool(c.audit.record, user.login, user.role, "user_add", target=new.login, detail=f"role {new.role}",
                            addr=_addr(request))
    return _admin_back("user_added")


@_write("admin", "user_remove")
async def user_remove_post(request: Request, c: Console, user: User, form: Any) -> Response:
    login = str(form.get("login", "")).strip().lower()
    if login == user.login:
        return c.page(request, "error.html", 400, title=N_("Not removed"),
                      message=N_("You cannot remove yourself; another admin can."))
    try:
        await run_in_threadpool(c.users.remove, login)
    except NotFound:
        return c.page(request, "error.html", 404, title=N_("Not removed"), message=N_("No such user."))
    await run_in_threadpool(c.audit.record, user.login, user.role, "user_remove", target=login, addr=_addr(request))
    return _admin_back("user_removed")


@_write("admin", "user_passwd")
async def user_passwd_post(request: Request, c: Console, user: User, form: Any) -> Response:
    login = str(form.get("login", "")).strip().lower()
    try:
        await run_in_threadpool(c.users.passwd, login, str(form.get("password", "")))
    except NotFound:
        return c.page(request, "error.html", 404, title=N_("Not changed"), message=N_("No such user."))
    except UserError as exc:
        return c.page(request, "error.html", 400, title=N_("Not changed"), message=str(exc))
    await run_in_threadpool(c.audit.record, user.login, user.role, "user_passwd", target=login, addr=_addr(request))
    return _admin_back("user_passwd")


async def healthz(request: Request) -> Response:
    c: Console = request.app.state.console
    snap = c.feed.snapshot
    ok = snap.redis_ok and time.time() - snap.read_at < 10
    return PlainTextResponse("ok\n" if ok else "redis unavailable\n", status_code=200 if ok else 503)


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


ROUTES = [
    Route("/", queue_page), Route("/events", events), Route("/workers", workers_page),
    Route("/alarm/{alarm_id:path}/take", take_post, methods=["POST"]),
    Route("/alarm/{alarm_id:path}/resolve", resolve_post, methods=["POST"]),
    Route("/alarm/{alarm_id:path}/note", note_post, methods=["POST"]),
    Route("/alarm/{alarm_id:path}", alarm_page),
    Route("/figures", figures_page), Route("/figures.csv", figures_csv), Route("/admin", admin_page),
    Route("/admin/users/add", user_add_post, methods=["POST"]),
    Route("/admin/users/remove", user_remove_post, methods=["POST"]),
    Route("/admin/users/passwd", user_passwd_post, methods=["POST"]),
    Route("/login", login_page), Route("/login", login_post, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]), Route("/healthz", healthz),
    Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
]


def create_app(cfg: ConsoleConfig, store: Store | None = None) -> Starlette:
    """The console application for ``cfg`` (connects to ``cfg.redis_url`` unless ``store``).

    Raises:
        StoreError: Redis unreachable at start (the session key cannot be read).
    """
    store = store or Store.from_url(cfg.redis_url, cluster=cfg.redis_cluster)
    console = Console(cfg, store)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await console.feed.start()
        try:
            yield
        finally:
            await console.feed.stop()

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.console = console
    secret = session_secret(store)
    app.add_middleware(SchemeSessions, secret=secret, max_age_s=cfg.settings.session_max_age_s,  # type: ignore[arg-type]
                       secure=cfg.settings.cookie_secure)
    app.add_middleware(_SecurityHeaders)  # type: ignore[arg-type]
    return app
