"""Who may run operator actions (replay, skip, abort) and, optionally, read transactions.

With no operators configured the actions are open to anyone who reaches the port (the
default listen address is loopback). With operators, a caller is known by a bearer token
(``authorization: Bearer <token>``) or by the common name of its client certificate
(mutual TLS, ``txc serve --tls-client-ca``); the history records the operator's name,
which the caller cannot choose, beside the ``x-txc-actor`` it claims. Each operator has
rights: ``act`` (replay, skip, abort) and ``read`` (Get, List, Watch, when the coordinator
protects reads). Tokens are secrets: compared in constant time, never logged or echoed.

Token file: one operator per line, ``NAME TOKEN [RIGHTS]``; certificate file: ``NAME
COMMON_NAME [RIGHTS]``. RIGHTS is ``read``, ``act`` or ``read,act`` (the default). Blank
lines and comments (``#`` at the start of a line or after a space) are ignored.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..domain.errors import PermissionDenied, Unauthenticated

_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_COMMENT = re.compile(r"(?:^|\s)#")  # a comment starts a line or follows a space
MIN_TOKEN_CHARS = 16
READ, ACT = "read", "act"
ALL_RIGHTS = frozenset({READ, ACT})


@dataclass(frozen=True)
class Operators:
    tokens: Mapping[str, str] = field(default_factory=dict)  # name -> token
    certificates: Mapping[str, str] = field(default_factory=dict)  # certificate CN -> name
    rights: Mapping[str, frozenset[str]] = field(default_factory=dict)  # name -> rights

    @property
    def required(self) -> bool:
        return bool(self.tokens or self.certificates)

    @classmethod
    def parse(cls, text: str, source: str = "token file") -> Operators:
        tokens: dict[str, str] = {}
        rights: dict[str, frozenset[str]] = {}
        for where, name, token, granted in _entries(text, source, "TOKEN"):
            if len(token) < MIN_TOKEN_CHARS:
                raise ValueError(f"{where}: the token of {name} is shorter than "
                                 f"{MIN_TOKEN_CHARS} characters")
            if name in tokens:
                raise ValueError(f"{where}: {name} appears twice")
            tokens[name], rights[name] = token, granted
        if not tokens:
            raise ValueError(f"{source}: no operators in it")
        return cls(tokens, {}, rights)

    @classmethod
    def from_file(cls, path: str | Path) -> Operators:
        return cls.parse(Path(path).read_text(), str(path))

    def with_certificates(self, text: str, source: str = "certificate file") -> Operators:
        """These operators and the ones a certificate file names (``NAME CN [RIGHTS]``)."""
        names = dict(self.certificates)
        rights = dict(self.rights)
        for where, name, common_name, granted in _entries(text, source, "COMMON_NAME"):
            if common_name in names:
                raise ValueError(f"{where}: certificate name {common_name} appears twice")
            names[common_name] = name
            rights[name] = rights.get(name, frozenset()) | granted
        if not names:
            raise ValueError(f"{source}: no operators in it")
        return Operators(self.tokens, names, rights)

    def identify(self, metadata: Iterable[tuple[str, str | bytes]], common_name: str | None = None,
                 right: str = ACT) -> str:
        """The operator making the call, if it holds ``right``; Unauthenticated when the call
        carries no operator's token or certificate, PermissionDenied without the right."""
        name = self.certificates.get(common_name) if common_name else None
        if name is None:
            name = self._by_token(metadata)
        if right not in self.rights.get(name, ALL_RIGHTS):
            raise PermissionDenied(f"operator {name} may not {right} (rights: "
                                   f"{', '.join(sorted(self.rights.get(name, ())))})")
        return name

    def _by_token(self, metadata: Iterable[tuple[str, str | bytes]]) -> str:
        presented = _bearer(metadata)
        if presented is None:
            raise Unauthenticated("this needs an operator: 'authorization: Bearer <token>' "
                                  "metadata (txc tx --token-file FILE) or a client certificate")
        found = None
        for name, token in self.tokens.items():  # every comparison runs: no timing hint
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = name
        if found is None:
            raise Unauthenticated("the operator token is not one of this coordinator's")
        return found


def _entries(text: str, source: str, secret: str) -> Iterable[tuple[str, str, str, frozenset[str]]]:
    """(where, name, value, rights) of each ``NAME VALUE [RIGHTS]`` line."""
    for number, line in enumerate(text.splitlines(), start=1):
        line = _COMMENT.split(line, 1)[0].strip()  # a '#' inside a token stays
        if not line:
            continue
        parts = line.split()
        where = f"{source} line {number}"
        if len(parts) not in (2, 3):
            raise ValueError(f"{where}: expected 'NAME {secret} [read|act|read,act]'")
        if not _NAME.fullmatch(parts[0]):
            raise ValueError(f"{where}: the name must be 1-64 of A-Z a-z 0-9 . _ @ -")
        granted = frozenset(parts[2].split(",")) if len(parts) == 3 else ALL_RIGHTS
        if not granted or not granted <= ALL_RIGHTS:
            raise ValueError(f"{where}: rights are read, act or read,act")
        yield where, parts[0], parts[1], granted


def _bearer(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return None
