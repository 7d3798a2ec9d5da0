"""One chaos run: for each mode, the same seeded transfers under the same fault timeline,
then heal, converge, check, and write the run's folder."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator import TERMINAL_STATES, CoordinatorClient, ListFilter
from coordinator.client._vocabulary import is_unreachable
from coordinator.participant import create_engine

from . import checker, faultstats, isolation, netns, report, serving
from .client import CoordinatedClient, Mode, Outcome, UncoordinatedClient, issue, transfers
from .databases import Databases, drop_databases, ensure_databases, release_in_doubt, xid_text
from .etcd_cluster import MEMBERS
from .nemesis import DEFAULT_SCHEDULE, AppliedWindow, FaultEvent, Nemesis, parse, timeline
from .netns import PacketNet
from .serving import Serving
from .topology import LEASE_TTL_S, LINKS, PROCESSES, SERVICES, Topology, max_active_for
from .workload.schema import accounts, ledger, orders, reset_accounts, reset_orders

COORDS = ("c1", "c2")

log = logging.getLogger("txcoord.chaos")


@dataclass(frozen=True)
class RunConfig:
    out: Path
    modes: tuple[str, ...] = ("none", "saga", "2pc")
    duration_s: float = 60.0
    rate: float = 20.0
    seed: int = 1
    faults: str = DEFAULT_SCHEDULE
    accounts: int = 50
    initial_balance: int = 100_000  # enough that most transfers can succeed all run long
    max_amount: int = 150
    converge_s: float = 60.0
    timeout_s: float = 8.0
    packet: bool | None = None  # packet-level faults: None = when this machine allows them
    dbs: Databases = field(default_factory=Databases)  # the servers; each run names its own
    keep_databases: bool = False  # leave the run's databases for inspection


@dataclass
class ModeResult:
    outcomes: list[Outcome]
    report: checker.Report
    windows: list[tuple[float, float]]
    ttc: list[float]
    by_fault: dict[str, faultstats.FaultRow] = field(default_factory=dict)
    serving: Serving | None = None  # served / refused / failed by the fault / unknown


class RunFailed(RuntimeError):
    """The run ended early; ``stage`` says where. summary.json holds the same."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"failed while {stage}: {_describe(cause)}")
        self.stage = stage


class Runner:
    def __init__(self, config: RunConfig, progress: Callable[[str], None] = print) -> None:
        self.config = config
        self.say = progress
        self.stage = "starting"
        self.packet_skipped: str | None = None
        self.lease: isolation.Lease | None = None
        self.dbs = config.dbs
        self._topology: Topology | None = None
        self._skipped_events: dict[str, int] = {}
        self._pg: AsyncEngine | None = None
        self._maria: AsyncEngine | None = None
        self._databases_made = False  # both created: a failed drop then leaves them behind

    @property
    def topology(self) -> Topology:
        assert self._topology is not None, "the topology starts inside run()"
        return self._topology

    async def run(self) -> dict[str, ModeResult]:
        """Every mode; on any early end (an error, Ctrl-C, SIGTERM) summary.json says why,
        the logs stay in the output folder, and :class:`RunFailed` (or the interruption)
        is raised."""
        results: dict[str, ModeResult] = {}
        handler = self._log_to_file()
        try:
            await self._run(results)
        except (Exception, asyncio.CancelledError, KeyboardInterrupt) as exc:
            self._write_failure(exc, results)
            if isinstance(exc, Exception):
                raise RunFailed(self.stage, exc) from exc
            raise
        finally:
            if handler is not None:
                _detach(handler)
        return results

    async def _run(self, results: dict[str, ModeResult]) -> None:
        cfg = self.config
        self._at("checking the schedule")
        parse(cfg.faults, links=LINKS, processes=PROCESSES)
        self._at("claiming a slot and cleaning up after dead runs")
        self.lease = await isolation.claim(cfg.dbs, out=cfg.out, keep_databases=cfg.keep_databases)
        try:
            await self._run_claimed(results)
        finally:
            await self._teardown()

    async def _run_claimed(self, results: dict[str, ModeResult]) -> None:
        cfg, lease = self.config, self.lease
        assert lease is not None
        ident = lease.identity
        self.dbs = replace(cfg.dbs, name=ident.database)
        etcd_dir = isolation.state_dir() / f"etcd-{ident.run_id}"
        lease.update(databases=[self.dbs.name], etcd_dir=str(etcd_dir))  # listed before made
        self._at(f"creating the databases {self.dbs.name}")
        await ensure_databases(self.dbs)
        self._databases_made = True
        # The checker's reads are not retried: test each pooled connection (links are reset).
        self._pg = create_engine(self.dbs.pg(), pool_pre_ping=True)
        self._maria = create_engine(self.dbs.maria(), pool_pre_ping=True)
        self._at("starting etcd, the coordinators and the services")
        self._topology = Topology(cfg.out, ident, etcd_dir, self.dbs, self._packet_net(ident.slot),
                                  max_active=max_active_for(cfg.rate, cfg.timeout_s))
        await self.topology.start(two_phase="2pc" in cfg.modes, packet_required=bool(cfg.packet))
        self.packet_skipped = self.packet_skipped or self.topology.packet_error
        self.say(f"run {ident.run_id}: databases {self.dbs.name}, slot {ident.slot}, "
                 f"output {cfg.out}")
        for mode in cfg.modes:
            self._at(f"running {mode}")
            self.say(f"[{mode}] {int(cfg.rate * cfg.duration_s)} transfers "
                     f"over {cfg.duration_s:.0f}s with faults")
            results[mode] = await self._run_mode(mode)  # type: ignore[arg-type]
            self.say(f"[{mode}] {_one_line(results[mode])}")
        self._at("writing the report")
        self._write(results)

    def _packet_net(self, slot: int) -> PacketNet | None:
        if self.config.packet is False:
            self.packet_skipped = "turned off"
            return None
        self.packet_skipped = netns.unavailable()
        if self.config.packet and self.packet_skipped:
            raise RuntimeError(f"packet-level faults asked for, but {self.packet_skipped}")
        return PacketNet(SERVICES, slot) if self.packet_skipped is None else None

    async def _teardown(self) -> None:
        """Stop what the run started and drop its databases; what fails stays listed in the
        run's record, for the next run to clean."""
        log.info("cleaning up (stage was: %s)", self.stage)  # the stage stays: it names a failure
        clean = True
        try:
            if self._topology is not None:
                await self.topology.stop()
                log.info("stopped the processes, proxies and namespaces")
            for engine in (self._pg, self._maria):
                if engine is not None:
                    await engine.dispose()
            if self.lease is not None:
                isolation.kill_tagged(self.lease.identity.run_id)  # strays, e.g. a late restart
            if self.lease is not None and not self.config.keep_databases:
                await drop_databases(self.dbs)
            log.info("cleaned up")
        except Exception as exc:
            # A server that could not be reached at start-up holds nothing of this run:
            # only a drop that failed after both databases were made leaves work behind.
            clean = not self._databases_made
            log.warning("cleaning up failed%s: %s", "" if clean else " (the next run retries)",
                        _describe(exc))
        if self.lease is not None:
            self.lease.release(forget=clean)

    def _at(self, stage: str) -> None:
        self.stage = stage
        log.info("stage: %s", stage)

    async def _run_mode(self, mode: Mode) -> ModeResult:
        cfg = self.config
        assert self._pg is not None and self._maria is not None
        balances = {f"acct-{i}": cfg.initial_balance for i in range(cfg.accounts)}
        await release_in_doubt(self.dbs)
        await reset_accounts(self._pg, balances)
        await reset_orders(self._maria)
        plan = transfers(cfg.seed, int(cfg.rate * cfg.duration_s), self._prefix(mode),
                         cfg.accounts, cfg.max_amount, overdraft=cfg.initial_balance * 10)
        events = self._feasible(timeline(cfg.faults, links=LINKS, processes=PROCESSES,
                                         duration_s=cfg.duration_s, seed=cfg.seed))
        nemesis = Nemesis(events, self._apply, self._revert, clock=time.time)
        initial_total = sum(balances.values())
        observations: list[checker.Observation] = []
        client, closing = await self._client(mode)
        watcher = asyncio.create_task(self._observe(initial_total, observations))
        chaos = asyncio.create_task(nemesis.run())
        started = time.time()
        outcomes, stragglers = await issue(client, plan, cfg.rate, mode, cfg.timeout_s + 2)
        ended = time.time()
        await nemesis.stop()
        await asyncio.gather(chaos, return_exceptions=True)
        watcher.cancel()
        windows = nemesis.fault_windows()
        self.topology.heal()  # also resets connections held by partitions: stragglers end
        if stragglers:
            await asyncio.wait(stragglers, timeout=30)
        await closing()
        await self.topology.wait_ready()
        unsettled, consistent_at = await self._converge(mode, plan)
        snapshot = await self._snapshot(unsettled)
        run = checker.Run(mode=mode, transfers=[_as_checked(o) for o in outcomes],
                          snapshot=snapshot, initial_total=initial_total,
                          observations=observations, consistent_at=consistent_at or None,
                          fault_windows=windows, started_at=started, ended_at=ended)
        result = checker.check(run)
        settled = {o.transfer.transfer_id: max(0.0, consistent_at[o.transfer.transfer_id] - o.ended_at)
                   for o in outcomes if o.transfer.transfer_id in consistent_at}
        report.write_events(self.config.out, outcomes, [w.to_dict() for w in nemesis.windows],
                            mode=mode, reads=observations, ttc=settled)
        ttc = list(settled.values())
        by_fault = faultstats.by_kind(run.transfers, _labelled(nemesis.windows, ended), result)
        served = serving.tally((serving.Answer(o.transfer.transfer_id, o.told, o.detail)
                                for o in outcomes), serving.business_answers(plan, balances))
        return ModeResult(outcomes, result, [(a - started, b - started) for a, b in windows], ttc,
                          by_fault, served)

    def _prefix(self, mode: str) -> str:
        # The run id keeps gids, and so 2PC XIDs (server-wide on both databases), apart
        # from every other run's.
        assert self.lease is not None
        return f"{mode}-{self.config.seed}-{self.lease.identity.run_id}-"

    async def _client(self, mode: Mode) -> tuple[UncoordinatedClient | CoordinatedClient,
                                                Callable[[], Any]]:
        topo = self.topology
        if mode == "none":
            pg_host, pg_port = topo.link("accounts->pg").rsplit(":", 1)
            maria_host, maria_port = topo.link("orders->maria").rsplit(":", 1)
            # The article's code has no retries; pre-ping spares it connections a fault reset.
            pg = create_engine(self.dbs.pg(int(pg_port), pg_host), pool_pre_ping=True,
                               pool_size=20, max_overflow=20, pool_timeout=5)
            maria = create_engine(self.dbs.maria(int(maria_port), maria_host),
                                  pool_pre_ping=True, pool_size=20, max_overflow=20, pool_timeout=5)

            async def dispose() -> None:
                await pg.dispose()
                await maria.dispose()

            return UncoordinatedClient(pg, maria, self.config.timeout_s), dispose
        client = CoordinatedClient(
            [topo.link("client->c1"), topo.link("client->c2")],
            topo.link("c->accounts"), topo.link("c->orders"),
            mode, self.config.timeout_s)
        return client, client.close

    def _feasible(self, events: list[FaultEvent]) -> list[FaultEvent]:
        """Without the packet network, its faults are left out (and said so in the report)."""
        if self.topology.packet is not None:
            return events
        for event in events:
            if event.is_packet_fault:
                self._skipped_events[event.kind] = self._skipped_events.get(event.kind, 0) + 1
        return [e for e in events if not e.is_packet_fault]

    async def _apply(self, event: FaultEvent) -> None:
        if event.is_packet_fault:
            await asyncio.to_thread(self.topology.apply_packet, id(event), event.kind,
                                    event.target, event.direction,
                                    event.params.get("probability", 0.0))
        elif event.kind == "kill":
            self.topology.processes[event.target].kill()
        elif event.kind == "pause":
            self.topology.processes[event.target].pause()
        else:
            self.topology.links[event.target].set_fault(event.direction,  # type: ignore[arg-type]
                                                        event.proxy_fault())

    async def _revert(self, event: FaultEvent) -> None:
        if event.is_packet_fault:
            await asyncio.to_thread(self.topology.revert_packet, id(event))
        elif event.kind == "kill":
            self.topology.processes[event.target].start()
        elif event.kind == "pause":
            self.topology.processes[event.target].resume()
        else:
            self.topology.links[event.target].clear(event.direction,  # type: ignore[arg-type]
                                                    type(event.proxy_fault()))

    async def _observe(self, initial_total: int, into: list[checker.Observation]) -> None:
        """Reads during the run, straight from the databases: is money conserved right now?"""
        assert self._pg is not None and self._maria is not None
        while True:
            await asyncio.sleep(0.5)
            try:
                total = await _total(self._pg, self._maria)
            except Exception:
                continue
            into.append(checker.Observation(time.time(), total == initial_total,
                                            total - initial_total))

    async def _converge(self, mode: Mode, plan: Sequence[Any]) -> tuple[list[str], dict[str, float]]:
        """Wait (bounded) until the coordinator has settled every transfer of this mode."""
        if mode == "none":
            return [], {}

        clients = [CoordinatorClient("{}:{}".format(*self.topology.address(c))) for c in COORDS]
        where = ListFilter(gid_prefix=self._prefix(mode))
        deadline = time.monotonic() + self.config.converge_s
        try:
            for turn in itertools.count():
                try:
                    txs = [tx async for tx in clients[turn % len(clients)].list_all(where)]
                except grpc.aio.AioRpcError as exc:
                    # Just after healing, a coordinator may still be getting its etcd back
                    # (a new lease, a member rejoining): ask the other one, a little later.
                    if not is_unreachable(exc.code()) or time.monotonic() > deadline:
                        raise
                    self.say(f"[{mode}] converging: listing failed ({exc.code().name}); retrying")
                    await asyncio.sleep(1.0)
                    continue
                unsettled = [t.gid for t in txs if t.state not in TERMINAL_STATES]
                if not unsettled or time.monotonic() > deadline:
                    break
                self.say(f"[{mode}] converging: {len(unsettled)} transactions not settled")
                await asyncio.sleep(1.0)
        finally:
            for client in clients:
                await client.close()
        settled_at = {t.gid: t.updated_at.seconds + t.updated_at.nanos / 1e9 for t in txs
                      if t.state in TERMINAL_STATES}
        return unsettled, settled_at

    async def _snapshot(self, unsettled: list[str]) -> checker.Snapshot:
        assert self._pg is not None and self._maria is not None
        async with self._pg.connect() as conn:
            balances = {r.account: int(r.balance) for r in await conn.execute(select(accounts))}
            debits = _group(await conn.execute(select(ledger.c.transfer_id, ledger.c.amount)))
            doubt = {f"pg:{r[0]}": float(r[1]) for r in await conn.execute(text(
                "SELECT gid, extract(epoch FROM now() - prepared) FROM pg_prepared_xacts "
                "WHERE database = current_database()"))}
        async with self._maria.connect() as conn:
            placed = _group(await conn.execute(select(orders.c.transfer_id, orders.c.amount)))
            # XA RECOVER is server-wide and tells no age: this database's branches (those in
            # its txc_xa) still in doubt are counted with age 0.
            ours = {r[0] for r in await conn.execute(text("SELECT xid FROM txc_xa"))}
            doubt |= {f"maria:{xid}": 0.0 for r in await conn.execute(text("XA RECOVER"))
                      if (xid := xid_text(r[3])) in ours}
        return checker.Snapshot(balances, debits, placed, unsettled, doubt)

    def _write(self, results: dict[str, ModeResult]) -> None:
        out = self.config.out
        modes = {mode: _summary_row(r) for mode, r in results.items()}
        dirty = [m for m, r in results.items() if m != "none" and not r.report.clean]
        report.write_summary(out, {"status": "dirty" if dirty else "ok", "error": None,
                                   "run": self._run_info(), "modes": modes})
        skipped = self._skipped() + report.plots(out)
        config = {k: v for k, v in asdict(self.config).items() if k not in ("dbs", "out")}
        run = self._run_info()
        config = {"run_id": run.get("run_id"), "databases": run.get("databases"), **config}
        (out / "report.md").write_text(report.markdown(modes, config, skipped))

    def _write_failure(self, exc: BaseException, results: dict[str, ModeResult]) -> None:
        """summary.json for a run that ended early: the error, where, and what finished."""
        error = "interrupted (Ctrl-C or SIGTERM)" if not isinstance(exc, Exception) \
            else _describe(exc)
        log.error("run failed while %s: %s", self.stage, error, exc_info=isinstance(exc, Exception))
        try:
            self.config.out.mkdir(parents=True, exist_ok=True)
            report.write_summary(self.config.out, {
                "status": "failed", "error": error, "stage": self.stage, "run": self._run_info(),
                "modes": {m: _summary_row(r) for m, r in results.items()}})
        except Exception as write_error:  # the caller still prints the error itself
            log.error("could not write summary.json: %s", write_error)

    def _run_info(self) -> dict[str, Any]:
        if self.lease is None:
            return {}
        ident = self.lease.identity
        packet = self._topology.packet if self._topology is not None else None
        return {"run_id": ident.run_id, "slot": ident.slot, "databases": self.dbs.name,
                "databases_kept": self.config.keep_databases, "etcd_prefix": ident.etcd_prefix,
                "namespaces": netns.namespace_prefix(ident.slot) + "*" if packet else None,
                "ports": ident.ports, "lease_ttl_s": LEASE_TTL_S}

    def _log_to_file(self) -> logging.Handler | None:
        """The harness' own log beside the processes' logs (harness.log), kept on failure."""
        try:
            self.config.out.mkdir(parents=True, exist_ok=True)
            for old in ("events.jsonl", "summary.json"):  # a fresh run owns the folder
                (self.config.out / old).unlink(missing_ok=True)
            handler = logging.FileHandler(self.config.out / "harness.log")
        except OSError as exc:
            log.warning("no harness.log: %s", exc)
            return None
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in ("txcoord.chaos", "txcoord_chaos"):
            logging.getLogger(name).addHandler(handler)
            logging.getLogger(name).setLevel(logging.INFO)
        return handler

    def _skipped(self) -> list[str]:
        if self.packet_skipped is None:
            return []
        dropped = ", ".join(f"{n} {k}" for k, n in sorted(self._skipped_events.items()))
        return [f"packet-level faults (network namespaces, iptables DROP/REJECT, random loss): "
                f"{self.packet_skipped}" + (f"; left out of the schedule: {dropped}" if dropped else
                                            "; link faults came from the userspace proxy only")]


def _summary_row(r: ModeResult) -> dict[str, Any]:
    rep = r.report
    during = rep.phases.get("during")
    overall = [o.ended_at - o.started_at for o in r.outcomes]
    seconds = (max(o.ended_at for o in r.outcomes) - min(o.started_at for o in r.outcomes)) \
        if r.outcomes else 0.0
    return {
        "issued": rep.issued, "ok": rep.ok, "failed": rep.failed, "unknown": rep.unknown,
        "violations": len(rep.violations), "lost": len(rep.lost), "phantom": len(rep.phantom),
        "not_terminal": len(rep.not_terminal),
        "throughput": rep.ok / seconds if seconds else 0.0,
        "latency_p50_ms": (checker.percentile(overall, 50) or 0) * 1000,
        "latency_p99_ms": (checker.percentile(overall, 99) or 0) * 1000,
        "ttc_p50_ms": _ms(rep.time_to_consistency_s.p50),
        "ttc_p99_ms": _ms(rep.time_to_consistency_s.p99),
        "ttc_max_ms": _ms(rep.time_to_consistency_s.max),
        "temporary_violation_fraction": rep.temporary_violation_fraction,
        "in_doubt": rep.in_doubt_s.count,
        "during_faults_throughput": during.throughput_ok_per_s if during else None,
        "violation_list": [asdict(v) for v in rep.violations[:20]],
        "unknown_outcomes": dict(rep.unknown_outcomes),
        "by_fault": {kind: row.to_dict() for kind, row in r.by_fault.items()},
        **(r.serving.to_dict() if r.serving else {}),
        "clean": rep.clean,
        "detail": rep.to_dict(),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _one_line(result: ModeResult) -> str:
    rep, served = result.report, result.serving
    share = served.share(served.served) if served else None
    return (f"issued {rep.issued} ok {rep.ok} failed {rep.failed} unknown {rep.unknown}"
            + (f" served {share:.1%}" if share is not None else "") + " | "
            f"violations {len(rep.violations)} lost {len(rep.lost)} phantom {len(rep.phantom)} "
            f"not terminal {len(rep.not_terminal)}")


def _as_checked(o: Outcome) -> checker.Transfer:
    return checker.Transfer(o.transfer.transfer_id, o.mode, o.transfer.account, o.transfer.amount,
                            o.told, o.started_at, o.ended_at)


def _group(rows: Any) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for transfer_id, amount in rows:
        grouped[str(transfer_id)].append(int(amount))
    return dict(grouped)


async def _total(pg: AsyncEngine, maria: AsyncEngine) -> int:
    async with pg.connect() as conn:
        balance = (await conn.execute(select(func.coalesce(func.sum(accounts.c.balance), 0)))).scalar()
    async with maria.connect() as conn:
        ordered = (await conn.execute(select(func.coalesce(func.sum(orders.c.amount), 0)))).scalar()
    return int(balance or 0) + int(ordered or 0)


def _labelled(windows: Sequence[AppliedWindow], now: float) -> list[faultstats.Window]:
    def fired(e: FaultEvent) -> tuple[float, str, str, str]:
        return e.at_s, e.kind, e.direction, faultstats.role(e.target)

    together = Counter(fired(w.event) for w in windows)
    applied = [faultstats.Applied(w.event.kind, w.event.target, w.event.at_s, w.applied_at,
                                  w.reverted_at if w.reverted_at is not None else now)
               for w in windows]
    return [*(faultstats.Window(
        faultstats.kind_of(w.event.kind, w.event.target, w.event.direction, w.event.duration_s,
                           LEASE_TTL_S, together[fired(w.event)]),
        a.started_at, a.applied_at, a.reverted_at) for w, a in zip(windows, applied, strict=True)),
        *faultstats.no_coordinator(applied, COORDS, MEMBERS)]


def _describe(exc: BaseException) -> str:
    """One line (it ends the command's output): driver errors span several."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _detach(handler: logging.Handler) -> None:
    for name in ("txcoord.chaos", "txcoord_chaos"):
        logging.getLogger(name).removeHandler(handler)
    handler.close()
