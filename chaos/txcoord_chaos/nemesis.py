"""Nemesis schedules: a small language, its expansion from a seed, and a runner.

A schedule is a list of entries, separated by commas or newlines (``#`` starts a comment)::

    partition:c->accounts@10s+5s
    latency(200,50)/up:accounts->pg@every 20s for 5s
    kill:coordinator-1@30s
    random(partition|reset|latency(100..300)):*@every 15s for 3s

Each entry is ``FAULTS:TARGETS@WHEN``.

FAULTS
    ``kind[(args)][/direction]``, or ``random(f1|f2|...)[/direction]`` to draw one per
    occurrence. Link kinds (done by the fault proxy): ``partition``, ``reset``, ``cut``,
    ``latency(ms[,jitter_ms])`` (default 200,50), ``bandwidth(bytes_per_s)`` (``k``/``m``
    suffix = KiB/MiB; default 64k), ``slow_close(delay_ms)`` (default 1000). Packet link
    kinds (iptables in the services' network namespaces, see :mod:`txcoord_chaos.netns`): ``drop``,
    ``reject`` (TCP reset), ``loss(probability)`` (default 0.2). Process kinds: ``kill``
    (SIGKILL, restart when the window ends), ``pause`` (SIGSTOP, SIGCONT when it ends),
    ``isolate`` (packet level: the process' namespace drops everything). A direction
    (``up`` = client to server, ``down``, ``both``; default both) applies to link kinds only.
TARGETS
    ``name``, a glob over the known names (``*``, ``c->*``), or ``a|b|...``: one of them is
    drawn per occurrence, among those the drawn kind fits (links or processes).
    ``all(...)`` hits every matching target at once: ``all(c1->etcd*)`` cuts c1 off from
    every etcd member. An ``all(...)`` may also be one of the choices:
    ``all(c1->etcd*)|all(c2->etcd*)`` draws a coordinator, then hits all its etcd links.
WHEN
    ``T[+D]``: once at T for D. ``every P [for D] [from S]``: first at S (default: one
    interval P), then every P. D defaults to 5 s. A time is ``500ms``, ``10s``, ``2m`` or a
    bare number of seconds; any number (times and fault arguments) may be a range
    ``lo..hi``, drawn uniformly per occurrence.

Expansion is deterministic: the same schedule, seed and run duration always give the same
timeline. Each entry draws from its own generator (seeded by the seed and the entry's
position), so editing one entry leaves the others' draws alone. Windows are clipped to
the run; an occurrence starts no earlier than the previous one of its entry ended; an
event that would overlap an earlier one on the same target with the same kind (for
processes: any kind) is dropped, because reverting one would end the other.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .netns import ISOLATE, PACKET_KINDS
from .proxy import Bandwidth, Cut, Fault, Latency, Partition, Reset, SlowClose

log = logging.getLogger(__name__)

LINK_KINDS = ("partition", "reset", "cut", "latency", "bandwidth", "slow_close", *PACKET_KINDS)
PROCESS_KINDS = ("kill", "pause", ISOLATE)
DIRECTIONS = ("up", "down", "both")
DEFAULT_DURATION_S = 5.0
MAX_EVENTS_PER_ENTRY = 100_000

# Written for the harness' names (topology.LINKS / PROCESSES); '*' picks among the targets
# each kind fits.
DEFAULT_SCHEDULE = ", ".join([
    "random(partition|reset|cut/up|cut/down):*@every 10s..20s for 2s..5s from 5s",
    "latency(100..400,50):*@every 12s..20s for 3s..6s from 3s",
    "random(bandwidth(16k)|slow_close(1000)):*@every 20s..30s for 3s..5s from 8s",
    "random(kill|pause):*@every 20s..30s for 2s..5s from 12s",
    # Packet level (left out, and said so, where namespaces and iptables are unavailable).
    "random(drop|reject|loss(0.05..0.3)):*@every 15s..25s for 2s..4s from 10s",
    # Split brain. The harness' coordinators hold a 5 s lease (topology.LEASE_TTL_S): a
    # coordinator paused for longer wakes up to find its transactions taken over.
    "pause:c1|c2@every 25s..35s for 8s..12s from 15s",
    # A coordinator cut off from every etcd member while it still reaches the services ...
    "random(partition|drop):all(c1->etcd*)|all(c2->etcd*)@every 30s..40s for 7s..10s from 20s",
    # ... and one way: its requests reach etcd (writes may land) but no reply comes back,
    # or the reverse.
    "random(cut/down|drop/down|cut/up|drop/up):all(c1->etcd*)|all(c2->etcd*)"
    "@every 30s..40s for 7s..10s from 38s",
    # An etcd member killed while a coordinator is paused: one fixed period, so the kill
    # (3 s in, for 5 s) always falls inside the 10 s pause.
    "pause:c1|c2@every 40s for 10s from 28s",
    "kill:etcd1|etcd2|etcd3@every 40s for 5s from 31s",
])

ParamUnit = Literal["ms", "bytes", "ratio"]
# kind -> ((param, unit, default or None if required), ...). Every argument has a default
# so that a bare kind works inside random(...).
KIND_PARAMS: dict[str, tuple[tuple[str, ParamUnit, float | None], ...]] = {
    "latency": (("ms", "ms", 200.0), ("jitter_ms", "ms", 50.0)),
    "bandwidth": (("bytes_per_s", "bytes", 64 * 1024.0),),
    "slow_close": (("delay_ms", "ms", 1000.0),),
    "loss": (("probability", "ratio", 0.2),),
}


class ScheduleError(ValueError):
    """A schedule that cannot be parsed; ``token`` is the offending piece of text."""

    def __init__(self, message: str, token: str, where: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.token = token
        self.where = where


@dataclass(frozen=True)
class FaultEvent:
    """One fault on one target: applied at ``at_s`` (seconds from the run's start)."""

    at_s: float
    duration_s: float
    kind: str
    target: str
    params: Mapping[str, float] = field(default_factory=dict)
    direction: str = "both"

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    @property
    def is_process_fault(self) -> bool:
        return self.kind in PROCESS_KINDS

    @property
    def is_packet_fault(self) -> bool:
        return self.kind in PACKET_KINDS or self.kind == ISOLATE

    def proxy_fault(self) -> Fault:
        """The proxy fault for a link event (``proxy.set_fault(event.direction, ...)``)."""
        p = self.params
        faults: dict[str, Callable[[], Fault]] = {
            "partition": Partition,
            "reset": Reset,
            "cut": Cut,
            "latency": lambda: Latency(p["ms"], p.get("jitter_ms", 0.0)),
            "bandwidth": lambda: Bandwidth(max(1, int(p["bytes_per_s"]))),
            "slow_close": lambda: SlowClose(p["delay_ms"]),
        }
        if self.kind not in faults:
            raise ValueError(f"{self.kind} is a process fault, not a proxy fault")
        return faults[self.kind]()

    def describe(self) -> str:
        args = ",".join(f"{v:g}" for v in self.params.values())
        text = f"{self.kind}({args})" if args else self.kind
        if not self.is_process_fault and self.direction != "both":
            text += f"/{self.direction}"
        return f"{text}:{self.target}"

    def to_dict(self) -> dict[str, Any]:
        return {"at_s": self.at_s, "duration_s": self.duration_s, "kind": self.kind,
                "target": self.target, "params": dict(self.params), "direction": self.direction}


# -- parsed form -------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A number, or a range ``lo..hi`` drawn uniformly per occurrence."""

    lo: float
    hi: float

    def draw(self, rng: random.Random) -> float:
        return self.lo if self.lo == self.hi else rng.uniform(self.lo, self.hi)


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    params: tuple[tuple[str, Span], ...]
    direction: str


@dataclass(frozen=True)
class Entry:
    source: str
    faults: tuple[FaultSpec, ...]
    targets: tuple[str, ...]  # resolved names, in the order they were given
    every_target: bool  # the whole target is one all(...): hit them all at once
    groups: tuple[tuple[str, ...], ...]  # the choices: one name each, or an all(...)
    at: Span | None  # once
    every: Span | None  # repeatedly
    first: Span | None  # "from"
    duration: Span


@dataclass(frozen=True)
class Schedule:
    entries: tuple[Entry, ...]
    links: tuple[str, ...]
    processes: tuple[str, ...]

    def expand(self, duration_s: float, seed: int) -> list[FaultEvent]:
        """The timeline for a run of ``duration_s`` seconds, sorted by start time."""
        events: list[FaultEvent] = []
        for index, entry in enumerate(self.entries):
            rng = random.Random(f"{seed}/{index}")
            events.extend(_occurrences(entry, rng, duration_s, self.processes))
        events.sort(key=lambda e: (e.at_s, e.target, e.kind))
        return _drop_conflicts(events)


# -- parsing -----------------------------------------------------------------------------


def parse(text: str, *, links: Iterable[str], processes: Iterable[str] = ()) -> Schedule:
    """Parse a schedule; targets are checked against the known link and process names."""
    link_names, process_names = tuple(dict.fromkeys(links)), tuple(dict.fromkeys(processes))
    both = set(link_names) & set(process_names)
    if both:
        raise ScheduleError(f"names are both a link and a process: {sorted(both)}", sorted(both)[0])
    entries = tuple(_parse_entry(source, where, link_names, process_names)
                    for where, source in _split_entries(text))
    return Schedule(entries, link_names, process_names)


def load(path: str | Path, *, links: Iterable[str], processes: Iterable[str] = ()) -> Schedule:
    """Parse a schedule file: one entry (or several, comma-separated) per line, # comments."""
    return parse(Path(path).read_text(encoding="utf-8"), links=links, processes=processes)


def timeline(text: str, *, links: Iterable[str], processes: Iterable[str] = (),
             duration_s: float, seed: int) -> list[FaultEvent]:
    """Parse and expand in one go."""
    return parse(text, links=links, processes=processes).expand(duration_s, seed)


def _split_entries(text: str) -> Iterator[tuple[str, str]]:
    for line_no, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0]
        for n, piece in enumerate(_split_top(body, ","), start=1):
            if piece.strip():
                yield f"line {line_no}, entry {n}", piece.strip()


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses (fault arguments hold commas and bars)."""
    pieces, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == sep and depth == 0:
            pieces.append(current)
            current = ""
        else:
            current += char
    pieces.append(current)
    return pieces


def _parse_entry(source: str, where: str, links: tuple[str, ...], processes: tuple[str, ...]) -> Entry:
    if source.count("(") != source.count(")"):
        raise ScheduleError(f"unbalanced parentheses in {source!r}", source, where)
    faults_text, colon, rest = source.partition(":")
    targets_text, at_sign, when_text = rest.partition("@")
    if not colon:
        raise ScheduleError(f"missing ':' between fault and target in {source!r}", source, where)
    if not at_sign:
        raise ScheduleError(f"missing '@' before the time in {source!r}", source, where)
    faults = _parse_faults(faults_text.strip(), where)
    every_target, groups = _parse_targets(targets_text.strip(), where, links + processes)
    targets = tuple(dict.fromkeys(name for group in groups for name in group))
    _check_fit(faults, targets, processes, targets_text.strip(), where)
    at, every, first, duration = _parse_when(when_text.strip(), where)
    return Entry(source, faults, targets, every_target, groups, at, every, first, duration)


def _parse_faults(text: str, where: str) -> tuple[FaultSpec, ...]:
    choice = re.fullmatch(r"random\s*\((.*)\)\s*(?:/\s*(\w+))?", text)
    if choice is None:
        return (_parse_fault(text, "both", where),)
    outer = _direction(choice[2] or "both", where)
    options = [o.strip() for o in _split_top(choice[1], "|")]
    if not all(options):
        raise ScheduleError(f"empty choice in {text!r}", text, where)
    return tuple(_parse_fault(o, outer, where) for o in options)


def _parse_fault(text: str, default_direction: str, where: str) -> FaultSpec:
    m = re.fullmatch(r"([A-Za-z_-]+)\s*(?:\((.*)\))?\s*(?:/\s*(\w*))?", text)
    if m is None:
        raise ScheduleError(f"bad fault {text!r} (expected kind[(args)][/direction])", text, where)
    kind = m[1].lower().replace("-", "_")
    if kind not in LINK_KINDS + PROCESS_KINDS:
        known = ", ".join(LINK_KINDS + PROCESS_KINDS)
        raise ScheduleError(f"unknown fault kind {m[1]!r} (known: {known})", m[1], where)
    if m[3] is not None and kind in PROCESS_KINDS:
        raise ScheduleError(f"{kind} takes no direction: {text!r}", text, where)
    direction = _direction(m[3], where) if m[3] is not None else default_direction
    args = [a.strip() for a in m[2].split(",")] if m[2] is not None and m[2].strip() else []
    return FaultSpec(kind, _parse_params(kind, args, text, where), direction)


def _direction(token: str, where: str) -> str:
    if token not in DIRECTIONS:
        raise ScheduleError(f"unknown direction {token!r} (up, down or both)", token, where)
    return token


def _parse_params(kind: str, args: list[str], text: str, where: str) -> tuple[tuple[str, Span], ...]:
    spec = KIND_PARAMS.get(kind, ())
    required = sum(1 for _, _, default in spec if default is None)
    if not required <= len(args) <= len(spec):
        wanted = ", ".join(name for name, _, _ in spec) or "no arguments"
        raise ScheduleError(f"{kind} takes {wanted}; got {len(args)} in {text!r}", text, where)
    params = []
    for i, (name, unit, default) in enumerate(spec):
        if i < len(args):
            params.append((name, _span(args[i], _AMOUNT[unit], where)))
        elif default is not None:
            params.append((name, Span(default, default)))
    return tuple(params)


def _parse_targets(text: str, where: str,
                   known: tuple[str, ...]) -> tuple[bool, tuple[tuple[str, ...], ...]]:
    """(whole target is one all(...), the choices): a name or glob gives one choice per
    name it matches, an ``all(...)`` one choice of every name it matches."""
    choices = [c.strip() for c in _split_top(text, "|")]
    groups: dict[tuple[str, ...], None] = {}
    for choice in choices:
        together = re.fullmatch(r"all\s*\((.*)\)", choice)
        if together:
            names = _resolve([p.strip() for p in _split_top(together[1], "|")], where, known)
            groups[tuple(names)] = None
        else:
            groups.update(((name,), None) for name in _resolve([choice], where, known))
    whole = len(choices) == 1 and re.fullmatch(r"all\s*\((.*)\)", choices[0]) is not None
    return whole, tuple(groups)


def _resolve(patterns: list[str], where: str, known: tuple[str, ...]) -> list[str]:
    chosen: dict[str, None] = {}
    for pattern in patterns:
        if pattern in known:
            chosen[pattern] = None
            continue
        matches = fnmatch.filter(known, pattern) if any(c in pattern for c in "*?[") else []
        if not matches:
            raise ScheduleError(f"unknown target {pattern!r} (known: {', '.join(known) or 'none'})",
                                pattern, where)
        chosen.update(dict.fromkeys(matches))
    return list(chosen)


def _check_fit(faults: tuple[FaultSpec, ...], targets: tuple[str, ...], processes: tuple[str, ...],
               targets_text: str, where: str) -> None:
    for fault in faults:
        if not _fitting(fault.kind, targets, processes):
            wanted = "process" if fault.kind in PROCESS_KINDS else "link"
            raise ScheduleError(f"{fault.kind} needs a {wanted}; {targets_text!r} has none",
                                targets_text, where)


def _fitting(kind: str, targets: Sequence[str], processes: Sequence[str]) -> list[str]:
    want_process = kind in PROCESS_KINDS
    return [t for t in targets if (t in processes) == want_process]


def _parse_when(text: str, where: str) -> tuple[Span | None, Span | None, Span | None, Span]:
    words = text.split()
    if not words:
        raise ScheduleError("missing time after '@'", text, where)
    if words[0] != "every":
        at, plus, length = text.partition("+")
        duration = _span(length.strip(), _seconds, where) if plus else _default_duration()
        return _span(at.strip(), _seconds, where), None, None, duration
    if len(words) < 2 or len(words) % 2:
        raise ScheduleError(f"expected 'every P [for D] [from S]', got {text!r}", text, where)
    every = _span(words[1], _seconds, where)
    if every.lo <= 0:
        raise ScheduleError(f"interval must be > 0: {words[1]!r}", words[1], where)
    options: dict[str, Span] = {}
    for keyword, value in zip(words[2::2], words[3::2], strict=True):
        if keyword not in ("for", "from") or keyword in options:
            raise ScheduleError(f"unexpected {keyword!r} in {text!r} (for, from)", keyword, where)
        options[keyword] = _span(value, _seconds, where)
    return None, every, options.get("from"), options.get("for", _default_duration())


def _default_duration() -> Span:
    return Span(DEFAULT_DURATION_S, DEFAULT_DURATION_S)


def _span(token: str, amount: Callable[[str], float | None], where: str) -> Span:
    lo_text, dots, hi_text = token.partition("..")
    lo = amount(lo_text.strip())
    hi = amount(hi_text.strip()) if dots else lo
    if lo is None or hi is None:
        raise ScheduleError(f"bad number {token!r}", token, where)
    if lo > hi:
        raise ScheduleError(f"range {token!r} runs backwards", token, where)
    return Span(lo, hi)


def _seconds(token: str) -> float | None:
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m)?", token)
    if m is None:
        return None
    return float(m[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m[2]]


def _milliseconds(token: str) -> float | None:
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(ms)?", token)
    return None if m is None else float(m[1])


def _bytes(token: str) -> float | None:
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([kKmM])?", token)
    if m is None:
        return None
    return float(m[1]) * {"k": 1024, "m": 1024 * 1024, None: 1}[m[2].lower() if m[2] else None]


def _ratio(token: str) -> float | None:
    m = re.fullmatch(r"0?\.\d+|0|1(?:\.0*)?", token)
    return None if m is None else float(token)


_AMOUNT: dict[ParamUnit, Callable[[str], float | None]] = {
    "ms": _milliseconds, "bytes": _bytes, "ratio": _ratio}


# -- expansion ---------------------------------------------------------------------------


def _occurrences(entry: Entry, rng: random.Random, horizon: float,
                 processes: tuple[str, ...]) -> list[FaultEvent]:
    if entry.every is None:
        assert entry.at is not None
        start = entry.at.draw(rng)
        return _draw_events(entry, rng, start, horizon, processes) if start < horizon else []
    events: list[FaultEvent] = []
    start = (entry.first or entry.every).draw(rng)
    while start < horizon:
        if len(events) > MAX_EVENTS_PER_ENTRY:
            raise ScheduleError(f"more than {MAX_EVENTS_PER_ENTRY} events", entry.source)
        drawn = _draw_events(entry, rng, start, horizon, processes)
        events.extend(drawn)
        length = max((e.duration_s for e in drawn), default=0.0)
        start += max(entry.every.draw(rng), length)  # never overlap the entry's own last window
    return events


def _draw_events(entry: Entry, rng: random.Random, start: float, horizon: float,
                 processes: tuple[str, ...]) -> list[FaultEvent]:
    # The order of draws is part of the contract "same seed, same timeline": keep it.
    fault = entry.faults[0] if len(entry.faults) == 1 else rng.choice(entry.faults)
    fitting = [g for g in (tuple(_fitting(fault.kind, group, processes)) for group in entry.groups) if g]
    # A lone all(...) draws nothing, as single names draw one among them: timelines made
    # before all(...) could be a choice stay the same.
    targets = list(fitting[0]) if entry.every_target else list(rng.choice(fitting))
    params = {name: span.draw(rng) for name, span in fault.params}
    duration = min(entry.duration.draw(rng), horizon - start)
    return [FaultEvent(start, duration, fault.kind, t, dict(params), fault.direction) for t in targets]


def _drop_conflicts(events: list[FaultEvent]) -> list[FaultEvent]:
    kept: list[FaultEvent] = []
    for event in events:
        clash = next((k for k in kept if _conflict(k, event)), None)
        if clash is None:
            kept.append(event)
        else:
            log.info("nemesis: dropped %s at %.1fs: overlaps %s at %.1fs",
                     event.describe(), event.at_s, clash.describe(), clash.at_s)
    return kept


def _conflict(a: FaultEvent, b: FaultEvent) -> bool:
    if a.target != b.target or not (a.at_s < b.end_s and b.at_s < a.end_s):
        return False
    if a.is_process_fault:
        return True  # kill and pause of one process do not mix
    same_way = a.direction == b.direction or "both" in (a.direction, b.direction)
    return a.kind == b.kind and same_way


# -- running -----------------------------------------------------------------------------

Callback = Callable[[FaultEvent], Awaitable[None] | None]


@dataclass
class AppliedWindow:
    """When an event was in force, on the runner's clock (for shading plots)."""

    event: FaultEvent
    applied_at: float
    reverted_at: float | None = None
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event.to_dict(), "applied_at": self.applied_at,
                "reverted_at": self.reverted_at, "errors": list(self.errors)}


class Nemesis:
    """Applies and reverts a timeline's events on time.

    Actions on one target run in timeline order (a revert before an apply due at the same
    moment); different targets proceed independently, so a slow restart does not hold up
    a partition elsewhere. ``stop()`` skips what has not started and reverts what is in
    force. Callback errors are logged and recorded in the window, never raised: a run
    should go on and the report show it.
    """

    def __init__(self, timeline: Sequence[FaultEvent], apply: Callback, revert: Callback, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeline = list(timeline)
        self._apply = apply
        self._revert = revert
        self._clock = clock
        self._windows: dict[int, AppliedWindow] = {}
        self._applying: set[int] = set()  # apply spawned, revert not yet
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self.started_at: float | None = None

    @property
    def windows(self) -> list[AppliedWindow]:
        return sorted(self._windows.values(), key=lambda w: w.applied_at)

    def fault_windows(self) -> list[tuple[float, float]]:
        """(start, end) of each applied window on the clock; open ones end now."""
        now = self._clock()
        return [(w.applied_at, w.reverted_at if w.reverted_at is not None else now) for w in self.windows]

    async def run(self) -> list[AppliedWindow]:
        """Run the timeline to its end (or until ``stop()``); returns the applied windows."""
        if self._running:
            raise RuntimeError("this nemesis is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        origin = loop.time()
        self.started_at = self._clock()
        try:
            for when, _, index in self._plan():
                if await self._sleep_until(origin + when):
                    break
                self._dispatch(index)
        finally:
            for index in list(self._applying):  # stopped early: heal what is in force
                self._spawn_revert(index)
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._finished.set()
        return self.windows

    async def stop(self) -> None:
        """Skip the rest of the timeline, revert what is applied, wait for ``run()`` to end."""
        self._stopping.set()
        if self._running:
            await self._finished.wait()

    def _plan(self) -> list[tuple[float, int, int]]:
        # (time, phase, index); phase 0 = revert sorts before 1 = apply at equal times.
        plan = []
        for index, event in enumerate(self.timeline):
            plan.append((event.at_s, 1, index))
            if event.duration_s > 0:
                plan.append((event.end_s, 0, index))
        return sorted(plan)

    def _dispatch(self, index: int) -> None:
        event = self.timeline[index]
        if index in self._applying:
            self._spawn_revert(index)
            return
        self._applying.add(index)
        self._chain(event.target, self._do_apply(index))
        if event.duration_s <= 0:
            self._spawn_revert(index)  # a pulse: e.g. reset the connections once

    def _spawn_revert(self, index: int) -> None:
        self._applying.discard(index)
        self._chain(self.timeline[index].target, self._do_revert(index))

    def _chain(self, target: str, action: Awaitable[None]) -> None:
        previous = self._tails.get(target)

        async def in_order() -> None:
            if previous is not None:
                await asyncio.wait({previous})
            await action

        task = asyncio.get_running_loop().create_task(in_order())
        self._tails[target] = task
        self._tasks.append(task)

    async def _do_apply(self, index: int) -> None:
        event = self.timeline[index]
        error = await self._call(self._apply, event, "apply")
        window = AppliedWindow(event, applied_at=self._clock())
        if error:
            window.errors.append(error)
        self._windows[index] = window

    async def _do_revert(self, index: int) -> None:
        event = self.timeline[index]
        error = await self._call(self._revert, event, "revert")
        window = self._windows[index]
        window.reverted_at = self._clock()
        if error:
            window.errors.append(error)

    async def _call(self, callback: Callback, event: FaultEvent, what: str) -> str | None:
        try:
            result = callback(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.exception("nemesis: %s of %s failed", what, event.describe())
            return f"{what}: {type(exc).__name__}: {exc}"
        return None

    async def _sleep_until(self, deadline: float) -> bool:
        """Sleep until the loop time ``deadline``; True if stopped first."""
        delay = deadline - asyncio.get_running_loop().time()
        if self._stopping.is_set() or delay <= 0:
            return self._stopping.is_set()
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return False
        return True
