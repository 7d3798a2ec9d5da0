"""``txc serve``: run a coordinator."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

from ..domain.validation import Limits
from ..engine import EngineOptions, OperationsCheck
from ..log import EtcdOptions
from ..server import CoordinatorServer, DevEtcd, Operators, ServerOptions, TlsFiles
from ..server._options import ParticipantTransport
from ..server._workers import check_workers, serve_workers
from ..telemetry._logging import setup_logging
from ..telemetry._tracing_env import TracingConfigError, tracer_provider_from_env
from ._common import add_log_flags, defaults_from_env, env_default, read_optional

log = logging.getLogger("txcoord.cli")


# Flags named otherwise than the option they set (the rest: --field-name for field_name).
_FLAGS = {"lease_ttl_s": "--lease-ttl", "retention_s": "--retention", "grace_s": "--grace",
          "allow_participants": "--allow-participant", "max_active": "--max-active",
          "endpoints": "--etcd", "ttl_s": "--operations-ttl",
          "hold_resume_per_s": "--hold-resume-rate"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server, etcd, engine, limits = ServerOptions(), EtcdOptions(), EngineOptions(), Limits()
    p = sub.add_parser("serve", help="run a coordinator (gRPC)",
                       epilog="Every flag may be given by environment instead: --flag-name as "
                              "TXC_FLAG_NAME (switches: 1; repeatable flags: comma-separated). "
                              "Traces (with txcoord[otel] installed): the standard OTEL_* "
                              "variables, e.g. OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:4317.")
    p.add_argument("--listen", default=env_default("TXC_LISTEN", server.listen),
                   help="HOST:PORT to serve on (env TXC_LISTEN)")
    p.add_argument("--etcd", default=env_default("TXC_ETCD", ""),
                   help="etcd endpoints HOST:PORT[,HOST:PORT...] (env TXC_ETCD)")
    p.add_argument("--dev", action="store_true",
                   help="start a private etcd in a temporary folder when --etcd is not given")
    p.add_argument("--prefix", default=etcd.prefix, help="etcd key prefix (default %(default)s)")
    p.add_argument("--lease-ttl", type=int, default=etcd.lease_ttl_s,
                   help="seconds before another coordinator takes over a dead one's work "
                        "(default %(default)s)")
    p.add_argument("--retention", type=float, default=etcd.retention_s / 3600,
                   help="hours finished transactions stay queryable (default %(default)g)")
    p.add_argument("--allow-participant", action="append", default=[], metavar="PATTERN",
                   help="allowed participant address (host:port, host:*, *.domain:port); "
                        "repeatable; none = any")
    p.add_argument("--max-active", type=int, default=limits.max_active,
                   help="transactions this coordinator drives at once; past it, starts are "
                        "refused with RESOURCE_EXHAUSTED (default %(default)s)")
    p.add_argument("--max-calls-per-participant", type=int,
                   default=engine.max_calls_per_participant,
                   help="calls in flight to one participant; more wait, phase 2 and "
                        "compensations first (default %(default)s)")
    p.add_argument("--hold-resume-rate", type=float, default=engine.hold_resume_per_s,
                   metavar="PER_S", help="transactions resumed per second when a participant "
                   "hold is released (default %(default)s)")
    p.add_argument("--operator-tokens", default=env_default("TXC_OPERATOR_TOKENS", ""),
                   metavar="FILE", help="file of 'NAME TOKEN [read|act|read,act]' lines: replay/"
                   "skip/abort (and protected reads) then need 'authorization: Bearer TOKEN' "
                   "(env TXC_OPERATOR_TOKENS)")
    p.add_argument("--operator-certs", default=env_default("TXC_OPERATOR_CERTS", ""),
                   metavar="FILE", help="file of 'NAME COMMON_NAME [rights]' lines: a client "
                   "certificate with that common name acts as that operator (needs "
                   "--tls-client-ca; env TXC_OPERATOR_CERTS)")
    p.add_argument("--protect-reads", action="store_true",
                   default=env_default("TXC_PROTECT_READS", "") == "1",
                   help="Get/List/Watch need an operator with the read right (token or "
                        "certificate; env TXC_PROTECT_READS=1)")
    p.add_argument("--tls-cert", default=env_default("TXC_TLS_CERT", ""), metavar="FILE",
                   help="PEM certificate chain: serve TLS (with --tls-key; env TXC_TLS_CERT)")
    p.add_argument("--tls-key", default=env_default("TXC_TLS_KEY", ""), metavar="FILE",
                   help="PEM private key of --tls-cert (env TXC_TLS_KEY)")
    p.add_argument("--tls-client-ca", default=env_default("TXC_TLS_CLIENT_CA", ""), metavar="FILE",
                   help="PEM CAs: require client certificates that chain to them (mutual TLS; "
                        "env TXC_TLS_CLIENT_CA)")
    p.add_argument("--participant-tls-ca", default=env_default("TXC_PARTICIPANT_TLS_CA", ""),
                   metavar="FILE", help="PEM CAs: call participants over TLS, checked against "
                   "them (env TXC_PARTICIPANT_TLS_CA)")
    p.add_argument("--participant-tls-cert", default=env_default("TXC_PARTICIPANT_TLS_CERT", ""),
                   metavar="FILE", help="PEM client certificate presented to participants "
                   "(with --participant-tls-key; env TXC_PARTICIPANT_TLS_CERT)")
    p.add_argument("--participant-tls-key", default=env_default("TXC_PARTICIPANT_TLS_KEY", ""),
                   metavar="FILE", help="PEM private key of --participant-tls-cert "
                   "(env TXC_PARTICIPANT_TLS_KEY)")
    p.add_argument("--participant-transport", choices=get_args(ParticipantTransport),
                   default=env_default("TXC_PARTICIPANT_TRANSPORT", server.participant_transport),
                   help="batch: many calls per message on the Participant Batch stream, unary "
                        "for participants without it (default); unary: one call per request "
                        "(env TXC_PARTICIPANT_TRANSPORT)")
    p.add_argument("--operations-ttl", type=float, default=OperationsCheck().ttl_s,
                   metavar="SECONDS", help="how long a participant's list of operations (its "
                   "optional Operations call, asked before a start) is used; 0 turns the check "
                   "of starts against it off (default %(default)g; env TXC_OPERATIONS_TTL)")
    p.add_argument("--metrics-listen", default=env_default("TXC_METRICS_LISTEN", ""),
                   metavar="HOST:PORT", help="serve Prometheus metrics on http://HOST:PORT/metrics "
                   "(off by default; env TXC_METRICS_LISTEN)")
    p.add_argument("--grace", type=float, default=server.grace_s,
                   help="seconds to let calls in flight finish on SIGTERM (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="coordinator processes sharing the --listen port (SO_REUSEPORT), each a "
                        "member with its own etcd lease; worker i serves metrics on the "
                        "--metrics-listen port + i (default 1; env TXC_WORKERS)")
    add_log_flags(p, "info")
    p.set_defaults(func=run)
    defaults_from_env(p)


def options_from(args: argparse.Namespace, endpoints: list[str]) -> ServerOptions:
    """The options the flags ask for; a flag the options refuse exits naming the flag."""
    try:
        return _options(args, endpoints)
    except ValueError as exc:
        field, _, why = str(exc).partition(": ")
        flag = _FLAGS.get(field, "--" + field.removesuffix("_s").replace("_", "-"))
        raise SystemExit(f"txc serve: {flag}: {why or exc}") from None


def _options(args: argparse.Namespace, endpoints: list[str]) -> ServerOptions:
    etcd = EtcdOptions(endpoints=tuple(endpoints), prefix=args.prefix,
                       lease_ttl_s=args.lease_ttl, retention_s=int(args.retention * 3600))
    base = ServerOptions()
    operators = _operators(args)
    return replace(base, listen=args.listen, etcd=etcd, grace_s=args.grace, operators=operators,
                   tls=_tls(args, "--tls-cert", "--tls-key", args.tls_client_ca),
                   participant_tls_ca=read_optional(
                       "txc serve", "--participant-tls-ca", args.participant_tls_ca),
                   participant_tls_identity=_tls(args, "--participant-tls-cert",
                                                 "--participant-tls-key"),
                   protect_reads=args.protect_reads,
                   allow_participants=tuple(args.allow_participant),
                   participant_transport=args.participant_transport,
                   metrics_listen=args.metrics_listen,
                   limits=replace(base.limits, max_active=args.max_active),
                   operations=replace(base.operations, enabled=args.operations_ttl != 0,
                                      ttl_s=args.operations_ttl or base.operations.ttl_s),
                   engine=replace(base.engine,
                                  max_calls_per_participant=args.max_calls_per_participant,
                                  hold_resume_per_s=args.hold_resume_rate))


def _operators(args: argparse.Namespace) -> Operators:
    operators = Operators()
    try:
        if args.operator_tokens:
            operators = Operators.from_file(args.operator_tokens)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"txc serve: --operator-tokens: {exc}") from None
    if not args.operator_certs:
        return operators
    if not args.tls_client_ca:
        raise SystemExit("txc serve: --operator-certs needs --tls-client-ca (client certificates)")
    try:
        return operators.with_certificates(Path(args.operator_certs).read_text(),
                                           args.operator_certs)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"txc serve: --operator-certs: {exc}") from None


def _tls(args: argparse.Namespace, cert_flag: str, key_flag: str,
         client_ca: str = "") -> TlsFiles | None:
    """The certificate and key two flags name (None when neither is given)."""
    cert, key = (getattr(args, f.removeprefix("--").replace("-", "_")) for f in (cert_flag, key_flag))
    if not cert and not key:
        if client_ca:
            raise SystemExit(f"txc serve: --tls-client-ca needs {cert_flag} and {key_flag}")
        return None
    if not (cert and key):
        raise SystemExit(f"txc serve: {cert_flag} and {key_flag} go together")
    try:
        return TlsFiles.read(cert, key, client_ca or None)
    except OSError as exc:
        raise SystemExit(f"txc serve: TLS files: {exc}") from None


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    try:
        provider = tracer_provider_from_env()  # OTEL_* variables; None: no tracing
    except TracingConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        return _serve(args, provider)
    finally:
        if provider is not None:
            provider.shutdown()  # exports the spans still queued


def _check_workers(args: argparse.Namespace) -> None:
    try:
        check_workers(args.workers, args.listen, args.metrics_listen)
    except ValueError as exc:
        raise SystemExit(f"txc serve: {exc}") from None


def _serve(args: argparse.Namespace, tracer_provider: Any) -> int:
    _check_workers(args)
    endpoints = [e.strip() for e in args.etcd.split(",") if e.strip()]
    dev: DevEtcd | None = None
    if not endpoints:
        if not args.dev:
            log.error("no etcd: pass --etcd HOST:PORT (or env TXC_ETCD), or --dev for a private one")
            return 2
        dev = DevEtcd().start()
        endpoints = [dev.endpoint]
        log.info("dev mode: private etcd at %s (data in %s)", dev.endpoint, dev.data_dir)
    try:  # options_from exits on a bad flag: the private etcd is stopped then too
        options = replace(options_from(args, endpoints), tracer_provider=tracer_provider)
        if args.workers > 1:  # each worker is a coordinator; they share the private etcd
            return serve_workers(options, args.workers, args.log_level, args.log_format)
        asyncio.run(CoordinatorServer(options).serve())
    finally:
        if dev is not None:
            dev.cleanup()
    return 0
