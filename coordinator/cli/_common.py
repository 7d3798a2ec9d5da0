"""Shared CLI helpers."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def env_default(name: str, fallback: str) -> str:
    return os.environ.get(name, fallback)
