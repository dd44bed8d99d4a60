"""The worker card from the console (issue 13 "Worker card … and a button in the console"):
``GET /card/<worker name>`` (:func:`console.webbase.card_url`; a "Worker card" button on
the workers page and on the alarm page) answers the one-page PDF of :func:`relay.card.render_card` for
that worker of the registry in Redis, in the worker's own ``language`` (registry), with the
device's default gestures (SPEC §2; ``lonewatch card --device-config`` states configured
ones). Any signed-in role may download it (read only; :func:`console.webbase._read`);
signed out, the request is sent to the login page like every other page.

Errors: an unknown worker → 404 page; no card font installed (:class:`relay.card.CardError`)
→ 503 page naming nothing secret; Redis down → the usual 503 page.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.card import CardError, render_card
from relay.registry import RegistryStore

from .queries import N_
from .users import User
from .webbase import _NO_STORE, Console, _read

__all__ = ["CARD_ROUTES"]

log = logging.getLogger(__name__)


def _disposition(worker: str) -> str:
    """``attachment`` with an ASCII file name and the UTF-8 one (RFC 6266 / RFC 5987)."""
    ascii_name = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "-" for ch in worker).strip("-")
    fallback = f"worker-card-{ascii_name or 'worker'}.pdf"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(f'worker-card-{worker}.pdf', safe='')}"


@_read
async def card_pdf(request: Request, c: Console, user: User) -> Response:
    name = request.path_params["worker"]
    doc = await run_in_threadpool(RegistryStore(c.store).load)
    worker = doc.worker(name)
    if worker is None:
        return c.page(request, "error.html", 404, title=N_("No such worker"),
                      message=N_("There is no such worker in the registry."))
    try:
        pdf = await run_in_threadpool(render_card, worker)
    except CardError as exc:
        log.error("worker card for %r: %s", name, exc)
        return c.page(request, "error.html", 503, title=N_("Worker card"),
                      message=N_("The worker card could not be made on this host (see the console's log)."))
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": _disposition(worker.name), **_NO_STORE})


CARD_ROUTES = [Route("/card/{worker:path}", card_pdf)]
