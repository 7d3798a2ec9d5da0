"""Chaos harness: fault proxy, nemesis schedules and the invariant checker.

- ``txcoord_chaos.proxy``: an asyncio TCP proxy that partitions, resets, delays, throttles, slowly
  closes or one-way cuts a link, switchable at run time.
- ``txcoord_chaos.nemesis``: a small schedule language, expanded from one seed into a timeline of
  fault events, and a runner that applies and reverts them on time.
- ``txcoord_chaos.checker``: a pure checker that turns a run's history and final state into a
  per-mode report (invariant violations, lost and phantom transfers, latency, throughput).
"""
