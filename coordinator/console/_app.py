"""The console's web app (Starlette): pages rendered on the server from the views' data,
talking to the coordinator only through :class:`CoordinatorClient`.

Safety: operator actions are POST only, need the session's CSRF secret and a same-origin
request, a reason and a confirmation, and are refused outright unless the console was
started with ``--allow-actions``. The operator's token is kept in the session's server-side
memory (see ``_sessions``) and sent on the action's own client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..client._bulk import DONE, perform
from ..client._coordinator import CoordinatorClient, settled
from ..client._vocabulary import STATES, is_unreachable, state_name
from . import _runs, _views
from ._sessions import COOKIE, Session
from ._state import HERE, Console, Page, Settings, coordinated

ACTIONS = ("replay", "skip", "abort", "pause", "resume")
BULK_CONFIRM_ABOVE = 20  # a bulk action on more wants its count typed, not only a tick
BULK_RATE = 10.0  # bulk actions sent per second (as txc tx --all)
MAX_BULK = 500  # transactions one bulk action may name (the confirmation form carries them)
HEADERS = {
    # Own scripts and styles only (nothing inline, nothing from elsewhere); no framing, so
    # an action button cannot be overlaid by another site.
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(settings: Settings) -> Starlette:
    console = Console(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await console.close()

    def bind(fn: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(console, request)
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(console, request, exc)
        return endpoint

    routes = [
        Route("/", lambda r: RedirectResponse(settings.home, 302)),
        Route("/tx", bind(coordinated(list_page))),
        Route("/tx/{gid}", bind(coordinated(detail_page))),
        Route("/tx/{gid}/watch", bind(coordinated(watch))),
        Route("/tx/{gid}/{action}", bind(coordinated(act)), methods=["POST"]),
        Route("/bulk", bind(coordinated(bulk_preview))),
        Route("/bulk", bind(coordinated(bulk_act)), methods=["POST"]),
        Route("/holds", bind(coordinated(holds_page))),
        Route("/holds/{action}", bind(coordinated(hold_act)), methods=["POST"]),
        Route("/session/token", bind(coordinated(set_token)), methods=["POST"]),
        Route("/session/forget", bind(coordinated(forget_token)), methods=["POST"]),
        Route("/runs", bind(_runs.runs_page)),
        Route("/runs/{name}", bind(_runs.run_page)),
        Route("/runs/{name}/{plot}.png", bind(_runs.plot)),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(SessionMiddleware, console=console)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.console = console
    return app


class SessionMiddleware(BaseHTTPMiddleware):
    """Finds the request's session (a new one sets the cookie) and adds the safety headers."""

    def __init__(self, app: Any, console: Console) -> None:
        super().__init__(app)
        self.console = console

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        session, new = self.console.sessions.get(request.cookies.get(COOKIE))
        request.state.session = session
        response = await call_next(request)
        if new:
            response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", path="/",
                                secure=self.console.settings.secure_cookie)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


# -- pages -------------------------------------------------------------------------------


async def list_page(console: Console, request: Request) -> Response:
    query = parse_qs(request.url.query)
    try:
        filters = _views.parse_filters(query)
    except _views.FilterError as exc:
        return console.page(request, "list.html", 400, filters=_views.Filters(), problem=str(exc),
                            listing=None, states=list(STATES))
    async with console.reader(request.state.session) as client:
        txs = [tx async for tx in client.list_all(filters.where())]
    listing = _views.list_page(txs, filters, time.time())
    name = "_table.html" if "fragment" in query else "list.html"
    return console.page(request, name, filters=filters, listing=listing, problem=None,
                        states=list(STATES), bulk_actions=list(DONE))


async def detail_page(console: Console, request: Request) -> Response:
    gid = request.path_params["gid"]
    async with console.reader(request.state.session) as client:
        tx = await client.get(gid)
    name = "_live.html" if "fragment" in request.query_params else "detail.html"
    return console.page(request, name, tx=_views.detail(tx), actions=ACTIONS,
                        trace_link=_views.trace_link(console.settings.trace_url, tx.trace_id))


async def watch(console: Console, request: Request) -> Response:
    """Server-sent events: ``change`` after every change of the transaction (from
    ``WatchTransaction``), then ``settled``; the page fetches its live part again."""
    gid = request.path_params["gid"]

    async def events() -> AsyncIterator[str]:
        async with console.reader(request.state.session) as client:
            try:
                async for tx in client.watch(gid):
                    yield f"event: change\ndata: {json.dumps(state_name(tx.state))}\n\n"
                    if settled(tx):
                        yield "event: settled\ndata: {}\n\n"
                        return
            except grpc.aio.AioRpcError as exc:
                yield f"event: gone\ndata: {json.dumps(exc.code().name)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


# -- actions -------------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the only kind the pages send), last value of each field."""
    body = (await request.body()).decode(errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _refusal(console: Console, request: Request, form: dict[str, str]) -> str | None:
    """Why this POST is not an operator's own request from one of our pages, or None."""
    session: Session = request.state.session
    if not session.csrf_ok(form.get("csrf", "")):
        return "the form's CSRF token does not match this session: reload the page and try again"
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    if origin and urlsplit(origin).netloc != request.url.netloc:
        return f"the request came from another site ({urlsplit(origin).netloc})"
    return None


async def act(console: Console, request: Request) -> Response:
    gid, action = request.path_params["gid"], request.path_params["action"]
    if action not in ACTIONS:
        return console.page(request, "error.html", 404, title="Not found",
                            message=f"no action {action!r}: {', '.join(ACTIONS)}")
    form, refused = await _action_form(console, request)
    if refused is not None:
        return refused
    reason, branch = form.get("reason", "").strip(), form.get("branch", "").strip()

    async def send(client: CoordinatorClient) -> str:
        tx = await _send(client, action, gid, branch, reason)
        return f"{action} sent: {gid} is now {state_name(tx.state)}"

    problem = _missing(action, reason, branch, form.get("confirm") == "yes")
    return await _perform(console, request, f"/tx/{gid}", action, problem, send)


async def _perform(console: Console, request: Request, back: str, action: str,
                   problem: str | None,
                   send: Callable[[CoordinatorClient], Awaitable[str]]) -> Response:
    """Say what is missing from the form, or send the action and say how it went; either
    way back to the page ``back`` (POST, redirect, GET: a reload sends nothing again)."""
    session: Session = request.state.session
    if problem:
        session.flash("error", problem)
        return RedirectResponse(back, 303)
    async with console.client(session.token) as client:
        try:
            done = await send(client)
        except grpc.aio.AioRpcError as exc:
            session.flash("error", _explain(action, exc))
        else:
            session.flash("ok", done)
    return RedirectResponse(back, 303)


async def _action_form(console: Console, request: Request) -> tuple[dict[str, str], Response | None]:
    """The POSTed form of an operator action, or the page refusing it (actions off, CSRF,
    another site): every action, one transaction's, a bulk one or a hold, passes here."""
    if not console.settings.allow_actions:
        return {}, console.page(request, "error.html", 403, title="Read-only console",
                                message="operator actions are off: start the console with "
                                        "--allow-actions")
    form = await _form(request)
    refused = _refusal(console, request, form)
    if refused:
        return form, console.page(request, "error.html", 403, title="Action refused",
                                  message=refused)
    return form, None


def _missing(action: str, reason: str, branch: str, confirmed: bool) -> str | None:
    if not reason:
        return f"{action}: a reason is required (it goes in the transaction's history)"
    if action == "skip" and not branch:
        return "skip: choose the branch to mark done"
    if not confirmed:
        return f"{action}: tick the confirmation box"
    return None


async def _send(client: CoordinatorClient, action: str, gid: str, branch: str, reason: str) -> Any:
    if action == "skip":
        return await client.skip(gid, branch, reason)
    return await perform(client, action, gid, reason)


# -- bulk actions on a filtered list ---------------------------------------------------------


async def bulk_preview(console: Console, request: Request) -> Response:
    """Exactly which listed transactions the action applies to, and the form that sends it
    for those (by gid: what is confirmed is what is acted on)."""
    query = parse_qs(request.url.query)
    action = (query.get("action") or [""])[-1]
    if action not in DONE:
        return console.page(request, "error.html", 400, title="No such bulk action",
                            message=f"action {action!r}: one of {', '.join(DONE)}")
    try:
        filters = _views.parse_filters(query)
    except _views.FilterError as exc:
        return console.page(request, "error.html", 400, title="Bad filters", message=str(exc))
    async with console.reader(request.state.session) as client:
        txs = [tx async for tx in client.list_all(filters.where())]
    targets = _views.bulk_targets(txs, filters, action, time.time())
    return console.page(request, "bulk.html", action=action, done=DONE[action], filters=filters,
                        rows=[_views.row(t, time.time()) for t in targets[:MAX_BULK]],
                        over=max(0, len(targets) - MAX_BULK), max_bulk=MAX_BULK,
                        confirm_above=BULK_CONFIRM_ABOVE, rate=int(BULK_RATE))


async def bulk_act(console: Console, request: Request) -> Response:
    form, refused = await _action_form(console, request)
    if refused is not None:
        return refused
    session: Session = request.state.session
    body = parse_qs((await request.body()).decode(errors="replace"))
    gids = body.get("gid", [])[:MAX_BULK]
    action, reason = form.get("action", ""), form.get("reason", "").strip()
    back = "/tx" + (f"?{form['back']}" if form.get("back", "").strip() else "")
    problem = _bulk_missing(action, reason, gids, form)
    if problem:
        session.flash("error", problem)
        return RedirectResponse(back, 303)
    done, refusals = await _bulk_send(console, session, action, gids, reason)
    session.flash("error" if refusals else "ok",
                  f"{DONE[action]} {done} of {len(gids)}" + (f"; refused: {'; '.join(refusals[:5])}"
                                                          if refusals else ""))
    return RedirectResponse(back, 303)


def _bulk_missing(action: str, reason: str, gids: list[str], form: dict[str, str]) -> str | None:
    if action not in DONE:
        return f"no bulk action {action!r}"
    if not gids:
        return f"{action}: no transaction to act on"
    if len(gids) > BULK_CONFIRM_ABOVE and form.get("count", "").strip() != str(len(gids)):
        return f"{action}: type the number of transactions ({len(gids)}) to confirm"
    return _missing(action, reason, "-", form.get("confirm") == "yes")


async def _bulk_send(console: Console, session: Session, action: str, gids: list[str],
                     reason: str) -> tuple[int, list[str]]:
    """Send ``action`` for each gid at BULK_RATE; (how many were done, the refusals)."""
    done, refusals = 0, []
    async with console.client(session.token) as client:
        for gid in gids:
            started = time.monotonic()
            try:
                await perform(client, action, gid, reason)
                done += 1
            except grpc.aio.AioRpcError as exc:
                refusals.append(f"{gid}: {exc.code().name}: {exc.details()}")
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                  grpc.StatusCode.PERMISSION_DENIED):
                    break  # every other one would be refused alike
            await asyncio.sleep(max(0.0, 1 / BULK_RATE - (time.monotonic() - started)))
    return done, refusals


# -- participant holds ----------------------------------------------------------------------


async def holds_page(console: Console, request: Request) -> Response:
    async with console.reader(request.state.session) as client:
        holds = await client.holds()
    return console.page(request, "holds.html", holds=_views.hold_rows(holds))


async def hold_act(console: Console, request: Request) -> Response:
    action = request.path_params["action"]
    if action not in ("hold", "release"):
        return console.page(request, "error.html", 404, title="Not found",
                            message=f"no action {action!r}: hold or release")
    form, refused = await _action_form(console, request)
    if refused is not None:
        return refused
    address, reason = form.get("address", "").strip(), form.get("reason", "").strip()

    async def send(client: CoordinatorClient) -> str:
        if action == "hold":
            await client.hold(address, reason, refuse_starts=form.get("refuse_starts") == "yes")
            return f"{address} held"
        await client.release(address, reason)
        return f"{address} released"

    problem = _missing(action, reason, "-", form.get("confirm") == "yes")
    return await _perform(console, request, "/holds", action, problem, send)


def _explain(action: str, exc: grpc.aio.AioRpcError) -> str:
    code = exc.code()
    hint = ""
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        hint = " (give your operator token above)"
    return f"{action} refused by the coordinator: {code.name}: {exc.details()}{hint}"


async def set_token(console: Console, request: Request) -> Response:
    form = await _form(request)
    refused = _refusal(console, request, form)
    if refused:
        return console.page(request, "error.html", 403, title="Refused", message=refused)
    session: Session = request.state.session
    token = form.get("token", "").strip()
    session.token = token or None
    session.flash("ok", "token kept for this session (in the console's memory only)" if token
                  else "no token given")
    return RedirectResponse(_back(request), 303)


async def forget_token(console: Console, request: Request) -> Response:
    form = await _form(request)
    refused = _refusal(console, request, form)
    if refused:
        return console.page(request, "error.html", 403, title="Refused", message=refused)
    request.state.session.token = None
    request.state.session.flash("ok", "token forgotten")
    return RedirectResponse(_back(request), 303)


def _back(request: Request) -> str:
    """The page the form was on (same site only), else the list."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc == request.url.netloc and referer.path.startswith("/"):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return "/tx"


def _rpc_error(console: Console, request: Request, exc: grpc.aio.AioRpcError) -> Response:
    code = exc.code()
    if code == grpc.StatusCode.NOT_FOUND and "gid" in request.path_params:
        gid = request.path_params["gid"]
        return console.page(request, "error.html", 404, title="Unknown transaction",
                            message=f"the coordinator knows no transaction {gid!r} (finished "
                                    "transactions are kept for the retention period only)")
    if is_unreachable(code):
        return console.page(request, "error.html", 503, title="Coordinator unreachable",
                            message=f"{console.settings.coordinator}: {exc.details()}")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return console.page(request, "error.html", 401, title="The coordinator wants a token",
                            message=f"{exc.details()}: give your operator token (form above)")
    return console.page(request, "error.html", 502, title="The coordinator refused",
                        message=f"{code.name}: {exc.details()}")
