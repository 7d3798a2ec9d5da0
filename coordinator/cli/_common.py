"""Shared CLI helpers."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def env_default(name: str, fallback: str) -> str:
    return os.environ.get(name, fallback)


def read_optional(command: str, flag: str, path: str) -> bytes | None:
    """The file a flag names (None when not given); a clean exit naming the flag if unreadable."""
    try:
        return Path(path).read_bytes() if path else None
    except OSError as exc:
        raise SystemExit(f"{command}: {flag}: {exc}") from None


Parser = argparse.ArgumentParser


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
