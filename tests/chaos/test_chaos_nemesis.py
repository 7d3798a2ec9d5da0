"""Nemesis schedules: every form parses, bad input names its token, expansion is
repeatable from the seed, and the runner applies and reverts on time."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import pytest
from txcoord_chaos import topology
from txcoord_chaos.nemesis import (
    DEFAULT_SCHEDULE,
    FaultEvent,
    Nemesis,
    ScheduleError,
    Span,
    load,
    parse,
    timeline,
)
from txcoord_chaos.proxy import Bandwidth, Cut, Latency, Partition, Reset, SlowClose

LINKS = ["client->c1", "c->accounts", "c->orders", "accounts->pg", "orders->maria"]
PROCESSES = ["c1", "c2", "accounts"]


def expand(text: str, duration_s: float = 60.0, seed: int = 1) -> list[FaultEvent]:
    return timeline(text, links=LINKS, processes=PROCESSES, duration_s=duration_s, seed=seed)


# -- parsing -----------------------------------------------------------------------------


def test_once_with_and_without_duration() -> None:
    assert expand("partition:c->accounts@10s+5s") == [FaultEvent(10.0, 5.0, "partition", "c->accounts")]
    (kill,) = expand("kill:c1@30s")
    assert (kill.at_s, kill.duration_s, kill.kind, kill.target) == (30.0, 5.0, "kill", "c1")


def test_time_units() -> None:
    (event,) = expand("pause:c2@1500ms+0.5m")
    assert (event.at_s, event.duration_s) == (1.5, 30.0)
    (event,) = expand("reset:c->orders@2+0")  # bare seconds; 0 = a one-shot pulse
    assert (event.at_s, event.duration_s) == (2.0, 0.0)


def test_every_for_from() -> None:
    events = expand("latency(200,50):accounts->pg@every 20s for 5s", duration_s=65)
    assert [(e.at_s, e.duration_s) for e in events] == [(20, 5), (40, 5), (60, 5)]
    assert events[0].params == {"ms": 200.0, "jitter_ms": 50.0}
    events = expand("cut:c->orders@every 10s from 3s", duration_s=30)
    assert [(e.at_s, e.duration_s) for e in events] == [(3, 5), (13, 5), (23, 5)]


def test_fault_arguments_units_defaults_and_directions() -> None:
    (bw,) = expand("bandwidth(64k)/down:c->orders@1s")
    assert bw.params == {"bytes_per_s": 65536.0} and bw.direction == "down"
    (slow,) = expand("slow-close:c->orders@1s")  # '-' or '_'; default argument
    assert slow.kind == "slow_close" and slow.params == {"delay_ms": 1000.0}
    (lat,) = expand("latency(150ms)/up:c->orders@1s")
    assert lat.params == {"ms": 150.0, "jitter_ms": 50.0} and lat.direction == "up"


def test_ranges_are_drawn_within_bounds() -> None:
    events = expand("latency(100..300,0):c->orders@every 5s..10s for 1s..2s", duration_s=300)
    assert len(events) >= 20
    gaps = [b.at_s - a.at_s for a, b in itertools.pairwise(events)]
    assert all(5 <= g <= 10 for g in gaps)
    assert all(1 <= e.duration_s <= 2 and 100 <= e.params["ms"] <= 300 for e in events)
    assert len({e.params["ms"] for e in events}) > 1


def test_random_kinds_pick_targets_they_fit() -> None:
    events = expand("random(partition|reset|latency|kill):*@every 2s for 1s", duration_s=200)
    kinds = {e.kind for e in events}
    assert kinds == {"partition", "reset", "latency", "kill"}
    for e in events:
        assert (e.target in PROCESSES) == (e.kind == "kill")


def test_random_with_arguments_and_an_outer_direction() -> None:
    events = expand("random(cut|latency(10)/down)/up:c->orders@every 1s for 0.5s", duration_s=100)
    directions = {(e.kind, e.direction) for e in events}
    assert directions == {("cut", "up"), ("latency", "down")}


def test_target_lists_globs_and_all() -> None:
    picked = {e.target for e in expand("partition:c->accounts|c->orders@every 1s for 0.5s")}
    assert picked == {"c->accounts", "c->orders"}
    picked = {e.target for e in expand("partition:c->*@every 1s for 0.5s")}
    assert picked == {"c->accounts", "c->orders"}
    at_once = expand("partition:all(c->*|accounts->pg)@10s+1s")
    assert [(e.at_s, e.target) for e in at_once] == [
        (10, "accounts->pg"), (10, "c->accounts"), (10, "c->orders")]


def test_load_a_file_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "schedule.txt"
    path.write_text("# warm up first\n\npartition:c->accounts@10s+5s   # the article's fault\n"
                    "kill:c1@20s+2s, pause:c2@30s+1s\n")
    schedule = load(path, links=LINKS, processes=PROCESSES)
    assert [e.source for e in schedule.entries] == [
        "partition:c->accounts@10s+5s", "kill:c1@20s+2s", "pause:c2@30s+1s"]
    assert len(schedule.expand(60, seed=0)) == 3


def harness_timeline(duration_s: float, seed: int = 1) -> list[FaultEvent]:
    return timeline(DEFAULT_SCHEDULE, links=topology.LINKS, processes=topology.PROCESSES,
                    duration_s=duration_s, seed=seed)


def test_default_schedule_parses_and_uses_every_kind_family() -> None:
    events = harness_timeline(300)
    kinds = {e.kind for e in events}
    assert {"partition", "reset", "cut", "latency", "kill"} <= kinds
    assert {"drop", "reject", "loss"} & kinds  # packet level, left out where unsupported
    assert all(e.at_s >= 0 and e.end_s <= 300 for e in events)


def _cut_offs(events: list[FaultEvent]) -> dict[tuple[float, str], set[str]]:
    """Coordinator -> etcd events fired together: (start, coordinator) -> the etcd links."""
    found: dict[tuple[float, str], set[str]] = {}
    for e in events:
        if "->etcd" in e.target:
            found.setdefault((e.at_s, e.target.split("->")[0]), set()).add(e.target)
    return found


def test_default_schedule_has_split_brain_faults_within_a_short_run() -> None:
    for seed in (1, 7, 42):
        events = harness_timeline(90, seed)
        lease = topology.LEASE_TTL_S
        long_pauses = [e for e in events if e.kind == "pause" and e.target in ("c1", "c2")
                       and e.duration_s > lease]
        assert len(long_pauses) >= 2, seed
        cut_offs = _cut_offs(events)
        # a coordinator cut off from all three members at once, both ways and one way
        assert any(len(links) == 3 for links in cut_offs.values()), seed
        one_way = [e for e in events if "->etcd" in e.target and e.direction != "both"]
        assert len({e.at_s for e in one_way}) >= 1, seed
        member_kills = [e for e in events if e.kind == "kill" and e.target.startswith("etcd")]
        assert any(p.at_s <= k.at_s and k.end_s <= p.end_s
                   for k in member_kills for p in long_pauses), seed


def test_all_groups_can_be_choices() -> None:
    links = [*LINKS, *(f"c{c}->etcd{m}" for c in (1, 2) for m in (1, 2, 3))]
    events = timeline("partition:all(c1->etcd*)|all(c2->etcd*)@every 10s for 2s", links=links,
                      processes=PROCESSES, duration_s=200, seed=3)
    by_start: dict[float, set[str]] = {}
    for e in events:
        by_start.setdefault(e.at_s, set()).add(e.target)
    groups = {frozenset(t) for t in by_start.values()}
    assert groups == {frozenset(f"c{c}->etcd{m}" for m in (1, 2, 3)) for c in (1, 2)}
    mixed = timeline("partition:c->orders|all(c1->etcd1|c1->etcd2)@every 1s for 0.5s",
                     links=links, processes=PROCESSES, duration_s=100, seed=3)
    sizes = {sum(1 for e in mixed if e.at_s == at) for at in {e.at_s for e in mixed}}
    assert sizes == {1, 2}


def test_a_lone_all_draws_the_same_timeline_as_before() -> None:
    # all(...) alone takes no draw: the entry's fault arguments come out as they always did
    events = expand("latency(10..500):all(c->*)@every 5s for 1s", duration_s=20, seed=9)
    values = sorted({e.params["ms"] for e in events})
    rng = random.Random("9/0")
    assert values == sorted(rng.uniform(10, 500) for _ in range(len(values)))


def test_packet_kinds_parse_with_their_arguments_and_directions() -> None:
    loss, drop, isolate = expand("loss(0.25):c->orders@1s+2s, drop/down:accounts->pg@4s+1s, "
                                 "isolate:c2@6s+1s")
    assert (loss.kind, dict(loss.params), loss.is_packet_fault) == ("loss", {"probability": 0.25}, True)
    assert (drop.kind, drop.direction, drop.is_process_fault) == ("drop", "down", False)
    assert (isolate.kind, isolate.is_process_fault, isolate.is_packet_fault) == ("isolate", True, True)
    (default,) = expand("loss:c->orders@1s")
    assert default.params["probability"] == pytest.approx(0.2)
    assert not expand("latency:c->orders@1s")[0].is_packet_fault


@pytest.mark.parametrize(("text", "token"), [
    ("partiton:c1@1s", "partiton"),
    ("partition:nowhere@1s", "nowhere"),
    ("partition:z*@1s", "z*"),
    ("kill:accounts->pg@1s", "accounts->pg"),
    ("partition:c1@1s", "c1"),
    ("latency(1,2,3):c->orders@1s", "latency(1,2,3)"),
    ("latency(fast):c->orders@1s", "fast"),
    ("cut/left:c->orders@1s", "left"),
    ("kill/up:c1@1s", "kill/up"),
    ("partition:c->orders@10x", "10x"),
    ("partition:c->orders@1s+soon", "soon"),
    ("partition:c->orders@5s..1s", "5s..1s"),
    ("partition:c->orders@every 0s", "0s"),
    ("partition:c->orders@every 2s fro 1s", "fro"),
    ("partition:c->orders@every", "every"),
    ("partition c->orders@1s", "partition c->orders@1s"),
    ("partition:c->orders 1s", "partition:c->orders 1s"),
    ("latency(1:c->orders@1s", "latency(1:c->orders@1s"),
    ("random(partition|):c->orders@1s", "random(partition|)"),
    ("loss(1.5):c->orders@1s", "1.5"),
    ("isolate:c->orders@1s", "c->orders"),
])
def test_bad_input_names_the_token(text: str, token: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse(f"reset:c->orders@1s, {text}", links=LINKS, processes=PROCESSES)
    assert caught.value.token == token
    assert token in str(caught.value)
    assert "entry 2" in str(caught.value)


def test_names_must_be_links_or_processes_not_both() -> None:
    with pytest.raises(ScheduleError, match="both a link and a process"):
        parse("kill:x@1s", links=["x"], processes=["x"])


# -- expansion ---------------------------------------------------------------------------


def test_same_seed_same_timeline_other_seed_differs() -> None:
    text = ("random(partition|reset|latency(10..500)):*@every 3s..9s for 1s..4s, "
            "random(kill|pause):*@every 20s")
    assert expand(text, seed=42) == expand(text, seed=42)
    assert expand(text, seed=42) != expand(text, seed=43)


def test_editing_one_entry_leaves_the_others_draws_alone() -> None:
    first = "random(partition|cut):c->*@every 2s..5s for 1s"
    before = expand(f"{first}, latency:accounts->pg@every 7s", seed=5)
    after = expand(f"{first}, latency(1..999):accounts->pg@every 3s..11s", seed=5)
    assert [e for e in before if e.kind != "latency"] == [e for e in after if e.kind != "latency"]


def test_windows_are_clipped_to_the_run_and_never_overlap_their_entry() -> None:
    events = expand("partition:c->orders@every 1s for 3s", duration_s=10)
    assert [(e.at_s, e.duration_s) for e in events] == [(1, 3), (4, 3), (7, 3)]
    (clipped,) = expand("kill:c1@8s+5s", duration_s=10)
    assert clipped.duration_s == 2
    assert expand("kill:c1@12s", duration_s=10) == []


def test_overlapping_same_kind_on_one_target_is_dropped() -> None:
    events = expand("partition:c->orders@10s+5s, partition/up:c->orders@12s+5s, "
                    "latency:c->orders@12s+5s, cut/up:accounts->pg@1s+5s, cut/down:accounts->pg@2s+5s, "
                    "kill:c1@20s+5s, pause:c1@22s+1s, pause:c2@22s+1s")
    assert [e.describe() for e in events] == [
        "cut/up:accounts->pg", "cut/down:accounts->pg", "partition:c->orders",
        "latency(200,50):c->orders", "kill:c1", "pause:c2"]


def test_events_map_to_proxy_faults() -> None:
    def fault(text: str) -> object:
        return expand(text)[0].proxy_fault()

    assert fault("partition:c->orders@1s") == Partition()
    assert fault("reset:c->orders@1s") == Reset()
    assert fault("cut:c->orders@1s") == Cut()
    assert fault("latency(30,5):c->orders@1s") == Latency(30, 5)
    assert fault("bandwidth(1k):c->orders@1s") == Bandwidth(1024)
    assert fault("slow_close(250):c->orders@1s") == SlowClose(250)
    with pytest.raises(ValueError, match="process fault"):
        fault("kill:c1@1s")
    event = expand("latency(30,5)/up:c->orders@1s+2s")[0]
    assert event.to_dict() == {"at_s": 1.0, "duration_s": 2.0, "kind": "latency", "target": "c->orders",
                               "params": {"ms": 30.0, "jitter_ms": 5.0}, "direction": "up"}


def test_span_draw() -> None:
    assert Span(3, 3).draw(random.Random(0)) == 3
    assert 1 <= Span(1, 2).draw(random.Random(0)) <= 2


# -- the runner ----------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.origin = self.loop.time()
        self.log: list[tuple[str, str, float]] = []

    async def apply(self, event: FaultEvent) -> None:
        self.log.append(("apply", event.target, self.loop.time() - self.origin))

    def revert(self, event: FaultEvent) -> None:  # sync callbacks work too
        self.log.append(("revert", event.target, self.loop.time() - self.origin))


async def test_runner_applies_and_reverts_on_time() -> None:
    rec = Recorder()
    events = [FaultEvent(0.05, 0.10, "partition", "a"), FaultEvent(0.10, 0.05, "kill", "p")]
    nemesis = Nemesis(events, rec.apply, rec.revert, clock=lambda: rec.loop.time() - rec.origin)
    windows = await nemesis.run()
    expected = [("apply", "a", 0.05), ("apply", "p", 0.10), ("revert", "a", 0.15), ("revert", "p", 0.15)]
    assert [(k, t) for k, t, _ in rec.log] == [(k, t) for k, t, _ in expected]
    for (_, _, got), (_, _, want) in zip(rec.log, expected, strict=True):
        assert want <= got < want + 0.05
    assert [w.event.target for w in windows] == ["a", "p"]
    assert all(w.reverted_at is not None and w.reverted_at > w.applied_at for w in windows)
    assert nemesis.fault_windows()[0][0] == pytest.approx(0.05, abs=0.05)


async def test_back_to_back_windows_revert_before_the_next_apply() -> None:
    rec = Recorder()
    events = [FaultEvent(0.02, 0.05, "partition", "a"), FaultEvent(0.07, 0.05, "partition", "a"),
              FaultEvent(0.03, 0.0, "reset", "b")]  # a pulse: apply then revert at once
    await Nemesis(events, rec.apply, rec.revert).run()
    assert [(k, t) for k, t, _ in rec.log] == [
        ("apply", "a"), ("apply", "b"), ("revert", "b"), ("revert", "a"), ("apply", "a"), ("revert", "a")]


async def test_stop_skips_the_rest_and_reverts_what_is_applied() -> None:
    rec = Recorder()
    events = [FaultEvent(0.01, 10.0, "partition", "a"), FaultEvent(5.0, 1.0, "kill", "p")]
    nemesis = Nemesis(events, rec.apply, rec.revert)
    runner = asyncio.create_task(nemesis.run())
    await asyncio.sleep(0.1)
    await asyncio.wait_for(nemesis.stop(), 1.0)
    windows = await runner
    assert [(k, t) for k, t, _ in rec.log] == [("apply", "a"), ("revert", "a")]
    assert rec.log[-1][2] < 0.2
    assert len(windows) == 1 and windows[0].reverted_at is not None


async def test_callback_errors_are_recorded_not_raised() -> None:
    reverted: list[str] = []

    def broken_apply(event: FaultEvent) -> None:
        raise RuntimeError("no such process")

    def revert(event: FaultEvent) -> None:
        reverted.append(event.target)

    nemesis = Nemesis([FaultEvent(0.0, 0.02, "kill", "p")], broken_apply, revert)
    (window,) = await nemesis.run()
    assert window.errors == ["apply: RuntimeError: no such process"]
    assert reverted == ["p"]  # healing is attempted anyway
    assert window.to_dict()["errors"] == window.errors
