"""Fixtures every suite may use (a pytest plugin, registered by tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from coordinator.server import DevEtcd


@pytest.fixture(scope="session")
def etcd() -> Iterator[DevEtcd]:
    """A private single-member etcd for the session."""
    server = DevEtcd().start()
    yield server
    server.cleanup()


@pytest.fixture
def prefix() -> str:
    """A fresh etcd key prefix: coordinators of different tests never meet."""
    return f"/test/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def gid() -> str:
    """A fresh transaction id: tests share databases and coordinators for the session."""
    return f"g-{uuid.uuid4().hex[:12]}"
