"""Saga and 2PC throughput and latency through one coordinator, against a no-coordinator
baseline.

Everything runs on this machine: a private etcd, a no-op participant process, one
``txc serve`` process per mode (unary transport, batch transport, batch with Prometheus
metrics on, scraped once a second as Prometheus would, and batch with every span exported
over OTLP/gRPC to a receiver in this process) and this load generator. Prints sagas/s,
p50/p99 latency, etcd requests per saga and the coordinator's memory, beside the baseline
(the same two participant calls made directly, no coordinator) from the same run, and what
metrics and traces cost: batch+metrics and batch+traces against batch in alternating rounds
(``--cost-rounds`` pairs; on a shared machine one long run each would compare two moments,
not two modes), by throughput and by the coordinator's own CPU per saga. A benchmark, not a
test: it asserts nothing.

    .venv/bin/python bench/saga_throughput.py [--sagas 4000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from _cpu import CpuMeter, format_row, process_seconds
from _load import closed_loop, pct
from _otlp_sink import SpanSink
from _pairs import Round, print_pairs
from prometheus_client import CollectorRegistry
from txcoord_chaos.topology import wait_port

from coordinator import CoordinatorClient, ParticipantClient, Saga, Step, TwoPhase
from coordinator.domain.records import Protocol, TxState
from coordinator.rpc.net import free_port
from coordinator.server import DevEtcd
from coordinator.server._metrics import MetricsInterceptor
from coordinator.telemetry._metrics import Metrics, PrometheusMetrics

HERE = Path(__file__).resolve().parent


def etcd_requests(etcd: DevEtcd) -> int:
    text = urllib.request.urlopen(f"http://{etcd.endpoint}/metrics").read().decode()
    total = 0
    for m in re.finditer(r'^grpc_server_handled_total\{[^}]*grpc_method="(\w+)"[^}]*\} (\S+)$',
                         text, re.M):
        if m.group(1) in ("Txn", "Put", "DeleteRange", "Range"):
            total += int(float(m.group(2)))
    return total


def etcd_bytes(etcd: DevEtcd) -> int:
    """Bytes etcd received from its clients (requests, keys and values)."""
    text = urllib.request.urlopen(f"http://{etcd.endpoint}/metrics").read().decode()
    match = re.search(r"^etcd_network_client_grpc_received_bytes_total (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else 0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def open_loop(rate: float, seconds: float, one: object) -> list[float]:
    latencies: list[float] = []

    async def timed(i: int) -> None:
        t0 = time.perf_counter()
        await one(i)  # type: ignore[operator]
        latencies.append(time.perf_counter() - t0)

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(timed(i)))
    await asyncio.gather(*tasks)
    return latencies


# A coordinator process each. traces: every transaction traced; traces-sampled: one in ten
# (OTEL_TRACES_SAMPLER), as a busy production coordinator would run.
MODES = ("unary", "batch", "batch+metrics", "batch+traces", "batch+traces-sampled")


def _mode_flags(mode: str, metrics_port: int) -> list[str]:
    transport, _, extra = mode.partition("+")
    flags = ["--participant-transport", transport]
    if extra == "metrics":
        flags += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    return flags


def _mode_env(mode: str, sink_port: int) -> dict[str, str]:
    """Traces, exported over OTLP/gRPC as a collector would get them."""
    _, _, extra = mode.partition("+")
    if not extra.startswith("traces"):
        return {}
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "500",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
    if extra == "traces-sampled":
        env |= {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    return env


def run(args: argparse.Namespace) -> None:
    etcd = DevEtcd().start()
    pport, metrics_port, sink_port = free_port(), free_port(), free_port()
    cports = {m: free_port() for m in MODES}
    participant = subprocess.Popen([sys.executable, str(HERE / "noop_participant.py"), str(pport)])
    coordinators = {m: subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "serve", "--listen", f"127.0.0.1:{cports[m]}",
         "--etcd", etcd.endpoint, "--prefix", f"/bench/{m}", *_mode_flags(m, metrics_port),
         "--log-level", "warning"], env={**os.environ, **_mode_env(m, sink_port)})
        for m in MODES}
    try:
        for port in (pport, *cports.values()):
            asyncio.run(wait_port(("127.0.0.1", port), 60, f"port {port}"))
        meter = CpuMeter(
{"coordinator": lambda: [c.pid for c in coordinators.values()],
                          "participant": lambda: [participant.pid],
                          "etcd": lambda: [etcd.process.pid] if etcd.process else []})
        pids = {m: c.pid for m, c in coordinators.items()}
        ports = Ports(f"127.0.0.1:{pport}", cports, metrics_port, sink_port)
        asyncio.run(measure(args, etcd, ports, meter, pids))
    finally:
        for process in (*coordinators.values(), participant):
            process.terminate()
            process.wait()
        etcd.cleanup()


@dataclass
class Figures:
    """One mode's figures: rate, latencies, etcd load and CPU per transaction."""

    rate: float
    latencies: list[float]
    etcd_requests: float = 0.0
    etcd_bytes: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)


async def scraping(port: int) -> None:
    """Read /metrics every second, as Prometheus would (its cost is part of the cost)."""
    while True:
        await asyncio.to_thread(lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=5).read())
        await asyncio.sleep(1.0)


@dataclass(frozen=True)
class Ports:
    participant: str  # its address
    coordinators: dict[str, int]  # by mode
    metrics: int
    span_sink: int


async def measure(args: argparse.Namespace, etcd: DevEtcd, ports: Ports, meter: CpuMeter,
                  pids: dict[str, int]) -> None:
    address, cports = ports.participant, ports.coordinators
    participant = ParticipantClient(address)
    sink = SpanSink()
    await sink.start(ports.span_sink)
    scraper = asyncio.create_task(scraping(ports.metrics))

    async def direct(i: int) -> None:
        for b in ("a", "b"):
            await participant.call("execute", f"d{i}", b, f"{b}.do")

    figures: dict[str, Figures] = {}
    meter.start()
    rate, lat, _ = await closed_loop(range(args.sagas), args.concurrency, direct)
    figures["baseline"] = Figures(rate, lat, cpu=meter.ms_per(args.sagas))
    half: dict[str, list[float]] = {}
    half_requests: dict[str, float] = {}  # etcd requests per saga at half rate
    for transport, port in cports.items():
        async with CoordinatorClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            await client.start_saga(_saga(address, f"warm-{transport.replace('+', '-')}"), wait=True)

            async def saga(i: int) -> None:
                await client.start_saga(_saga(address, f"s{args.run}-{i}"), wait=True)

            async def two_phase(i: int) -> None:
                await client.start_two_phase(_two_phase(address, f"t{args.run}-{i}"), wait=True)

            figures[f"saga {transport}"] = await _measured(args, etcd, meter, saga)
            before = etcd_requests(etcd)
            half[transport] = await open_loop(figures[f"saga {transport}"].rate / 2,
                                              args.half_seconds, saga)
            half_requests[transport] = (etcd_requests(etcd) - before) / len(half[transport])
            figures[f"2pc {transport}"] = await _measured(args, etcd, meter, two_phase)
    costs = {extra: await _cost_pairs(args, address, cports, pids, f"batch+{extra}")
             for extra in ("metrics", "traces", "traces-sampled")}
    scraper.cancel()
    await participant.close()
    await asyncio.sleep(1.0)  # the last spans are exported within OTEL_BSP_SCHEDULE_DELAY
    await sink.stop()
    _report(args, figures, half, half_requests)
    print(f"\nspans received from the traced coordinator: {sink.spans}")
    for extra, pairs in costs.items():
        _report_cost(extra, pairs)
    _report_hook_cpu(costs["metrics"], await _hook_cpu_us())


async def _cost_pairs(args: argparse.Namespace, address: str, cports: dict[str, int],
                      pids: dict[str, int], on: str) -> list[tuple[Round, Round]]:
    """(batch, ``on``) rounds of sagas, alternating which goes first."""
    pairs = []
    for n in range(args.cost_rounds):
        order = ("batch", on) if n % 2 == 0 else (on, "batch")
        rounds = {m: await _round(args, address, cports[m], pids[m],
                                  f"r{args.run}-{on.replace('+', '-')}-{n}") for m in order}
        pairs.append((rounds["batch"], rounds[on]))
    return pairs


async def _round(args: argparse.Namespace, address: str, port: int, pid: int, tag: str) -> Round:
    async with CoordinatorClient(f"127.0.0.1:{port}", timeout_s=60) as client:
        async def saga(i: int) -> None:
            await client.start_saga(_saga(address, f"{tag}-{i}"), wait=True)

        cpu = process_seconds(pid)
        rate, _, _ = await closed_loop(range(args.sagas), args.concurrency, saga)
        return Round(rate, (process_seconds(pid) - cpu) * 1000 / args.sagas)


async def _measured(args: argparse.Namespace, etcd: DevEtcd, meter: CpuMeter,
                    one: Callable[[int], Awaitable[None]]) -> Figures:
    requests, sent = etcd_requests(etcd), etcd_bytes(etcd)
    meter.start()
    rate, lat, _ = await closed_loop(range(args.sagas), args.concurrency, one)
    cpu = meter.ms_per(args.sagas)
    return Figures(rate, lat, (etcd_requests(etcd) - requests) / args.sagas,
                   (etcd_bytes(etcd) - sent) / args.sagas, cpu)


def _saga(address: str, gid: str) -> Saga:
    return Saga([Step("a", address, "a.do", "a.undo"), Step("b", address, "b.do", "b.undo")],
                gid=gid)


def _two_phase(address: str, gid: str) -> TwoPhase:
    return TwoPhase([Step(n, address, f"{n}.do") for n in ("a", "b")], gid=gid)


def _report(args: argparse.Namespace, figures: dict[str, Figures],
            half: dict[str, list[float]], half_requests: dict[str, float]) -> None:
    ms = 1000.0
    base = figures["baseline"].rate
    print(f"transactions={args.sagas} concurrency={args.concurrency} (2 branches, no-op participant)")
    print(f"{'mode':<20}{'per s':>8}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'etcd req/tx':>13}{'etcd B/tx':>11}")
    for mode, f in figures.items():
        print(f"{mode:<20}{f.rate:8.0f}{f.rate / base:8.1%}{pct(f.latencies, 50) * ms:9.2f}"
              f"{pct(f.latencies, 99) * ms:9.2f}{f.etcd_requests:13.2f}{f.etcd_bytes:11.0f}")
    for transport, latencies in half.items():
        rate = figures[f"saga {transport}"].rate / 2
        print(f"saga {transport} at half its max rate ({rate:.0f}/s): p50 "
              f"{pct(latencies, 50) * ms:.2f} ms  p99 {pct(latencies, 99) * ms:.2f} ms  "
              f"etcd req/tx {half_requests[transport]:.2f}")
    names = ["load generator", "coordinator", "participant", "etcd", "machine"]
    print("\nCPU ms per transaction (machine = every process, both cores)")
    print(format_row("", {}, []) + "".join(f"{n[:9]:>10}" for n in names))
    for mode, f in figures.items():
        print(format_row(mode, f.cpu, names))


def _saga_hooks(m: Metrics) -> None:
    """The metrics calls one two-branch saga makes (etcd: a create and a write, at most)."""
    m.tx_started(Protocol.SAGA)
    m.tx_driven(Protocol.SAGA, 1)
    m.etcd_request("create", "ok", 0.001)
    m.branch_call("execute", "ok", 0.001)
    m.branch_call("execute", "ok", 0.001)
    m.etcd_request("write", "ok", 0.001)
    m.tx_driven(Protocol.SAGA, -1)
    m.tx_finished(Protocol.SAGA, TxState.COMMITTED, 0.01)


class _Context:
    def code(self) -> None:
        return None


async def _hook_cpu_us(n: int = 20000) -> float:
    """CPU microseconds the metrics add to one saga, measured in this process: the hooks
    (on minus off) and the interceptor around the StartSaga call (wrapped minus bare). A
    figure that the other load on a shared machine does not blur."""
    async def bare(request: object, context: object) -> None:
        return None

    wrapped = MetricsInterceptor(PrometheusMetrics(CollectorRegistry()))._unary("/m", bare)
    context = _Context()
    cost = {}
    modes = (("off", Metrics(), bare), ("on", PrometheusMetrics(CollectorRegistry()), wrapped))
    for name, hooks, call in modes:
        start = time.process_time()
        for _ in range(n):
            _saga_hooks(hooks)
            await call(None, context)
        cost[name] = (time.process_time() - start) / n * 1e6
    return cost["on"] - cost["off"]


def _report_cost(extra: str, pairs: list[tuple[Round, Round]]) -> None:
    if not pairs:
        return
    print(f"\n{extra} on vs off, sagas through batch coordinators, alternating rounds")
    print_pairs(pairs, "saga", "coordinator")


def _report_hook_cpu(pairs: list[tuple[Round, Round]], hook_us: float) -> None:
    if not pairs:
        return
    off_ms = statistics.median(off.cpu_ms for off, _ in pairs)
    print(f"metrics hooks + interceptor, measured in process: {hook_us:.1f} us CPU per saga = "
          f"{hook_us / 1000 / off_ms:.1%} of the coordinator's CPU per saga without metrics")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sagas", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--half-seconds", type=float, default=5.0)
    parser.add_argument("--run", default=str(int(time.time())))
    parser.add_argument("--cost-rounds", type=int, default=6,
                        help="(off, on) pairs of --sagas sagas each for the cost of metrics, "
                             "and as many for traces, all and sampled")
    run(parser.parse_args())
