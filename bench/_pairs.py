"""Metrics off and on in alternating rounds: what each round measured, and the medians of
the (off, on) pairs, as the benchmarks that measure the cost of metrics print them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Round:
    rate: float  # units of work per second
    cpu_ms: float  # the measured process's CPU per unit


def print_pairs(pairs: list[tuple[Round, Round]], unit: str, process: str) -> float:
    """Print each (off, on) pair, then the medians of their ratios; returns the median CPU
    ms per ``unit`` with metrics off (what an in-process cost is a share of)."""
    print(f"{'round':<8}{'off /s':>9}{'on /s':>9}{'ratio':>9}{'off ms':>9}{'on ms':>9}"
          f"   (ms: {process} CPU per {unit})")
    for n, (off, on) in enumerate(pairs):
        print(f"{n:<8}{off.rate:9.0f}{on.rate:9.0f}{on.rate / off.rate - 1:+9.1%}"
              f"{off.cpu_ms:9.3f}{on.cpu_ms:9.3f}")
    rate = statistics.median(on.rate / off.rate - 1 for off, on in pairs)
    cpu = statistics.median(on.cpu_ms / off.cpu_ms - 1 for off, on in pairs)
    print(f"median: throughput {rate:+.1%}, {process} CPU per {unit} {cpu:+.1%}")
    return statistics.median(off.cpu_ms for off, _ in pairs)
