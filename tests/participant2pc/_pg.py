"""A private PostgreSQL cluster with max_prepared_transactions > 0, for the 2PC tests.

The shared server on 5432 runs with max_prepared_transactions = 0, and changing that needs
a restart, so the tests start their own cluster: initdb into a temporary folder, then
postgres on a free loopback port with its socket in that folder. PostgreSQL refuses to
run as root, so as root (CI) the cluster runs as the ``postgres`` user through runuser.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from coordinator.rpc.net import free_port


def pg_bindir() -> Path:
    """The newest /usr/lib/postgresql/N/bin (Debian's layout), or TXC_TEST_PG_BIN."""
    if os.environ.get("TXC_TEST_PG_BIN"):
        return Path(os.environ["TXC_TEST_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise RuntimeError("initdb not found under /usr/lib/postgresql/*/bin "
                           "(scripts/databases.sh installs PostgreSQL; or set TXC_TEST_PG_BIN)")
    return Path(found[-1]).parent


class PrivatePostgres:
    def __init__(self, max_prepared: int = 50) -> None:
        self.max_prepared = max_prepared
        self.bindir = pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="txc-pg2pc-"))
        self.port = free_port()
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def start(self) -> PrivatePostgres:
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")
        settings = (f"-c max_prepared_transactions={self.max_prepared} -c port={self.port} "
                    f"-c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", settings, "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
