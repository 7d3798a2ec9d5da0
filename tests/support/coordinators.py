"""Coordinators in the test process, on a private etcd."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from coordinator.log import EtcdOptions
from coordinator.server import CoordinatorServer, DevEtcd, ServerOptions


def server_options(etcd: DevEtcd, prefix: str, **etcd_kw: object) -> ServerOptions:
    """A coordinator on a free loopback port, quick to take over (2 s leases, 0.3 s scans)."""
    opts = EtcdOptions(endpoints=(etcd.endpoint,), prefix=prefix, lease_ttl_s=2, **etcd_kw)  # type: ignore[arg-type]
    return replace(ServerOptions(), listen="127.0.0.1:0", etcd=opts, scan_interval_s=0.3,
                   grace_s=2.0)


@asynccontextmanager
async def running(options: ServerOptions) -> AsyncIterator[CoordinatorServer]:
    server = CoordinatorServer(options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.5)
