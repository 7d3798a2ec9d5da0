"""The ``txc`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import _chaos, _console, _demo, _participant, _serve, _tx


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="txc", description="txcoord: sagas and 2PC on etcd")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve.add_parser(sub)
    _demo.add_parser(sub)
    _tx.add_parser(sub)
    _chaos.add_parser(sub)
    _participant.add_parser(sub)
    _console.add_parser(sub)
    try:  # the participant SDK's command; a coordinator-only install works without it
        migrate = importlib.import_module(f"{__package__}._migrate")
    except ImportError:
        pass
    else:
        migrate.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
