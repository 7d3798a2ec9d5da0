"""grpc.health.v1 for a participant: SERVING while its database answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.participant._db.dsn import select_one
from coordinator.participant._db.errors import describe

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger("coordinator.participant.health")


class _Timing(Protocol):
    @property
    def health_interval_s(self) -> float: ...
    @property
    def health_timeout_s(self) -> float: ...


class DatabaseHealth:
    """Probes the database every ``health_interval_s`` seconds; a probe that fails or takes
    longer than ``health_timeout_s`` turns the services NOT_SERVING until the next good one."""

    def __init__(self, engine: AsyncEngine, services: Iterable[str], timing: _Timing) -> None:
        self._engine = engine
        self._services = tuple(services)
        self._timing = timing
        self._servicer: Any = health_aio.HealthServicer()
        self._task: asyncio.Task[None] | None = None
        self.serving = False

    def add_to_server(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def start(self) -> None:
        await self.probe()
        self._task = asyncio.create_task(self._loop(), name="txc-participant-health")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.serving = False
        await self._servicer.enter_graceful_shutdown()

    async def probe(self) -> bool:
        try:
            async with asyncio.timeout(self._timing.health_timeout_s):
                await select_one(self._engine)
            healthy = True
        except Exception as exc:
            if self.serving:
                log.warning("database unreachable, reporting NOT_SERVING: %s", describe(exc))
            healthy = False
        await self._set(healthy)
        return healthy

    async def _set(self, healthy: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if healthy else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in self._services:
            await self._servicer.set(service, status)
        self.serving = healthy

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._timing.health_interval_s)
            await self.probe()
