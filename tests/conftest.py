"""Session-wide test aids: a teardown that hangs says what it waits on; a TLS certificate;
the shared fixtures of tests/support."""

from __future__ import annotations

import asyncio
import gc
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

HANG_REPORT_AFTER_S = 45.0


def _dump_running_tasks() -> None:
    """Print every task of each running event loop, with where it is suspended. Reads
    another thread's loop without locks: good enough for a post-mortem."""
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]
    for loop in loops:
        tasks = list(asyncio.all_tasks(loop))
        print(f"\n=== teardown still running after {HANG_REPORT_AFTER_S:.0f}s: "
              f"{len(tasks)} asyncio tasks ===", file=sys.stderr)
        for task in tasks:
            task.print_stack(limit=12, file=sys.stderr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    timer = threading.Timer(HANG_REPORT_AFTER_S, _dump_running_tasks)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@pytest.fixture
def tls_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost; (cert, key), PEM files."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key
