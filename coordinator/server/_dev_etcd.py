"""A private single-member etcd in a temporary folder (``txc serve --dev`` and the tests).

Always started with auto-compaction: without it, etcd keeps every revision of every key,
and compare-and-swap transactions were measured ~40x slower on a 2-core machine once the
history had grown (etcd 3.4, Debian's etcd-server).

"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..rpc.net import free_port


def etcd_binary() -> str:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if found is None:
        raise RuntimeError("etcd not found on PATH: install Debian's 'etcd-server' package "
                           "(scripts/setup.sh does) or pass --etcd HOST:PORT")
    return found


@dataclass
class DevEtcd:
    data_dir: Path | None = None
    client_port: int = 0
    peer_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, timeout_s: float = 15.0) -> DevEtcd:
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="txc-etcd-")
            self.data_dir = Path(self._tmp.name)
        self.client_port = self.client_port or free_port()
        self.peer_port = self.peer_port or free_port()
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        cmd = [
            etcd_binary(), "--name", "txc-dev", "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"txc-dev={peer}",
            "--auto-compaction-mode", "revision", "--auto-compaction-retention", "10000",
            "--quota-backend-bytes", str(2 * 1024**3), "--logger", "zap", "--log-level", "error",
        ]
        log_file = open(self.data_dir / "etcd.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(cmd, stdout=log_file, stderr=log_file,
                                        start_new_session=True)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"etcd exited early; see {self.data_dir}/etcd.log")
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"etcd did not start within {timeout_s}s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start on the same ports and data (the log survives)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
