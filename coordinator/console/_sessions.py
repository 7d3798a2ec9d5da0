"""Browser sessions held in the console's memory: a random id in an HttpOnly cookie, and
on the server the session's CSRF secret, the operator's token and one-shot messages.

The token stays in this process (never in a cookie, never on disk) and is gone when the
operator forgets it, when the session is idle for ``idle_s`` or when the console stops.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "txc_console"
MAX_SESSIONS = 10_000  # anyone who reaches the port makes one: bounded, oldest dropped


@dataclass
class Session:
    id: str
    csrf: str
    seen: float
    token: str | None = None
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append((kind, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken

    def csrf_ok(self, given: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), given.encode())


class Sessions:
    def __init__(self, idle_s: float = 8 * 3600) -> None:
        self.idle_s = idle_s
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def get(self, sid: str | None, now: float | None = None) -> tuple[Session, bool]:
        """The session of cookie ``sid``, or a new one (then True: set the cookie)."""
        now = time.time() if now is None else now
        found = self._by_id.get(sid or "")
        if found is not None and now - found.seen <= self.idle_s:
            found.seen = now
            self._by_id.move_to_end(found.id)
            return found, False
        if found is not None:
            del self._by_id[found.id]  # idle too long: its token goes with it
        return self._new(now), True

    def _new(self, now: float) -> Session:
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now)
        self._by_id[session.id] = session
        return session

    def __len__(self) -> int:
        return len(self._by_id)
