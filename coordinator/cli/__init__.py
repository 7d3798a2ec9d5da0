"""The ``txc`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
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
    for name in ("_migrate", "_outbox"):
        try:  # the participant SDK's commands; a coordinator-only install works without them
            module = importlib.import_module(f"{__package__}.{name}")
        except ImportError:
            continue
        module.add_parser(sub)
    return parser


EXIT_BROKEN_PIPE = 128 + 13  # as a command killed by SIGPIPE exits (git, cat, ...)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code: int = args.func(args)
        sys.stdout.flush()  # inside: the last of the output is written here, not at exit
    except BrokenPipeError:
        # The reader went away (``txc tx show X | head -5``): stop quietly, as other
        # commands do. Output still buffered would fail again at exit: point stdout at
        # /dev/null so that the interpreter's last flush has nowhere to break.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
