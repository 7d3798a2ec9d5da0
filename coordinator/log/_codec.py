"""Record <-> bytes. JSON (not pickle): the store is shared, so decoding must be safe.

A record is stored as two values: the *state* (everything but the branches' payloads,
rewritten by every transition) and the *payloads* (written once, when the transaction is
created). Transitions then rewrite a few hundred bytes instead of up to a megabyte of
payloads, and listings read states only. Payloads are framed raw (a 4-byte length before
each), so a maximal plan costs its size, not base64's 4/3 of it.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import replace
from typing import Any

from ..domain.holds import Hold
from ..domain.records import (
    BranchPlan,
    BranchState,
    BranchStatus,
    HistoryEntry,
    NoticeState,
    NoticeStatus,
    NotifyPlan,
    Protocol,
    RetryPolicy,
    TxRecord,
    TxState,
    payload_digest,
)

VERSION = 1
# A record whose PENDING branches may have been called (TxRecord.intents_ahead) is written
# as version 2: a coordinator that predates it refuses such a record (and leaves it to one
# that reads it) instead of taking a PENDING branch for one that never ran and leaving its
# effect in place when it compensates. Every other record stays version 1.
INTENTS_AHEAD_VERSION = 2


def encode(record: TxRecord) -> bytes:
    """The state value: the whole record but the payloads."""
    doc = {
        "v": INTENTS_AHEAD_VERSION if record.intents_ahead else VERSION,
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
        "cause": record.cause,
        "history": [[h.at, h.actor, h.action, h.reason] for h in record.history],
        "phase_started_at": record.phase_started_at,
        "decision": record.decision,
        "seq": record.seq,
        "timeout_s": record.timeout_s,
        "payload_digest": record.payload_digest,
    }
    if record.trace:
        doc["trace"] = dict(record.trace)
    if record.frozen_since or record.deadline_moved_s:  # absent on most records: no cost
        doc["frozen_since"] = record.frozen_since
        doc["waiting_on"] = list(record.waiting_on)
        doc["deadline_moved_s"] = record.deadline_moved_s
    if record.paused is not None:
        p = record.paused
        doc["paused"] = [p.at, p.actor, p.action, p.reason]
    if record.notify is not None:  # absent otherwise: records without one stay as they were
        doc["notify"] = _notify_doc(record.notify)
        n = record.notice
        doc["notice"] = [int(n.state), n.generation, n.attempts, n.error, n.started_at, n.updated_at]
    return json.dumps(doc, separators=(",", ":")).encode()


def encode_payloads(record: TxRecord) -> bytes:
    """The payloads value: each branch's payload after its length (big-endian u32)."""
    return b"".join(struct.pack(">I", len(p.payload)) + p.payload for p in record.plan)


def decode_payloads(data: bytes) -> list[bytes]:
    payloads, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from(">I", data, at)
        payloads.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    if at != len(data):
        raise ValueError("truncated payloads value")
    return payloads


def with_payloads(record: TxRecord, data: bytes | None) -> TxRecord:
    """``record`` (decoded from a state value) with its payloads; None = not stored
    (every payload empty, or a record written before payloads had a value of their own)."""
    if not data:
        return record
    payloads = decode_payloads(data)
    if len(payloads) != len(record.plan):
        raise ValueError(f"{len(payloads)} payloads for {len(record.plan)} branches")
    plan = tuple(replace(p, payload=d) for p, d in zip(record.plan, payloads, strict=True))
    return replace(record, plan=plan)


def has_payloads(record: TxRecord) -> bool:
    return any(p.payload for p in record.plan)


def decode(data: bytes) -> TxRecord:
    """A record from its state value; payloads empty until ``with_payloads``."""
    doc = json.loads(data)
    if doc.get("v") not in (VERSION, INTENTS_AHEAD_VERSION):
        raise ValueError(f"unsupported record version {doc.get('v')!r}")
    record = TxRecord(
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
        cause=doc.get("cause", ""),  # written before causes were kept: unknown
        history=tuple(HistoryEntry(*h) for h in doc["history"]),
        phase_started_at=doc["phase_started_at"],
        decision=doc.get("decision", ""),
        seq=doc["seq"],
        # Records written before timeout_s was stored: the deadline says it.
        timeout_s=doc.get("timeout_s", doc["deadline"] - doc["created_at"]),
        payload_digest=doc.get("payload_digest", ""),
        trace=tuple(sorted(doc.get("trace", {}).items())),
        frozen_since=doc.get("frozen_since", 0.0),
        waiting_on=tuple(doc.get("waiting_on", ())),
        paused=HistoryEntry(*doc["paused"]) if doc.get("paused") else None,
        deadline_moved_s=doc.get("deadline_moved_s", 0.0),
        notify=_notify(doc["notify"]) if "notify" in doc else None,
        notice=_notice(doc.get("notice")),
        intents_ahead=doc["v"] == INTENTS_AHEAD_VERSION,
    )
    if not record.payload_digest:  # written before digests: its payloads are inline
        record = replace(record, payload_digest=payload_digest(record.plan))
    return record


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else ""


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def _plan_doc(p: BranchPlan) -> dict[str, Any]:
    return {
        "name": p.name, "participant": p.participant, "action": p.action,
        "compensation": p.compensation, "after": list(p.after),
        "timeout_s": p.timeout_s, "retry": _retry_doc(p.retry),
        "compensation_retry": _retry_doc(p.compensation_retry),
    }


def _retry_doc(r: RetryPolicy) -> list[Any]:
    return [r.max_attempts, r.initial_backoff_s, r.max_backoff_s, r.multiplier]


def _plan(d: dict[str, Any]) -> BranchPlan:
    return BranchPlan(
        name=d["name"], participant=d["participant"], action=d["action"],
        # Records written before payloads had a value of their own carry them inline.
        compensation=d["compensation"], payload=_unb64(d.get("payload", "")), after=tuple(d["after"]),
        timeout_s=d["timeout_s"], retry=RetryPolicy(*d["retry"]),
        # Records written before compensations had a policy of their own: the default
        # (until acknowledged), which is what they are owed.
        compensation_retry=RetryPolicy(*d.get("compensation_retry", ())),
    )


def _notify_doc(n: NotifyPlan) -> dict[str, Any]:
    return {"participant": n.participant, "operation": n.operation, "retry": _retry_doc(n.retry),
            "budget_s": n.budget_s, "timeout_s": n.timeout_s}


def _notify(d: dict[str, Any]) -> NotifyPlan:
    return NotifyPlan(participant=d["participant"], operation=d["operation"],
                      retry=RetryPolicy(*d["retry"]), budget_s=d["budget_s"], timeout_s=d["timeout_s"])


def _notice(d: list[Any] | None) -> NoticeStatus:
    if d is None:
        return NoticeStatus()
    return NoticeStatus(NoticeState(d[0]), d[1], d[2], d[3], d[4], d[5])


def _status_doc(s: BranchStatus) -> list[Any]:
    doc = [int(s.state), s.attempts, s.error, _b64(s.result), s.updated_at]
    return [*doc, True] if s.null_compensation else doc  # the usual branch pays nothing


def _status(d: list[Any]) -> BranchStatus:
    return BranchStatus(BranchState(d[0]), d[1], d[2], _unb64(d[3]), d[4],
                        null_compensation=len(d) > 5 and bool(d[5]))


def encode_hold(hold: Hold) -> bytes:
    return json.dumps({"address": hold.address, "actor": hold.actor, "reason": hold.reason,
                       "since": hold.since, "refuse_starts": hold.refuse_starts},
                      separators=(",", ":")).encode()


def decode_hold(data: bytes) -> Hold:
    doc = json.loads(data)
    return Hold(doc["address"], doc["actor"], doc["reason"], doc["since"],
                bool(doc.get("refuse_starts", False)))
