"""Runs that cannot touch each other: a slot per live run, and the leftovers of dead runs.

A run holds one of ``SLOTS`` numbered slots for its whole life: an exclusive ``flock`` on
``STATE/slot-NN.lock``, which the kernel drops when the process ends however it ends, and
a record ``STATE/slot-NN.json`` naming what the run made. Everything the run makes is named
after its slot or its run id, so two live runs cannot collide:

* slot ``NN``: network namespaces ``txc-chaos-sNN-*``, interfaces ``txcsNN-*`` (bridge,
  veths; at most 15 characters), subnet ``10.214.NN.0/24``, ports ``PORT_BASE + 16*NN``
  onwards (below the kernel's ephemeral range, so no ``bind(0)`` elsewhere takes them);
* run id (``YYYYmmddHHMMSS_pid_sNN``): databases ``txc_chaos_<run id>``, the etcd key
  prefix, etcd's data folder, and the ``TXC_CHAOS_RUN`` variable every process it starts
  carries.

A record whose lock nobody holds is a run that died before cleaning up: the next run to
claim a slot kills that run's processes, deletes its namespaces (its iptables rules live in
them), rolls back the 2PC branches it left prepared, drops its databases (unless it was
asked to keep them) and removes its etcd data. A locked slot is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from . import netns
from .databases import Databases, drop_databases

log = logging.getLogger("txcoord.chaos")

SLOTS = 32
PORT_BASE = 23000  # 23016 .. 23527: under the ephemeral range (32768+ on Linux)
PORTS_PER_SLOT = 16
ENV_TAG = "TXC_CHAOS_RUN"
PORT_NAMES = ("etcd1", "etcd2", "etcd3", "etcd1-peer", "etcd2-peer", "etcd3-peer",
              "c1", "c2", "accounts", "orders")


class SlotsBusy(RuntimeError):
    """Every slot is held by a live run."""


def state_dir() -> Path:
    """``$TXC_CHAOS_STATE``, else /run/txc-chaos as root (gone at reboot, like namespaces),
    else a per-user folder in the temporary directory."""
    if env := os.environ.get("TXC_CHAOS_STATE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/txc-chaos")
    return Path(tempfile.gettempdir()) / f"txc-chaos-{os.geteuid()}"


@dataclass(frozen=True)
class Identity:
    """The names of one run."""

    slot: int
    run_id: str

    @property
    def ports(self) -> dict[str, int]:
        base = PORT_BASE + PORTS_PER_SLOT * self.slot
        return {name: base + i for i, name in enumerate(PORT_NAMES)}

    @property
    def env(self) -> dict[str, str]:
        return {ENV_TAG: self.run_id}

    @property
    def etcd_prefix(self) -> str:
        return f"/txc-chaos/{self.run_id}"

    @property
    def database(self) -> str:
        return f"txc_chaos_{self.run_id}"


@dataclass
class Lease:
    """A claimed slot; :meth:`release` when the run has cleaned up after itself."""

    identity: Identity
    path: Path  # the record
    record: dict[str, Any]
    _lock: IO[bytes] | None = field(default=None, repr=False)

    def update(self, **fields: Any) -> None:
        self.record.update(fields)
        _write_json(self.path, self.record)

    def release(self, *, forget: bool = True) -> None:
        """``forget=False`` keeps the record: the next run cleans what it lists."""
        if forget:
            self.path.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()  # closing the descriptor drops the flock
            self._lock = None


async def claim(dbs: Databases, *, out: Path, keep_databases: bool,
                root: Path | None = None) -> Lease:
    """Clean every dead run's leftovers, then take the first free slot. Refuses when a live
    run writes to the same ``out`` folder (their events would mix), naming it."""
    root = root or state_dir()
    root.mkdir(parents=True, exist_ok=True)
    chosen: Lease | None = None
    sharing: list[str] = []
    for slot in range(1, SLOTS + 1):
        if chosen is not None and not _record_path(root, slot).exists():
            continue  # nothing to clean, and a slot is taken already
        lock = _try_lock(root, slot)
        if lock is None:
            sharing += _same_out(root, slot, out)
            continue
        try:
            if await _clean_if_dead(root, slot) and chosen is None \
                    and ports_free(Identity(slot, "").ports.values()):
                chosen = _take(root, slot, lock, dbs, out, keep_databases)
        finally:
            if chosen is None or chosen.identity.slot != slot:
                lock.close()
    if sharing:
        if chosen is not None:
            chosen.release()
        raise SlotsBusy(f"{out} is the output folder of a live run: {'; '.join(sharing)}; "
                        "give this run another --out")
    if chosen is None:
        raise SlotsBusy(f"all {SLOTS} chaos slots are in use: {'; '.join(holders(root))}")
    return chosen


def claim_slot(root: Path | None = None) -> Lease:
    """A free slot without the database clean-up (for tests that need only names)."""
    root = root or state_dir()
    root.mkdir(parents=True, exist_ok=True)
    for slot in range(1, SLOTS + 1):
        lock = _try_lock(root, slot)
        if lock is None:
            continue
        if not _record_path(root, slot).exists():
            return _take(root, slot, lock, Databases(), Path("."), False)
        lock.close()
    raise SlotsBusy(f"no free chaos slot: {'; '.join(holders(root))}")


def holders(root: Path | None = None) -> list[str]:
    """Who holds the slots, for messages: 'slot 3: run ... (pid N, out ...)'."""
    root = root or state_dir()
    found = []
    for path in sorted(root.glob("slot-*.json")):
        record = _read_json(path)
        if record:
            found.append(f"slot {record.get('slot')}: run {record.get('run_id')} "
                         f"(pid {record.get('pid')}, out {record.get('out')})")
    return found


def ports_free(ports: Any) -> bool:
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as etcd and gRPC bind
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _try_lock(root: Path, slot: int) -> IO[bytes] | None:
    """The slot's lock file, locked; None if a live run holds it."""
    handle = (root / f"slot-{slot:02d}.lock").open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _same_out(root: Path, slot: int, out: Path) -> list[str]:
    record = _read_json(_record_path(root, slot)) or {}
    if record.get("out") != str(out.resolve()):
        return []
    return [f"run {record.get('run_id')} (pid {record.get('pid')})"]


def _take(root: Path, slot: int, lock: IO[bytes], dbs: Databases, out: Path,
          keep: bool) -> Lease:
    ident = Identity(slot, f"{time.strftime('%Y%m%d%H%M%S')}_{os.getpid()}_s{slot:02d}")
    record = {"slot": slot, "run_id": ident.run_id, "pid": os.getpid(), "started": time.time(),
              "out": str(out.resolve()), "servers": dbs.servers(), "databases": [],
              "keep_databases": keep, "etcd_dir": None}
    lease = Lease(ident, _record_path(root, slot), record, lock)
    lease.update()  # written before anything is made, so a crash leaves nothing unlisted
    return lease


async def _clean_if_dead(root: Path, slot: int) -> bool:
    """Called with the slot's lock held: a record here is a dead run's. True if the slot
    is (now) clean."""
    path = _record_path(root, slot)
    record = _read_json(path)
    if record is None:
        path.unlink(missing_ok=True)  # unreadable: written half by a run that died
        return True
    log.warning("cleaning up after run %s (pid %s), which ended without doing it",
                record.get("run_id"), record.get("pid"))
    try:
        await clean(record)
    except Exception as exc:  # leave the record: a later run tries again
        log.warning("could not clean up after run %s: %s", record.get("run_id"), exc)
        return False
    path.unlink(missing_ok=True)
    return True


async def clean(record: dict[str, Any]) -> None:
    """Remove what a dead run's record lists (processes first: they hold the rest)."""
    kill_tagged(str(record["run_id"]))
    netns.remove_slot(int(record["slot"]))
    if not record.get("keep_databases"):
        servers = Databases(**record.get("servers", {}))
        for name in record.get("databases", []):
            await drop_databases(replace(servers, name=name))
    if record.get("etcd_dir"):
        shutil.rmtree(record["etcd_dir"], ignore_errors=True)


def kill_tagged(run_id: str, wait_s: float = 10.0) -> int:
    """SIGKILL every process started with ``TXC_CHAOS_RUN=run_id``; how many there were."""
    tag = f"{ENV_TAG}={run_id}".encode()
    victims = [pid for pid in _pids() if tag in _environ(pid)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while any(_running(p) for p in victims) and time.monotonic() < deadline:
        time.sleep(0.05)
    if victims:
        log.warning("killed %d processes left by run %s", len(victims), run_id)
    return len(victims)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init, holding nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _record_path(root: Path, slot: int) -> Path:
    return root / f"slot-{slot:02d}.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)  # atomic: a reader never sees half a record


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
