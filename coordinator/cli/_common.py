"""Shared CLI helpers."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..rpc._tls import TlsFiles
from ..telemetry._logging import FORMATS


def env_default(name: str, fallback: str) -> str:
    return os.environ.get(name, fallback)


def env_name(flag: str, prefix: str = "TXC_") -> str:
    """The variable that stands for ``flag``: ``--max-active`` is ``TXC_MAX_ACTIVE``."""
    return prefix + flag.removeprefix("--").replace("-", "_").upper()


def defaults_from_env(parser: argparse.ArgumentParser, prefix: str = "TXC_") -> None:
    """Let every ``--flag`` of ``parser`` be set by its variable (``env_name``), so that a
    container is configured by environment alone; a flag on the command line still wins.
    Switches take 1/true/yes/on; repeatable flags a comma-separated list (flags given
    on the command line add to it)."""
    for action in parser._actions:
        flags = [o for o in action.option_strings if o.startswith("--")]
        if not flags or action.dest == "help":
            continue
        raw = os.environ.get(env_name(flags[0], prefix))
        if raw is None:
            continue
        if action.choices is not None and raw not in action.choices:
            raise SystemExit(f"{parser.prog}: {env_name(flags[0], prefix)}={raw!r}: choose from "
                             f"{', '.join(map(str, action.choices))}")
        action.default = _env_value(action, raw)


def _env_value(action: argparse.Action, raw: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(action, argparse._AppendAction):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw  # argparse applies the flag's type to a string default


def add_log_flags(parser: argparse.ArgumentParser, level: str) -> None:
    """``--log-level`` and ``--log-format``, for a command that calls ``setup_logging``."""
    parser.add_argument("--log-level", default=level,
                        help="debug, info, warning or error (default %(default)s; env TXC_LOG_LEVEL)")
    parser.add_argument("--log-format", choices=FORMATS, default=FORMATS[0],
                        help="text (default): one readable line per record; json: one JSON "
                             "object per line, with gid, branch, op, attempt, outcome and "
                             "trace ids when known (env TXC_LOG_FORMAT)")


def read_optional(command: str, flag: str, path: str) -> bytes | None:
    """The file a flag names (None when not given); a clean exit naming the flag if unreadable."""
    try:
        return Path(path).read_bytes() if path else None
    except OSError as exc:
        raise SystemExit(f"{command}: {flag}: {exc}") from None


Parser = argparse.ArgumentParser


def add_tls_client_flags(p: Parser, peer: str, default: Callable[[str], object] = lambda v: v) -> None:
    """``--tls-ca``, ``--tls-cert``, ``--tls-key``: how a command reaches ``peer`` over TLS
    (mutual TLS with the last two). ``default`` wraps each default (``txc tx`` suppresses
    them on its sub-commands: see :func:`add_shared_flags`)."""
    p.add_argument("--tls-ca", default=default(env_default("TXC_TLS_CA", "")), metavar="FILE",
                   help=f"PEM CA certificates: talk TLS to {peer} (env TXC_TLS_CA)")
    p.add_argument("--tls-cert", default=default(env_default("TXC_TLS_CERT", "")), metavar="FILE",
                   help=f"PEM client certificate, for {peer} requiring one (with --tls-key; "
                        "env TXC_TLS_CERT)")
    p.add_argument("--tls-key", default=default(env_default("TXC_TLS_KEY", "")), metavar="FILE",
                   help="PEM private key of --tls-cert (env TXC_TLS_KEY)")


def tls_client(command: str, args: argparse.Namespace) -> tuple[bytes | None, TlsFiles | None]:
    """What :func:`add_tls_client_flags` asked for: the CAs and the client identity (None
    when not given); a clean exit naming the flag when they do not go together."""
    ca = read_optional(command, "--tls-ca", args.tls_ca)
    if not args.tls_cert and not args.tls_key:
        return ca, None
    if not (args.tls_cert and args.tls_key and ca):
        raise SystemExit(f"{command}: --tls-cert and --tls-key go together, with --tls-ca")
    cert = read_optional(command, "--tls-cert", args.tls_cert)
    key = read_optional(command, "--tls-key", args.tls_key)
    assert cert is not None and key is not None
    return ca, TlsFiles(cert, key)


def add_shared_flags(cmds: argparse._SubParsersAction[Parser],
                     flags: Callable[[Parser], None]) -> Callable[..., Parser]:
    """A ``add_parser`` for ``cmds`` whose every command also takes ``flags`` (declared with
    ``default=argparse.SUPPRESS`` there, so that a flag given before the command name is
    kept unless repeated after it: ``txc tx --coordinator X show G`` and ``txc tx show G
    --coordinator X`` mean the same)."""
    def command(name: str, **kwargs: Any) -> Parser:
        parser = cmds.add_parser(name, **kwargs)
        flags(parser)
        return parser
    return command
