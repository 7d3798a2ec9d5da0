"""``txc console``: the web console (transactions, timelines, operator actions, chaos runs).

Its packages (Starlette, Jinja2, uvicorn) are the extra ``console``; without them the
command says how to install them instead of failing on an import.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import env_default, read_optional

if TYPE_CHECKING:  # the console's packages are an extra: imported by run() only
    from ..console import Settings

INSTALL = "txc console needs its extra: pip install 'txcoord[console]'"
DEFAULT_COORDINATOR = "127.0.0.1:7070"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("console", help="web console: transactions, timelines, actions, chaos runs")
    p.add_argument("--coordinator", default=env_default("TXC_COORDINATOR", ""),
                   help=f"HOST:PORT of any coordinator (env TXC_COORDINATOR; default "
                   f"{DEFAULT_COORDINATOR}, none when only --runs is given)")
    p.add_argument("--listen", default=env_default("TXC_CONSOLE_LISTEN", "127.0.0.1:8080"),
                   help="HOST:PORT to serve the console on (env TXC_CONSOLE_LISTEN)")
    p.add_argument("--allow-actions", action="store_true",
                   help="offer replay, skip and abort (read-only without it)")
    p.add_argument("--runs", type=Path, default=env_default("TXC_CONSOLE_RUNS", "") or None,
                   metavar="DIR", help="chaos runs to show: folders under DIR holding summary.json "
                   "(env TXC_CONSOLE_RUNS)")
    p.add_argument("--tls-ca", default=env_default("TXC_TLS_CA", ""), metavar="FILE",
                   help="PEM CAs: talk TLS to the coordinator (env TXC_TLS_CA)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per coordinator request")
    p.add_argument("--tls-cert", default=env_default("TXC_CONSOLE_TLS_CERT", ""), metavar="FILE",
                   help="PEM certificate chain: serve the console over HTTPS (env TXC_CONSOLE_TLS_CERT)")
    p.add_argument("--tls-key", default=env_default("TXC_CONSOLE_TLS_KEY", ""), metavar="FILE",
                   help="PEM key of --tls-cert (env TXC_CONSOLE_TLS_KEY)")
    p.add_argument("--insecure-listen", action="store_true",
                   help="serve plain HTTP on a non-loopback address anyway (tokens cross the "
                   "network in clear)")
    p.add_argument("--trace-url", default=env_default("TXC_CONSOLE_TRACE_URL", ""),
                   metavar="URL", help="a trace viewer's page with {trace_id} in it, e.g. "
                   "http://localhost:16686/trace/{trace_id}: traced transactions link to their "
                   "trace (env TXC_CONSOLE_TRACE_URL)")
    p.add_argument("--log-level", default=env_default("TXC_LOG_LEVEL", "info"))
    p.set_defaults(func=run)


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"txc console: --listen {listen!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def listen_refusal(host: str, tls: bool, insecure: bool) -> str | None:
    """Why the console must not listen on ``host``, or None."""
    if loopback(host) or tls or insecure:
        return None
    return (f"txc console: refusing to serve plain HTTP on {host} (operator tokens and "
            "actions would cross the network in clear): give --tls-cert and --tls-key, listen "
            "on 127.0.0.1, or pass --insecure-listen")


def coordinator_of(args: argparse.Namespace) -> str | None:
    """The coordinator to read: the one given, else the default one, unless the console was
    given chaos runs only (then it opens on the runs and has no transaction pages)."""
    if args.coordinator:
        return str(args.coordinator)
    return None if args.runs is not None else DEFAULT_COORDINATOR


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..console import Settings, create_app
    except ImportError as exc:
        print(f"{INSTALL} ({exc.name} is missing)", file=sys.stderr)
        return 2
    coordinator = coordinator_of(args)
    if coordinator is None and args.allow_actions:
        raise SystemExit("txc console: --allow-actions needs --coordinator (given only --runs, "
                         "the console shows chaos runs and no transactions)")
    host, port = split_listen(args.listen)
    tls = bool(args.tls_cert or args.tls_key)
    if tls and not (args.tls_cert and args.tls_key):
        raise SystemExit("txc console: --tls-cert and --tls-key go together")
    refused = listen_refusal(host, tls, args.insecure_listen)
    if refused:
        print(refused, file=sys.stderr)
        return 2
    if args.runs is not None and not args.runs.is_dir():
        raise SystemExit(f"txc console: --runs {args.runs}: not a folder")
    if args.trace_url and not (args.trace_url.startswith(("http://", "https://"))
                               and "{trace_id}" in args.trace_url):
        raise SystemExit("txc console: --trace-url must be an http(s) URL with {trace_id} in it")
    settings = Settings(coordinator=coordinator, allow_actions=args.allow_actions,
                        runs=args.runs, tls_ca=read_optional("txc console", "--tls-ca", args.tls_ca),
                        timeout_s=args.timeout, secure_cookie=tls, trace_url=args.trace_url)
    print(f"txc console: {'https' if tls else 'http'}://{args.listen}/ {_showing(settings)}",
          file=sys.stderr)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=args.log_level.lower(),
                ssl_certfile=args.tls_cert or None, ssl_keyfile=args.tls_key or None)
    return 0


def _showing(settings: Settings) -> str:
    if settings.coordinator is None:
        return (f"showing the chaos runs under {settings.runs} (no coordinator: --coordinator "
                "HOST:PORT adds the transactions)")
    return (f"reading {settings.coordinator}"
            f"{' (actions on)' if settings.allow_actions else ' (read-only)'}")
