"""Who may run operator actions (replay, skip, abort): named bearer tokens.

With no tokens configured the actions are open to anyone who reaches the port (the
default listen address is loopback). With tokens, a caller must send
``authorization: Bearer <token>``; the history records the token's name, which the
caller cannot choose, beside the ``x-txc-actor`` it claims. Tokens are secrets: they are
compared in constant time and never logged or echoed.

The token file has one operator per line, ``NAME TOKEN``; blank lines and comments (``#``
at the start of a line or after a space) are ignored.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..domain.errors import Unauthenticated

_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_COMMENT = re.compile(r"(?:^|\s)#")  # a comment starts a line or follows a space
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Operators:
    tokens: Mapping[str, str] = field(default_factory=dict)  # name -> token

    @property
    def required(self) -> bool:
        return bool(self.tokens)

    @classmethod
    def parse(cls, text: str, source: str = "token file") -> Operators:
        tokens: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            line = _COMMENT.split(line, 1)[0].strip()  # a '#' inside a token stays
            if not line:
                continue
            parts = line.split()
            where = f"{source} line {number}"
            if len(parts) != 2:
                raise ValueError(f"{where}: expected 'NAME TOKEN'")
            name, token = parts
            if not _NAME.fullmatch(name):
                raise ValueError(f"{where}: the name must be 1-64 of A-Z a-z 0-9 . _ @ -")
            if len(token) < MIN_TOKEN_CHARS:
                raise ValueError(f"{where}: the token of {name} is shorter than "
                                 f"{MIN_TOKEN_CHARS} characters")
            if name in tokens:
                raise ValueError(f"{where}: {name} appears twice")
            tokens[name] = token
        if not tokens:
            raise ValueError(f"{source}: no operators in it")
        return cls(tokens)

    @classmethod
    def from_file(cls, path: str | Path) -> Operators:
        return cls.parse(Path(path).read_text(), str(path))

    def identify(self, metadata: Iterable[tuple[str, str | bytes]]) -> str:
        """The operator whose token the call carries; Unauthenticated otherwise."""
        presented = _bearer(metadata)
        if presented is None:
            raise Unauthenticated("operator actions need 'authorization: Bearer <token>' "
                                  "metadata (txc tx --token-file FILE)")
        found = None
        for name, token in self.tokens.items():  # every comparison runs: no timing hint
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = name
        if found is None:
            raise Unauthenticated("the operator token is not one of this coordinator's")
        return found


def _bearer(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return None
