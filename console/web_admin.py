"""The console's admin pages (issue 13 "admin (users …)"): the users and the audit trail,
and user administration in the web (add, remove, set password), each write audited. The
same as ``lonewatch console user …`` on the relay host (:mod:`cli.console`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .errors import NotFound, UserError
from .queries import N_
from .users import MIN_PASSWORD, ROLES, User
from .webbase import Console, _addr, _read, _write

__all__ = ["ADMIN_ROUTES"]

ADMIN_NOTICES = {"user_added": N_("User added."), "user_removed": N_("User removed; their sessions ended."),
                 "user_passwd": N_("Password changed; the user's sessions ended.")}


@_read
async def admin_page(request: Request, c: Console, user: User) -> Response:
    if not user.may("admin"):
        return c.page(request, "error.html", 403, title=N_("Refused"), message=N_("Only an admin sees users and the audit trail."))
    users = await run_in_threadpool(c.users.all)
    audit = await run_in_threadpool(c.audit.recent, 300)
    return c.page(request, "admin.html", users=users, audit=audit, roles=ROLES, min_password=MIN_PASSWORD,
                  notice=ADMIN_NOTICES.get(request.query_params.get("done", ""), ""))


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


ADMIN_ROUTES = [
    Route("/admin", admin_page),
    Route("/admin/users/add", user_add_post, methods=["POST"]),
    Route("/admin/users/remove", user_remove_post, methods=["POST"]),
    Route("/admin/users/passwd", user_passwd_post, methods=["POST"]),
]
