"""Where a coordinator's CPU goes: py-spy samples one ``txc serve`` (batch transport) while
no-op sagas run through it in a closed loop, and the functions with the most samples of
their own (self) and below them (total) are printed. A benchmark aid, not a test.

    .venv/bin/python bench/coordinator_profile.py [--seconds 20] [--concurrency 64]
        [--out profile.txt]   # also keeps py-spy's collapsed stacks

Needs py-spy (``pip install py-spy``; it reads the process from outside, root or ptrace
rights). Figures are shares of samples, so they hold on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import closed_loop
from _noop_world import noop_world

from coordinator import CoordinatorClient, Saga, Step


def _saga(participant: str, gid: str) -> Saga:
    return Saga([Step(b, participant, f"{b}.do", f"{b}.undo") for b in ("a", "b")], gid=gid)


async def _load(coordinator: str, participant: str, seconds: float, concurrency: int) -> int:
    async with CoordinatorClient(coordinator, timeout_s=60) as client:
        await client.start_saga(_saga(participant, "warm"), wait=True)
        run = int(time.time())
        end = time.monotonic() + seconds
        counter = itertools.count()

        def items() -> itertools.takewhile[int]:
            return itertools.takewhile(lambda _: time.monotonic() < end, counter)

        async def one(i: int) -> None:
            await client.start_saga(_saga(participant, f"p{run}-{i}"), wait=True)

        rate, _, done = await closed_loop(items(), concurrency, one)
        print(f"{len(done)} sagas, {rate:.0f}/s while sampled")
        return len(done)


def summarize(collapsed: Path, top: int) -> str:
    """Self and total sample shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples", "", "self %  function"]
    lines += [f"{100 * n / samples:6.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "total %  function"]
    lines += [f"{100 * n / samples:7.1f}  {f}" for f, n in total.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    collapsed = Path(tempfile.mkdtemp()) / "stacks.txt"
    with noop_world("/profile") as world:
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                                str(world.pids["coordinator"]), "--format", "raw", "--output",
                                str(collapsed), "--duration", str(int(args.seconds)),
                                "--rate", "200", "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        asyncio.run(_load(world.coordinator, world.participant, args.seconds, args.concurrency))
        spy.wait(60)
        report = summarize(collapsed, args.top)
        print(report)
        if args.out:
            args.out.write_text(report + "\n")
            args.out.with_suffix(".stacks").write_text(collapsed.read_text())


if __name__ == "__main__":
    main()
