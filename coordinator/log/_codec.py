"""Record <-> bytes. JSON (not pickle): the store is shared, so decoding must be safe."""

from __future__ import annotations

import base64
import json
from typing import Any

from ..domain.records import (
    BranchPlan,
    BranchState,
    BranchStatus,
    HistoryEntry,
    Protocol,
    RetryPolicy,
    TxRecord,
    TxState,
)

VERSION = 1


def encode(record: TxRecord) -> bytes:
    doc = {
        "v": VERSION,
        "gid": record.gid,
        "protocol": int(record.protocol),
        "state": int(record.state),
        "plan": [_plan_doc(p) for p in record.plan],
        "branches": [_status_doc(s) for s in record.branches],
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "deadline": record.deadline,
        "concurrent": record.concurrent,
        "labels": dict(record.labels),
        "error": record.error,
        "history": [[h.at, h.actor, h.action, h.reason] for h in record.history],
        "phase_started_at": record.phase_started_at,
        "decision": record.decision,
        "seq": record.seq,
        "timeout_s": record.timeout_s,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> TxRecord:
    doc = json.loads(data)
    if doc.get("v") != VERSION:
        raise ValueError(f"unsupported record version {doc.get('v')!r}")
    return TxRecord(
        gid=doc["gid"],
        protocol=Protocol(doc["protocol"]),
        state=TxState(doc["state"]),
        plan=tuple(_plan(p) for p in doc["plan"]),
        branches=tuple(_status(s) for s in doc["branches"]),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        deadline=doc["deadline"],
        concurrent=doc["concurrent"],
        labels=tuple(sorted(doc["labels"].items())),
        error=doc["error"],
        history=tuple(HistoryEntry(*h) for h in doc["history"]),
        phase_started_at=doc["phase_started_at"],
        decision=doc.get("decision", ""),
        seq=doc["seq"],
        # Records written before timeout_s was stored: the deadline says it.
        timeout_s=doc.get("timeout_s", doc["deadline"] - doc["created_at"]),
    )



def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else ""


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def _plan_doc(p: BranchPlan) -> dict[str, Any]:
    r = p.retry
    return {
        "name": p.name, "participant": p.participant, "action": p.action,
        "compensation": p.compensation, "payload": _b64(p.payload), "after": list(p.after),
        "timeout_s": p.timeout_s,
        "retry": [r.max_attempts, r.initial_backoff_s, r.max_backoff_s, r.multiplier],
    }


def _plan(d: dict[str, Any]) -> BranchPlan:
    return BranchPlan(
        name=d["name"], participant=d["participant"], action=d["action"],
        compensation=d["compensation"], payload=_unb64(d["payload"]), after=tuple(d["after"]),
        timeout_s=d["timeout_s"], retry=RetryPolicy(*d["retry"]),
    )


def _status_doc(s: BranchStatus) -> list[Any]:
    return [int(s.state), s.attempts, s.error, _b64(s.result), s.updated_at]


def _status(d: list[Any]) -> BranchStatus:
    return BranchStatus(BranchState(d[0]), d[1], d[2], _unb64(d[3]), d[4])
