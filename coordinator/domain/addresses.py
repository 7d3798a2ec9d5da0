"""Which participant addresses the coordinator may call.

With an empty allow-list every ``host:port`` is allowed (development). Once configured, only
matching addresses are: an entry is ``host:port``, ``host:*`` (any port) or ``*.domain:port``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

_ADDRESS = re.compile(r"(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]{1,253}):([0-9]{1,5})", re.ASCII)


def valid_address(address: str) -> bool:
    """``host:port`` (or ``[v6]:port``), ASCII only, port 1-65535; nothing before or after."""
    match = _ADDRESS.fullmatch(address)

    return match is not None and 0 < int(match.group(1)) < 65536


@dataclass(frozen=True, slots=True)
class AllowList:
    patterns: tuple[str, ...] = ()

    def allows(self, address: str) -> bool:
        if not self.patterns:
            return True
        host = address.lower()
        return any(fnmatch.fnmatchcase(host, p.lower()) for p in self.patterns)
