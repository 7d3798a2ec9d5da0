"""gRPC plumbing shared by the coordinator, its clients and the participant SDK: TLS,
channels that come back quickly after a peer restarts, bounded shutdown steps, and the
multiplexed call stream (``Batch`` and ``Starts``), and start requests read as domain plans
and checked as the coordinator checks them (``_plans``: the servicer and the SDK's outbox).

``coordinator.rpc.net`` (``add_port``, ``free_port``) is for local clusters, the chaos
harness, the benchmarks and the tests.
"""
