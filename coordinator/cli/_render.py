"""Terminal rendering of transactions: a table for lists, a timeline for one."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..client._vocabulary import (
    branch_where,
    clock_notes,
    notice_text,
    protocol_name,
    shown_branch_state,
    state_name,
)


def when(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    moment = dt.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def render_list(txs: list[pb.Transaction]) -> str:
    rows = [("GID", "PROTOCOL", "STATE", "BRANCHES", "CREATED (UTC)", "ERROR")]
    for tx in txs:
        done = sum(1 for b in tx.branches if b.state in (
            pb.BRANCH_STATE_SUCCEEDED, pb.BRANCH_STATE_COMMITTED, pb.BRANCH_STATE_COMPENSATED,
            pb.BRANCH_STATE_ABORTED, pb.BRANCH_STATE_SKIPPED))
        rows.append((tx.gid, protocol_name(tx.protocol), state_name(tx.state),
                     f"{done}/{len(tx.branches)}", when(tx.created_at), tx.error[:60]))
    return table(rows[0], rows[1:]) if txs else "no transactions match"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    every = [header, *rows]
    widths = [max(len(r[i]) for r in every) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in every)


def render_show(tx: pb.Transaction) -> str:
    out = [f"{tx.gid}  {protocol_name(tx.protocol)}  {state_name(tx.state).upper()}",
           f"  created {when(tx.created_at)}  updated {when(tx.updated_at)}"]
    if tx.decision:
        out.append(f"  decision: {tx.decision}")
    if tx.error:
        out.append(f"  error: {tx.error}")
    if tx.cause and tx.cause != tx.error:
        out.append(f"  first cause: {tx.cause}")
    if tx.labels:
        out.append("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(tx.labels.items())))
    if tx.trace_id:
        out.append(f"  trace: {tx.trace_id}")
    out.extend(f"  {line}" for line in clock_notes(tx, when))
    if tx.HasField("notice"):
        out.append(f"  notify: {notice_text(tx.notice)}")
    out.append("  branches:")
    for b in tx.branches:
        line = f"    {b.name:<16} {shown_branch_state(tx, b):<12} attempts={b.attempts:<3} " \
               f"at {when(b.updated_at)}"
        out.append(line)
        out.append(f"      {branch_where(tx.protocol, b)}")
        if b.error:
            out.append(f"      last error: {b.error}")
        if b.payload:  # only there when asked for (txc tx show --payloads)
            out.append(f"      payload: {_shown_payload(b.payload)}")
    if tx.history:
        out.append("  history:")
        for h in tx.history:
            out.append(f"    {when(h.at)}  {h.actor:<24} {h.action:<10} {h.reason}")
    return "\n".join(out)


def _shown_payload(data: bytes) -> str:
    """Text as it is (quoted and escaped when it holds control characters, so it cannot
    move the terminal's cursor); other bytes in base64."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()
    return text if text.isprintable() else json.dumps(text)
