"""What the pages show, as plain data: no HTTP, no templates, no I/O (unit-tested alone).

A transaction's timeline is rebuilt from what the API returns: the creation time, each
branch's state, attempt count and last change, and the history. The API keeps no time per
attempt, and a branch's last change overwrites the time its forward work ended once it is
compensated (or committed/aborted in 2PC); such a segment is placed in plan order between
the times that are known and marked ``exact=False``, and the page says so.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from google.protobuf.timestamp_pb2 import Timestamp

from .._proto.txc.v1 import coordinator_pb2 as pb
from ..client._bulk import applies
from ..client._coordinator import ListFilter, settled
from ..client._vocabulary import (
    PROTOCOLS,
    STATES,
    branch_state_name,
    clock_notes,
    notice_text,
    parse_duration,
    protocol_name,
    shown_branch_state,
    state_name,
)
from ..domain.addresses import valid_address
from ..domain.operator import may_abort, may_replay, may_skip
from ..domain.records import BranchState, Protocol, TxState

PAGE_SIZE = 50
MIN_LABEL_PCT = 12.0  # a bar at least this wide (in % of the axis) carries its label
TURNS = ("compensate", "decide", "abort")  # history actions after which work goes backward

_DONE = {pb.BRANCH_STATE_SUCCEEDED, pb.BRANCH_STATE_COMMITTED, pb.BRANCH_STATE_COMPENSATED,
         pb.BRANCH_STATE_ABORTED, pb.BRANCH_STATE_SKIPPED}
_FORWARD = {pb.BRANCH_STATE_RUNNING, pb.BRANCH_STATE_SUCCEEDED, pb.BRANCH_STATE_FAILED,
            pb.BRANCH_STATE_PREPARED, pb.BRANCH_STATE_VOTED_NO}
_BACKWARD = {pb.BRANCH_STATE_COMPENSATING, pb.BRANCH_STATE_COMPENSATED,
             pb.BRANCH_STATE_COMMITTED, pb.BRANCH_STATE_ABORTED}
_OPEN = {pb.BRANCH_STATE_RUNNING, pb.BRANCH_STATE_COMPENSATING}
_OUTCOME: dict[int, str] = {  # branch state -> the CSS class of its bar
    pb.BRANCH_STATE_RUNNING: "running", pb.BRANCH_STATE_SUCCEEDED: "ok",
    pb.BRANCH_STATE_FAILED: "failed", pb.BRANCH_STATE_COMPENSATING: "running",
    pb.BRANCH_STATE_COMPENSATED: "undone", pb.BRANCH_STATE_PREPARED: "ok",
    pb.BRANCH_STATE_VOTED_NO: "failed", pb.BRANCH_STATE_COMMITTED: "ok",
    pb.BRANCH_STATE_ABORTED: "undone", pb.BRANCH_STATE_SKIPPED: "skipped"}


# -- names and times -----------------------------------------------------------------------


def seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def when(at: float) -> str:
    if not at:
        return "-"
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def span(length_s: float) -> str:
    """A duration as people read it: 850 ms, 2.4 s, 3 min 5 s, 2 h 10 min."""
    if length_s < 1:
        return f"{length_s * 1000:.0f} ms"
    if length_s < 60:
        return f"{length_s:.1f} s"
    if length_s < 3600:
        return f"{int(length_s // 60)} min {int(length_s % 60)} s"
    return f"{int(length_s // 3600)} h {int(length_s % 3600 // 60)} min"


# -- the list ------------------------------------------------------------------------------


class FilterError(ValueError):
    """A filter the page cannot use; the message is shown to the operator as it is."""


@dataclass(frozen=True)
class Filters:
    states: tuple[str, ...] = ()
    protocol: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    gid_prefix: str = ""
    older_than: str = ""  # as typed: 90s, 10m, 2h, 1d
    page: int = 1
    participant: str = ""  # HOST:PORT: transactions with a branch there

    def where(self) -> ListFilter:
        """What the coordinator filters; the state filter is applied here, after counting."""
        return ListFilter(protocol=PROTOCOLS.get(self.protocol, pb.PROTOCOL_UNSPECIFIED),
                          labels=dict(self.labels), gid_prefix=self.gid_prefix,
                          participant=self.participant)

    def query(self, **change: object) -> str:
        """The query string of these filters with ``change`` applied (links to pages)."""
        return urlencode(self.pairs(**change))

    def pairs(self, **change: object) -> list[tuple[str, str]]:
        """These filters as (name, value) pairs, empty ones left out (forms, links)."""
        fields: dict[str, object] = {
            "state": list(self.states), "protocol": self.protocol,
            "label": [f"{k}={v}" for k, v in self.labels], "gid_prefix": self.gid_prefix,
            "older_than": self.older_than, "page": self.page, "participant": self.participant}
        fields.update(change)
        items = []
        for key, value in fields.items():
            for v in value if isinstance(value, list | tuple) else [value]:
                if v not in ("", None) and not (key == "page" and v == 1):
                    items.append((key, str(v)))
        return items


def parse_age(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise FilterError(f"age {exc}") from None


def parse_filters(query: Mapping[str, Sequence[str]]) -> Filters:
    """The list page's query string, checked as ``txc tx list`` checks its flags."""
    def one(name: str) -> str:
        return (query.get(name) or [""])[-1].strip()

    states = tuple(s for s in (v.strip().lower() for v in query.get("state", [])) if s)
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise FilterError(f"unknown state {unknown[0]!r}: one of {', '.join(STATES)}")
    protocol = one("protocol").lower()
    if protocol and protocol not in PROTOCOLS:
        raise FilterError(f"unknown protocol {protocol!r}: saga or 2pc")
    labels = tuple(_label(v) for v in query.get("label", []) if v.strip())
    if one("older_than"):
        parse_age(one("older_than"))
    page = one("page") or "1"
    if not page.isdigit() or int(page) < 1:
        raise FilterError(f"page {page!r} is not a page number (1, 2, ...)")
    participant = one("participant")
    if participant and not valid_address(participant):
        raise FilterError(f"participant {participant[:80]!r} is not HOST:PORT")
    return Filters(states, protocol, labels, one("gid_prefix"), one("older_than"), int(page),
                   participant)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.strip().partition("=")
    if not sep or not key:
        raise FilterError(f"label {text!r} is not KEY=VALUE")
    return key, value


@dataclass(frozen=True)
class Row:
    gid: str
    protocol: str
    state: str
    done: int
    branches: int
    created: str
    age: str
    error: str
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ListPage:
    rows: list[Row]
    counts: dict[str, int]  # per state, of everything matching the other filters
    total: int  # matching every filter
    page: int
    pages: int


def list_page(txs: Iterable[pb.Transaction], filters: Filters, now: float) -> ListPage:
    """Newest first, one page of rows, and the counts per state the chips show."""
    aged = _aged(txs, filters, now)
    counts = {name: 0 for name in STATES}
    for tx in aged:
        counts[state_name(tx.state)] += 1
    found = _in_states(aged, filters)
    pages = max(1, -(-len(found) // PAGE_SIZE))
    page = min(filters.page, pages)
    shown = found[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    return ListPage([row(t, now) for t in shown], counts, len(found), page, pages)


def bulk_targets(txs: Iterable[pb.Transaction], filters: Filters, action: str,
                 now: float) -> list[pb.Transaction]:
    """Every listed transaction (all pages) that ``action`` applies to, newest first."""
    return [t for t in _in_states(_aged(txs, filters, now), filters) if applies(action, t)]


def _aged(txs: Iterable[pb.Transaction], filters: Filters, now: float) -> list[pb.Transaction]:
    cutoff = now - parse_age(filters.older_than) if filters.older_than else None
    return [t for t in txs if cutoff is None or seconds(t.created_at) <= cutoff]


def _in_states(txs: list[pb.Transaction], filters: Filters) -> list[pb.Transaction]:
    wanted = {STATES[s] for s in filters.states}
    found = [t for t in txs if not wanted or t.state in wanted]
    found.sort(key=lambda t: seconds(t.created_at), reverse=True)
    return found


def row(tx: pb.Transaction, now: float) -> Row:
    created = seconds(tx.created_at)
    return Row(tx.gid, protocol_name(tx.protocol), state_name(tx.state),
               sum(1 for b in tx.branches if b.state in _DONE), len(tx.branches), when(created),
               span(max(0.0, now - created)), tx.error, tuple(sorted(tx.labels.items())))


# -- one transaction: the timeline ----------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    op: str  # action / compensation / prepare / commit / abort
    backward: bool  # compensation or 2PC phase 2: drawn after the forward work
    start: float
    end: float
    outcome: str  # CSS class: ok / failed / running / undone / skipped
    state: str
    attempts: int | None  # None: not recorded any more (a later operation reset the count)
    exact: bool  # False: a bound was overwritten by a later change; placed in plan order
    open: bool = False  # still in progress

    @property
    def duration(self) -> str:
        return ("≈ " if not self.exact else "") + span(max(0.0, self.end - self.start))


@dataclass(frozen=True)
class Lane:
    branch: str
    state: str
    attempts: int
    error: str
    result_bytes: int
    updated: str
    segments: list[Segment]
    participant: str = ""  # its address
    action: str = ""  # the action's operation (2PC: the operation)
    compensation: str = ""  # "" for 2PC and for a branch without one


@dataclass(frozen=True)
class Marker:
    at: float
    when: str
    actor: str
    action: str
    reason: str


@dataclass(frozen=True)
class Timeline:
    start: float
    end: float
    lanes: list[Lane]
    markers: list[Marker]
    turn: float | None  # when work went backward (compensation, 2PC decision, abort)
    approximate: bool = field(default=False)

    def pct(self, at: float) -> float:
        """Position on the axis, in percent of its width."""
        length = max(self.end - self.start, 1e-6)
        return round(min(100.0, max(0.0, (at - self.start) / length * 100)), 3)

    def width(self, seg: Segment) -> float:
        return round(max(0.4, self.pct(seg.end) - self.pct(seg.start)), 3)

    def labelled(self, lane: Lane) -> list[bool]:
        """Which bars get a text label: the wide ones (a narrow bar's label would run over
        its neighbour's), or the lane's last bar when none is wide. Every bar has a tooltip."""
        wide = [self.width(s) >= MIN_LABEL_PCT for s in lane.segments]
        if not any(wide) and wide:
            wide[-1] = True
        return wide

    def ticks(self, count: int = 5) -> list[tuple[float, str]]:
        length = self.end - self.start
        return [(self.pct(self.start + length * i / count), "+" + span(length * i / count))
                for i in range(count + 1)]


def timeline(tx: pb.Transaction, now: float | None = None) -> Timeline:
    now = time.time() if now is None else now
    start = seconds(tx.created_at)
    end = max([seconds(tx.updated_at), start, *(seconds(b.updated_at) for b in tx.branches)])
    if not settled(tx):
        end = max(end, now)
    markers = [Marker(seconds(h.at), when(seconds(h.at)), h.actor, h.action, h.reason)
               for h in tx.history]
    turn = _turn(tx, markers)
    forward = _forward(tx, start, turn, end)
    backward = _backward(tx, turn, end)
    lanes = [_lane(tx, b, [s for s in (forward[i], backward[i]) if s is not None])
             for i, b in enumerate(tx.branches)]
    approximate = any(not s.exact for lane in lanes for s in lane.segments)
    return Timeline(start, max(end, start + 1e-3), lanes, markers, turn, approximate)


def _lane(tx: pb.Transaction, b: pb.BranchStatus, segments: list[Segment]) -> Lane:
    return Lane(b.name, shown_branch_state(tx, b), b.attempts, b.error, len(b.result),
                when(seconds(b.updated_at)), segments, b.participant, b.action, b.compensation)


def _turn(tx: pb.Transaction, markers: Sequence[Marker]) -> float | None:
    """When the work turned backward; without a history entry (the history keeps the last
    32), the earliest change of a branch that is in its backward operation."""
    noted = [m.at for m in markers if m.action in TURNS]
    if noted:
        return min(noted)
    backward = [seconds(b.updated_at) for b in tx.branches if b.state in _BACKWARD]
    return min(backward) if backward else None


def _ops(tx: pb.Transaction) -> tuple[str, str]:
    if tx.protocol != pb.PROTOCOL_TWO_PHASE:
        return "action", "compensation"
    committing = tx.state in (pb.TX_STATE_COMMITTING, pb.TX_STATE_COMMITTED)
    return "prepare", "commit" if committing else "abort"


def _forward(tx: pb.Transaction, start: float, turn: float | None,
             end: float) -> list[Segment | None]:
    """The forward segment of each branch. 2PC prepares every branch at once; a saga is
    drawn in plan order, each branch starting when the one before it ended."""
    op = _ops(tx)[0]
    ends = _forward_ends(tx, start, turn, end)
    two_phase = tx.protocol == pb.PROTOCOL_TWO_PHASE
    out: list[Segment | None] = []
    previous, previous_exact = start, True
    for b, (stop, exact) in zip(tx.branches, ends, strict=True):
        if stop is None:
            out.append(None)
            continue
        begin = start if two_phase else min(previous, stop)
        if _unvoted(tx, b):  # its Prepare went unanswered until the decision to abort
            out.append(Segment(op, False, begin, stop, "failed", "no vote", None, exact))
            previous, previous_exact = stop, exact
            continue
        forward_state = b.state if b.state in _FORWARD else pb.BRANCH_STATE_SUCCEEDED
        out.append(Segment(op, False, begin, stop, _outcome(tx, forward_state), _forward_name(b),
                           b.attempts if exact else None, exact and (two_phase or previous_exact),
                           open=b.state == pb.BRANCH_STATE_RUNNING and not settled(tx)))
        previous, previous_exact = stop, exact
    return out


def _unvoted(tx: pb.Transaction, b: pb.BranchStatus) -> bool:
    """A 2PC branch still RUNNING after the decision to abort: no vote came, and the
    Abort is being sent to it (it may have prepared)."""
    return tx.decision == "abort" and b.state == pb.BRANCH_STATE_RUNNING


def _forward_name(b: pb.BranchStatus) -> str:
    return branch_state_name(b.state) if b.state in _FORWARD else "done"


def _forward_ends(tx: pb.Transaction, start: float, turn: float | None,
                  end: float) -> list[tuple[float | None, bool]]:
    """(end, exact) per branch; None for a branch whose forward work never started."""
    known: list[float | None] = []
    for b in tx.branches:
        if b.state == pb.BRANCH_STATE_PENDING or (b.state == pb.BRANCH_STATE_SKIPPED and turn is None):
            known.append(None)
        elif b.state == pb.BRANCH_STATE_RUNNING and not settled(tx) and turn is None:
            known.append(end)
        elif _unvoted(tx, b) and turn is not None:
            known.append(turn)  # its last change is the Abort's, not the Prepare's
        elif b.state in _FORWARD:
            known.append(seconds(b.updated_at))
        else:
            known.append(float("nan"))  # ran forward; when it ended was overwritten
    return _place(known, start, turn if turn is not None else end)


def _place(known: list[float | None], start: float, limit: float) -> list[tuple[float | None, bool]]:
    """Unknown ends (nan) spread evenly between the known ones around them, in order."""
    out: list[tuple[float | None, bool]] = []
    i = 0
    while i < len(known):
        value = known[i]
        if value is None or value == value:  # nan != nan: known or never started
            out.append((value, True))
            i += 1
            continue
        j = i
        while j < len(known) and known[j] is not None and known[j] != known[j]:
            j += 1
        low = next((v for v, _ in reversed(out) if v is not None), start)
        high = next((v for v in known[j:] if v is not None), limit)
        high = max(low, min(high, limit))
        steps = j - i + 1
        out += [(low + (high - low) * (k + 1) / steps, False) for k in range(j - i)]
        i = j
    return out


def _backward(tx: pb.Transaction, turn: float | None, end: float) -> list[Segment | None]:
    """Compensations (in reverse plan order, one after the other) and 2PC phase 2 (all at
    once), from the moment the work turned."""
    out: list[Segment | None] = [None] * len(tx.branches)
    if turn is None:
        return out
    op = _ops(tx)[1]
    replays = [seconds(h.at) for h in tx.history if h.action == "replay"]
    previous = turn
    for i in reversed(range(len(tx.branches))):
        b = tx.branches[i]
        if b.state not in _BACKWARD and not _unvoted(tx, b):
            continue
        open_ = b.state in _OPEN and not settled(tx)
        stop = end if open_ else max(seconds(b.updated_at), turn)
        # An operator's replay re-drives it: the bar starts there, not at the first try.
        restart = max([turn, *(r for r in replays if r <= stop)])
        begin = restart if tx.protocol == pb.PROTOCOL_TWO_PHASE else min(max(previous, restart), stop)
        out[i] = Segment(op, True, begin, stop, _outcome(tx, b.state), shown_branch_state(tx, b),
                         b.attempts, True, open=open_)
        previous = stop
    return out


def _outcome(tx: pb.Transaction, state: int) -> str:
    if state in _OPEN and tx.state == pb.TX_STATE_FAILED:
        return "failed"  # stuck: the transaction waits for an operator
    return _OUTCOME.get(state, "running")


# -- one transaction: the rest -------------------------------------------------------------


@dataclass(frozen=True)
class Detail:
    gid: str
    protocol: str
    state: str
    settled: bool
    created: str
    updated: str
    took: str
    error: str
    labels: list[tuple[str, str]]
    timeline: Timeline
    actions: list[str]  # what an operator may try in this state
    trace_id: str = ""  # its OpenTelemetry trace; "" when untraced
    skippable: list[str] = field(default_factory=list)  # branches a skip may name
    clock: list[str] = field(default_factory=list)  # deadline, pause, holds waited on
    notice: str = ""  # how its settlement notice stands; "" when nobody is notified


def detail(tx: pb.Transaction, now: float | None = None) -> Detail:
    line = timeline(tx, now)
    return Detail(tx.gid, protocol_name(tx.protocol), state_name(tx.state), settled(tx),
                  when(seconds(tx.created_at)), when(seconds(tx.updated_at)),
                  span(max(0.0, line.end - line.start)), tx.error, sorted(tx.labels.items()),
                  line, actions(tx), tx.trace_id, skippable(tx),
                  clock_notes(tx, lambda ts: when(seconds(ts))),
                  notice_text(tx.notice) if tx.HasField("notice") else "")


def trace_link(template: str, trace_id: str) -> str:
    """The trace viewer's page of ``trace_id`` ("" without a template or a trace). The id is
    32 hex digits from the coordinator; anything else is not put in a URL."""
    if not template or not re.fullmatch(r"[0-9a-f]{32}", trace_id):
        return ""
    return template.replace("{trace_id}", trace_id)


def actions(tx: pb.Transaction) -> list[str]:
    """What the operator rules (domain.operator) allow in this state. Offered, not
    promised: the coordinator decides (the state may have moved) and its refusal is shown."""
    try:
        state, protocol = TxState(tx.state), Protocol(tx.protocol)
    except ValueError:  # a state this console does not know: offer nothing
        return []
    offered = ["replay"] if may_replay(state) else []
    if skippable(tx):
        offered.append("skip")
    if may_abort(protocol, state, tx.decision):
        offered.append("abort")
    offered += [a for a in ("pause", "resume") if applies(a, tx)]
    return offered


def skippable(tx: pb.Transaction) -> list[str]:
    """The branches the operator rules let a skip mark done (not a FAILED one, ...)."""
    try:
        state = TxState(tx.state)
        return [b.name for b in tx.branches if may_skip(state, BranchState(b.state))]
    except ValueError:
        return []


@dataclass(frozen=True)
class HoldRow:
    address: str
    since: str
    actor: str
    reason: str
    refuse_starts: bool
    waiting_here: int


def hold_rows(holds: Iterable[pb.Hold]) -> list[HoldRow]:
    return [HoldRow(h.address, when(seconds(h.since)), h.actor, h.reason, h.refuse_starts,
                    h.waiting_here) for h in holds]
