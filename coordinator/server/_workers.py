"""``txc serve --workers N``: N coordinator processes on one port, under one supervisor.

Each worker is a whole coordinator, as if it ran on a host of its own: its own node id
(``HOST-wI-PID-XXXXXX``), etcd lease, participant channels and /metrics port. They share
only the gRPC port and etcd. The kernel spreads incoming connections over the workers:
grpc's servers set SO_REUSEPORT on Linux (the ``grpc.so_reuseport`` channel argument, on by
default), so every worker binds the same ``--listen`` address. A worker that dies leaves its
transactions to the others through its lease, as a crashed host would.

The supervisor (the process ``txc serve`` started) holds no gRPC and no etcd connection. It
starts each worker as a fresh interpreter (``python -m coordinator.server._workers``: never
a fork of a process that may hold gRPC threads, which crashes), hands it its options on
stdin, forwards SIGTERM and SIGINT to every worker as SIGTERM and waits for their graceful
stop (grace + ``STOP_MARGIN_S``, then SIGKILL).

A worker that dies on its own is reported (ERROR, with its exit code or signal) and:

- restarted, if it had served: its transactions pass to the others when its lease ends
  anyway, and a new worker gives the host its core back. More than ``RESTARTS`` deaths
  within ``RESTART_WINDOW_S`` (a transaction that crashes whoever drives it, say) stop the
  whole group instead, with exit code 1: restarting cannot mend that;
- the group is stopped, exit code 1, if it died before it was serving (a taken port, etcd
  out of reach, an unreadable file): a new worker would fail the same way; the host's
  supervisor (systemd, Kubernetes, compose's ``restart:``) is the one to retry later.

Every message a worker logs starts with ``[wI]`` (they share one stderr). Each worker has a
status pipe: it writes ``ready NODE_ID`` there once it serves and keeps it open until it
exits, so end-of-file there is its death. The supervisor keeps the worker's stdin open, so
end-of-file there is the supervisor's death (SIGKILL): the worker then stops gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from ..telemetry._logging import setup_logging
from ..telemetry._metrics import parse_listen
from ..telemetry._tracing_env import tracer_provider_from_env
from ._app import CoordinatorServer
from ._options import ServerOptions

log = logging.getLogger("txcoord.workers")
STOP_MARGIN_S = 30.0  # past --grace: how long a worker may take to stop before SIGKILL
RESTARTS = 5  # deaths of serving workers tolerated within RESTART_WINDOW_S
RESTART_WINDOW_S = 60.0
_WORKER_MODULE = "coordinator.server._workers"


def check_workers(workers: int, listen: str, metrics_listen: str) -> None:
    """ValueError naming the flag when ``workers`` processes cannot serve these addresses."""
    if workers < 1:
        raise ValueError("--workers must be >= 1")
    if workers == 1:
        return
    if _port("--listen", listen) == 0:
        raise ValueError(f"--listen {listen}: port 0 would give each worker a port of its own; "
                         f"with --workers {workers} name the port they share")
    if metrics_listen and _port("--metrics-listen", metrics_listen) + workers - 1 > 65535:
        raise ValueError(f"--metrics-listen {metrics_listen}: worker i serves on its port + i, "
                         f"past 65535 with --workers {workers}")


def _port(flag: str, listen: str) -> int:
    try:
        return parse_listen(listen)[1]
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def worker_options(options: ServerOptions, index: int) -> ServerOptions:
    """Worker ``index``'s options: a node id that names it, and /metrics on the given port +
    ``index`` (port 0 stays 0: each worker picks one and logs it)."""
    node_id = f"{socket.gethostname()}-w{index}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    metrics = options.metrics_listen
    if metrics:
        head, _, port = metrics.rpartition(":")
        metrics = f"{head}:{int(port) + index}" if int(port) else metrics
    return replace(options, node_id=node_id, metrics_listen=metrics)


def serve_workers(options: ServerOptions, workers: int, log_level: str = "info",
                  log_format: str = "text") -> int:
    """Run ``workers`` coordinators on ``options.listen`` until SIGTERM or SIGINT; the exit
    code: 0 when every worker stopped cleanly, 1 otherwise (see the module's docstring)."""
    check_workers(workers, options.listen, options.metrics_listen)
    return Supervisor(options, workers, log_level, log_format).run()


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    status: int  # read end of its status pipe
    node_id: str = ""  # set once it serves
    pending: bytes = b""

    @property
    def serving(self) -> bool:
        return bool(self.node_id)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A handler that does nothing: the signal's number arrives on the wake-up socket."""


def describe(code: int) -> str:
    """A process' exit status as words (``Popen.returncode``: negative = killed by signal)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, options: ServerOptions, count: int, log_level: str,
                 log_format: str) -> None:
        # What each worker is handed (its index apart): plain values, pickled. Without the
        # tracer provider: each worker makes its own from the OTEL_* variables.
        self._spec = (replace(options, tracer_provider=None), log_level, log_format)
        self._grace_s, self._count = options.grace_s, count
        self._workers: dict[int, _Worker] = {}
        self._deaths: deque[float] = deque()

    def run(self) -> int:
        wake, wake_in = socket.socketpair()
        for end in (wake, wake_in):
            end.setblocking(False)
        handlers = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous_fd = signal.set_wakeup_fd(wake_in.fileno(), warn_on_full_buffer=False)
        try:
            log.info("starting %d workers on %s", self._count, self._spec[0].listen)
            for index in range(self._count):
                self._start(index)
            gave_up = self._watch(wake)
            clean = self._stop_all()
            return 1 if gave_up or not clean else 0
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            wake.close()
            wake_in.close()

    def _start(self, index: int) -> None:
        read, write = os.pipe()
        try:
            process = subprocess.Popen([sys.executable, "-m", _WORKER_MODULE, str(write)],
                                       stdin=subprocess.PIPE, pass_fds=(write,))
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        assert process.stdin is not None
        try:
            process.stdin.write(pickle.dumps((index, *self._spec)))
            process.stdin.flush()  # and kept open: its end tells the worker we are gone
        except BrokenPipeError:
            pass  # it died at once: its status pipe ends, which reports it
        self._workers[index] = _Worker(index, process, read)
        log.info("worker %d started (pid %d)", index, process.pid)

    def _watch(self, wake: socket.socket) -> bool:
        """Until a signal (False) or a worker's death the group cannot survive (True)."""
        while True:
            by_fd = {w.status: w for w in self._workers.values()}
            readable, _, _ = select.select([wake.fileno(), *by_fd], [], [])
            if wake.fileno() in readable:
                received = wake.recv(64)
                name = signal.Signals(received[0]).name if received else "signal"
                log.info("%s received: stopping %d workers", name, len(self._workers))
                return False
            for fd in readable:
                if not self._read_status(by_fd[fd]) and not self._after_death(by_fd[fd]):
                    return True

    def _read_status(self, worker: _Worker) -> bool:
        """Take in what the worker wrote on its pipe; False at its end (the worker exited)."""
        data = os.read(worker.status, 4096)
        if not data:
            return False
        worker.pending += data
        while b"\n" in worker.pending:
            line, _, worker.pending = worker.pending.partition(b"\n")
            word, _, node_id = line.decode(errors="replace").partition(" ")
            if word == "ready":
                worker.node_id = node_id
                log.info("worker %d ready (pid %d, node %s)", worker.index, worker.process.pid,
                         node_id)
        return True

    def _after_death(self, worker: _Worker) -> bool:
        """Report a worker that exited unasked; restart it (True) or give up (False)."""
        code = self._reap(worker)
        del self._workers[worker.index]
        log.error("worker %d (pid %d, node %s) %s", worker.index, worker.process.pid,
                  worker.node_id or "not yet serving", describe(code))
        if not worker.serving:
            log.error("worker %d failed before it served: stopping the others (a new one "
                      "would fail the same way)", worker.index)
            return False
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths[0] < now - RESTART_WINDOW_S:
            self._deaths.popleft()
        if len(self._deaths) > RESTARTS:
            log.error("%d workers died within %.0f s: stopping the others", len(self._deaths),
                      RESTART_WINDOW_S)
            return False
        log.warning("the transactions of node %s pass to the other workers when its lease "
                    "ends; starting a new worker %d", worker.node_id, worker.index)
        self._start(worker.index)
        return True

    def _reap(self, worker: _Worker) -> int:
        os.close(worker.status)
        if worker.process.stdin is not None:
            worker.process.stdin.close()
        return worker.process.wait()

    def _stop_all(self) -> bool:
        """SIGTERM to every worker, then wait for each; True when all stopped cleanly."""
        for worker in self._workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s + STOP_MARGIN_S
        clean = True
        for worker in self._workers.values():
            clean = self._stopped(worker, deadline) and clean
        self._workers.clear()
        log.info("every worker stopped" if clean else "workers stopped, not all cleanly")
        return clean

    def _stopped(self, worker: _Worker, deadline: float) -> bool:
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d (pid %d) did not stop in time: killing it", worker.index,
                      worker.process.pid)
            worker.process.kill()
        code = self._reap(worker)
        # SIGTERM before its handler was set: a worker that was still starting had no work.
        if code == 0 or (code == -signal.SIGTERM and not worker.serving):
            return True
        log.error("worker %d (pid %d) %s while stopping", worker.index, worker.process.pid,
                  describe(code))
        return False


# The worker's side: ``python -m coordinator.server._workers STATUS_FD``, spec on stdin.

_early_stop: list[int] = []  # SIGTERM before the event loop ran


def _worker_main(status: int) -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: _early_stop.append(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the supervisor's SIGTERM
    os.set_inheritable(status, False)
    index, options, log_level, log_format = pickle.load(sys.stdin.buffer)
    setup_logging(log_level, log_format)
    _tag_log_records(f"[w{index}] ")
    _stop_when_orphaned()
    provider = tracer_provider_from_env()  # the supervisor checked the OTEL_* variables
    options = replace(worker_options(options, index), tracer_provider=provider)
    try:
        asyncio.run(_serve(options, index, status))
    except Exception:  # logged in the log's format (a bare traceback would break JSON lines)
        log.exception("coordinator %s failed", options.node_id)
        return 1
    finally:
        if provider is not None:
            provider.shutdown()
    return 0


def _tag_log_records(tag: str) -> None:
    """Start every message this worker logs with ``tag``: the workers share one stderr."""
    make = logging.getLogRecordFactory()

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.msg = f"{tag}{record.msg}"
        return record
    logging.setLogRecordFactory(tagged)


def _stop_when_orphaned() -> None:
    """SIGTERM to this worker when its stdin ends: the supervisor is gone."""
    def wait() -> None:  # on the file descriptor: a thread blocked in sys.stdin's reader
        while os.read(0, 4096):  # holds its lock, which the interpreter's exit then waits for
            pass
        log.warning("the supervisor is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=wait, name="txc-supervisor-watch", daemon=True).start()


async def _serve(options: ServerOptions, index: int, status: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if _early_stop:
        stop.set()
    registry = CollectorRegistry(target_info={"worker": str(index), "node_id": options.node_id})
    server = CoordinatorServer(options, registry=registry)
    await server.start()
    os.write(status, f"ready {options.node_id}\n".encode())
    await stop.wait()
    log.info("SIGTERM received: shutting down")
    await server.stop()


if __name__ == "__main__":
    sys.exit(_worker_main(int(sys.argv[1])))
