"""The scripted participant (participant.py) as a process of its own, for tests that take a
participant down and bring it back on the same address (tests/support/processes.py):

    python -m tests.integration._participant_child serve PORT    prints "serving PORT"
"""

from __future__ import annotations

import asyncio

from tests.integration.participant import ScriptedParticipant
from tests.support.processes import child_main


async def serve(port: str) -> None:
    participant = await ScriptedParticipant().start(int(port))
    print(f"serving {participant.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    child_main({"serve": serve})
