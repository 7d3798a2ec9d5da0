"""Calling the participant under test the way the coordinator does, and reading its effects."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import grpc

from .._proto.txc.v1 import participant_pb2 as ppb
from ..client._participant import ParticipantClient
from ..domain.records import idempotency_key
from ._scenario import Observe

OUTCOMES: dict[int, str] = {ppb.OUTCOME_OK: "OK", ppb.OUTCOME_FAILED: "FAILED",
                            ppb.OUTCOME_RETRY: "RETRY", ppb.OUTCOME_UNSPECIFIED: "UNSPECIFIED"}


class Violation(Exception):
    """A case failed: what the protocol expects, what came back, what it costs users."""

    def __init__(self, expected: str, got: str, impact: str, *, unreachable: bool = False) -> None:
        super().__init__(f"expected {expected}; got {got}")
        self.expected = expected
        self.got = got
        self.impact = impact
        self.unreachable = unreachable


@dataclass(frozen=True)
class Answer:
    """A definite reply (OK or FAILED), as the coordinator would record it."""

    outcome: int
    result: bytes
    message: str

    @property
    def ok(self) -> bool:
        return self.outcome == ppb.OUTCOME_OK

    def same_as(self, other: Answer) -> bool:
        # What the coordinator records is the outcome and the result bytes; a message may
        # differ between an answer and its repeat ("already committed").
        return (self.outcome, self.result) == (other.outcome, other.result)

    def __str__(self) -> str:
        text: str = OUTCOMES.get(int(self.outcome), str(self.outcome))
        if self.result:
            text += f" result={_short(self.result)}"
        return text + (f" ({self.message!r})" if self.message else "")


def _short(data: bytes) -> str:
    return repr(data if len(data) <= 60 else data[:57] + b"...")


# A participant answering nothing but UNAVAILABLE for this long is taken to be down: the
# checker stops there instead of waiting out its budget case after case.
UNREACHABLE_S = 3.0

# Unknown outcomes, retried by the coordinator with the same key: every status but these.
_MISCONFIGURED = {grpc.StatusCode.UNIMPLEMENTED}


class Driver:
    """Calls with the coordinator's keys and retry rules; observations of effects."""

    def __init__(self, client: ParticipantClient, run_id: str, branch: str, *,
                 timeout_s: float = 5.0, budget_s: float = 15.0) -> None:
        self._client = client
        self.run_id = run_id
        self.branch = branch
        self.timeout_s = timeout_s
        self.budget_s = budget_s
        self._observations = 0
        self.retries_seen = 0

    def gid(self, case: str) -> str:
        """A gid no earlier run used, so runs can repeat against the same service."""
        return f"txc-check-{self.run_id}-{case}"

    async def once(self, op: str, gid: str, operation: str, payload: bytes, *,
                   attempt: int = 1, timeout_s: float | None = None,
                   branch: str | None = None) -> ppb.BranchReply:
        """One call (on the scenario's branch unless ``branch`` names another, e.g. a
        notice's); transport errors propagate (``grpc.aio.AioRpcError``)."""
        branch = branch or self.branch
        request = ppb.BranchRequest(gid=gid, branch=branch, operation=operation,
                                    payload=payload, attempt=attempt,
                                    idempotency_key=idempotency_key(gid, branch, op))
        return await self._client.send(op, request, timeout_s or self.timeout_s)

    async def settle(self, op: str, gid: str, operation: str, payload: bytes, *,
                     attempt: int = 1, branch: str | None = None) -> Answer:
        """Call until a definite answer, repeating RETRY and transport errors with the same
        key and the next attempt number, as the coordinator does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget_s
        wait, last, down_since = 0.05, "nothing", None
        while loop.time() < deadline:
            try:
                reply = await self.once(op, gid, operation, payload, attempt=attempt, branch=branch)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _MISCONFIGURED:
                    raise _misconfigured(op, exc) from None
                last = f"{exc.code().name}: {exc.details()}"
                down_since = down_since or loop.time()
                if exc.code() == grpc.StatusCode.UNAVAILABLE and loop.time() - down_since > UNREACHABLE_S:
                    raise _unreachable(last) from None
            else:
                if reply.outcome in (ppb.OUTCOME_OK, ppb.OUTCOME_FAILED):
                    return Answer(reply.outcome, reply.result, reply.message)
                if reply.outcome != ppb.OUTCOME_RETRY:
                    raise _unspecified(op, reply)
                last = f"RETRY ({reply.message!r})"
                self.retries_seen += 1
            attempt += 1
            await asyncio.sleep(wait)
            wait = min(wait * 2, 0.5)
        raise Violation(f"a definite answer (OK or FAILED) to {op} within {self.budget_s:g} s",
                        f"{last}, up to attempt {attempt - 1}",
                        "the coordinator keeps retrying, then leaves the transaction stuck or "
                        "failed for an operator",
                        )

    async def observe(self, obs: Observe) -> bytes:
        """The observed state now: the read-only operation's result (or its ``field``)."""
        self._observations += 1
        gid = self.gid(f"observe-{self._observations}")
        answer = await self.settle("execute", gid, obs.operation, obs.payload)
        if not answer.ok:
            raise Violation(f"OK from the observe operation {obs.operation!r}", str(answer),
                            "the checker cannot see effects: fix the scenario or the service")
        return _pick(answer.result, obs)


class NoSuchField(Violation):
    """The observe operation answered, without the scenario's ``field`` in its result."""


def _pick(result: bytes, obs: Observe) -> bytes:
    if obs.field is None:
        return result
    try:
        body = json.loads(result)
    except ValueError:
        body = None
    if not isinstance(body, dict) or obs.field not in body:
        fields = f" (its fields: {', '.join(map(str, body))})" if isinstance(body, dict) else ""
        raise NoSuchField(f"a JSON object with {obs.field!r} from {obs.operation!r}",
                          _short(result) + fields,
                          "the checker cannot see effects: fix the scenario")
    return json.dumps(body[obs.field], sort_keys=True).encode()


def _unreachable(last: str) -> Violation:
    return Violation(f"an answer within {UNREACHABLE_S:g} s", last,
                     "the participant cannot be reached: check the address, TLS options and "
                     "that the service is running", unreachable=True)


def _misconfigured(op: str, exc: grpc.aio.AioRpcError) -> Violation:
    return Violation(f"an answer to {op}", f"UNIMPLEMENTED: {exc.details()}",
                     "the coordinator treats the participant as misconfigured: sagas compensate, "
                     "2PC aborts, and undo or phase-2 calls leave transactions FAILED")


def _unspecified(op: str, reply: ppb.BranchReply) -> Violation:
    return Violation(f"OK, FAILED or RETRY from {op}", f"outcome {reply.outcome} ({reply.message!r})",
                     "the coordinator treats it as misconfigured and does not retry: the "
                     "transaction compensates, aborts or is left FAILED")
