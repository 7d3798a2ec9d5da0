"""Transaction ids (XIDs) of prepared branches, derived from (gid, branch).

Deterministic, so every process of a service, and every retry, names the same local
transaction; short and plain ASCII, so the id fits both databases (MySQL/MariaDB gtrid at
most 64 bytes, PostgreSQL gid at most 200 characters) and can be written into the XA /
PREPARE TRANSACTION statements literally, which do not take bind parameters. The
``txc:`` prefix is what the recovery loop looks for among the server's prepared
transactions; the mapping back to (gid, branch) lives in the ``txc_xa`` table.
"""

from __future__ import annotations

import hashlib
import re

XID_PREFIX = "txc:"
_DIGEST_CHARS = 40  # 160 bits of SHA-256: collisions are not a practical concern
XID_PATTERN = re.compile(rf"^{re.escape(XID_PREFIX)}[0-9a-f]{{{_DIGEST_CHARS}}}$")


def xid_for(gid: str, branch: str) -> str:
    """``txc:`` + 40 hex digits of SHA-256 over the length-prefixed gid and branch.

    Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    """
    digest = hashlib.sha256()
    for part in (gid, branch):
        data = part.encode()
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return XID_PREFIX + digest.hexdigest()[:_DIGEST_CHARS]


def is_txc_xid(xid: str) -> bool:
    """True for ids :func:`xid_for` makes (and nothing else, so they are safe as SQL literals)."""
    return XID_PATTERN.match(xid) is not None


def literal(xid: str) -> str:
    """``'txc:...'`` for the XA statements; refuses anything that is not one of our ids."""
    if not is_txc_xid(xid):
        raise ValueError(f"not a txcoord XID: {xid[:80]!r}")
    return f"'{xid}'"
