"""The console's pages and routes (Starlette; issue 13). Build with :func:`create_app`.

Routes (all but ``/login``, ``/healthz`` and ``/static`` need a session; every POST goes
through :func:`_write`, which checks the CSRF token, the ``Origin`` and the role, and
audits a refusal):

====================================  ======  ============================================
``/``                                 GET     alarm queue (live: ``/events``)
``/events``                           GET     Server-Sent Events: ``queue`` (HTML + ids)
``/alarm/{id}``                       GET     one alarm: facts, map/positions, history
``/alarm/{id}/fragment``              GET     its facts and history (JSON of HTML), polled
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
import time
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from relay.store import Store, StoreError

from . import actions, figures, queries
from .config import ConsoleConfig
from .errors import UserError
from .queries import N_
from .security import CSRF_FIELD, SchemeSessions, csrf_ok, new_csrf_token, origin_ok, session_secret
from .users import User
from .web_admin import ADMIN_ROUTES
from .webbase import HERE, NOTICES, Console, _NO_STORE, _SecurityHeaders, _addr, _read, _write, template_env

__all__ = ["create_app", "template_env"]


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
        await c.feed.poll_once()  # a (re)connecting page gets what Redis holds now
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
async def alarm_fragment(request: Request, c: Console, user: User) -> Response:
    """The alarm page's facts and history as HTML pieces (JSON), for its 2 s refresh."""
    alarm_id = request.path_params["alarm_id"]
    alarm = await run_in_threadpool(queries.alarm_view, c.store, alarm_id)
    if alarm is None:
        return Response('{"missing": true}', status_code=404, media_type="application/json", headers=_NO_STORE)
    history = await run_in_threadpool(queries.history_view, c.store, alarm_id)
    ctx = dict(alarm=alarm, history=history, user=user)
    body = {"facts": c.env.get_template("_alarm_facts.html").render(**ctx),
            "history": c.env.get_template("_alarm_history.html").render(**ctx), "entries": len(history)}
    return Response(json.dumps(body), media_type="application/json", headers=_NO_STORE)


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


async def healthz(request: Request) -> Response:
    c: Console = request.app.state.console
    snap = c.feed.snapshot
    ok = snap.redis_ok and time.time() - snap.read_at < 10
    return PlainTextResponse("ok\n" if ok else "redis unavailable\n", status_code=200 if ok else 503)


ROUTES = [
    Route("/", queue_page), Route("/events", events), Route("/workers", workers_page),
    Route("/alarm/{alarm_id:path}/take", take_post, methods=["POST"]),
    Route("/alarm/{alarm_id:path}/resolve", resolve_post, methods=["POST"]),
    Route("/alarm/{alarm_id:path}/note", note_post, methods=["POST"]),
    Route("/alarm/{alarm_id:path}/fragment", alarm_fragment),
    Route("/alarm/{alarm_id:path}", alarm_page),
    Route("/figures", figures_page), Route("/figures.csv", figures_csv), *ADMIN_ROUTES,
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
