"""The console's state, shared by its pages: what it was started with (:class:`Settings`)
and what it holds while it runs (:class:`Console`: sessions, the read client, templates).
Transaction pages (``_app``) and chaos-run pages (``_runs``) both build on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from ..client._coordinator import CoordinatorClient
from . import _views
from ._sessions import Session, Sessions

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Settings:
    """What ``txc console`` was started with: a coordinator, chaos runs, or both."""

    coordinator: str | None = None  # None: the chaos runs only (no transaction pages)
    allow_actions: bool = False
    runs: Path | None = None
    tls_ca: bytes | None = None
    timeout_s: float = 10.0
    secure_cookie: bool = False  # served over TLS: the cookie never travels in clear
    refresh_s: float = 5.0
    # A trace viewer's page of one trace, "{trace_id}" standing for the id (e.g. Jaeger's
    # "http://localhost:16686/trace/{trace_id}"): a traced transaction links to its trace.
    trace_url: str = ""

    def __post_init__(self) -> None:
        if self.coordinator is None and self.runs is None:
            raise ValueError("the console needs a coordinator, chaos runs, or both")

    @property
    def home(self) -> str:
        """The page "/" opens: the transactions, or the runs when there is no coordinator."""
        return "/tx" if self.coordinator is not None else "/runs"


class Console:
    """The app's state: settings, sessions, the shared read client, the templates."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions = Sessions()
        # .html templates are autoescaped: a gid, label or error is shown, never interpreted.
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(span=_views.span, when=_views.when)
        self._reader: CoordinatorClient | None = None

    def client(self, token: str | None = None) -> CoordinatorClient:
        if self.settings.coordinator is None:  # pages that read it are behind coordinated()
            raise RuntimeError("this console has no coordinator")
        return CoordinatorClient(self.settings.coordinator, timeout_s=self.settings.timeout_s,
                                 tls_ca=self.settings.tls_ca, token=token)

    @asynccontextmanager
    async def reader(self, session: Session) -> AsyncIterator[CoordinatorClient]:
        """The shared client; one of the operator's own when a token was given, since a
        coordinator may protect reads too (``txc serve --protect-reads``)."""
        if session.token:
            async with self.client(session.token) as own:
                yield own
            return
        if self._reader is None:
            self._reader = self.client()
        yield self._reader

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        session: Session = request.state.session
        context.update(request=request, session=session, flashes=session.take_flashes(),
                       settings=self.settings, csrf=session.csrf)
        response: Response = self.templates.TemplateResponse(request, name, context,
                                                             status_code=status)
        return response


Page = Callable[[Console, Request], Awaitable[Response]]


def coordinated(fn: Page) -> Page:
    """A page that reads the coordinator; a console given only ``--runs`` has none, and
    says so instead of trying one."""
    async def page(console: Console, request: Request) -> Response:
        if console.settings.coordinator is None:
            return console.page(request, "error.html", 404, title="No coordinator",
                                message="this console shows chaos runs only: start it with "
                                        "--coordinator HOST:PORT to see transactions")
        return await fn(console, request)
    return page
