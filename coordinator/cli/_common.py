"""Shared CLI helpers."""

from __future__ import annotations

import logging
import os
from pathlib import Path


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
