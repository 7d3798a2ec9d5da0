"""Child processes the crash tests kill with SIGKILL.

A child is a module of the tests run as ``python -m MODULE MODE ARGS`` from the repository
root: it reports on stdout, one line per milestone, and logs to stderr, which goes to a
file. :func:`child_main` is its side, :class:`Child` the test's.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Child:
    def __init__(self, log: Path, module: str, *args: str) -> None:
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=log.open("w"), text=True)

    async def line(self, within_s: float = 30.0) -> str:
        """The child's next report; fails with its log if it exited first."""
        assert self.proc.stdout is not None
        text = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), within_s)
        assert text, f"process exited early; see {self.log}:\n{self.logs()[-2000:]}"
        return text.strip()

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as in a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def logs(self) -> str:
        return self.log.read_text()


def child_main(modes: dict[str, Callable[..., Awaitable[None]]]) -> None:
    """Run ``modes[argv[1]](*argv[2:])``; INFO logs (the SDK's included) go to stderr."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    mode, *args = sys.argv[1:]
    asyncio.run(modes[mode](*args))
