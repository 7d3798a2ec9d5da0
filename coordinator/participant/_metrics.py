"""Prometheus metrics of the participant SDK: one object the host, the barrier, 2PC and the
relay call.

``ParticipantMetrics`` itself does nothing, so that the code that calls it needs no "are
metrics on?" test and pays a method call when they are off. ``PrometheusParticipantMetrics``
records into the registry it is given (never prometheus_client's global one implicitly: pass
``prometheus_client.REGISTRY`` to share the service's own). Create one per registry and
hand the same object to the host and the relay.

Label values are bounded: ops (execute, compensate, prepare, commit, abort), outcomes and
delivery verdicts. No gid, branch, operation name or message kind is a label.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from coordinator.participant._types import Op, Outcome
from coordinator.telemetry._metrics import CALL_BUCKETS

__all__ = ["OFF", "ParticipantMetrics", "PrometheusParticipantMetrics"]

_OUTCOMES = {outcome: outcome.name.lower() for outcome in Outcome}  # "ok", "failed", "retry"
_UNDO_OPS = (Op.COMPENSATE, Op.ABORT)
_FORWARD_OPS = (Op.EXECUTE, Op.PREPARE)  # what those undo


class ParticipantMetrics:
    """The hooks the SDK calls; every one a no-op here (metrics off)."""

    @property
    def enabled(self) -> bool:
        """True when the hooks record something. Then, and only then, the SDK runs the
        queries that only metrics need: the relay's backlog count, and the in-doubt listing
        of a host that has no coordinator to ask."""
        return False

    def call(self, op: Op, outcome: Outcome, seconds: float) -> None:
        """The host answered one branch call (unary or on a ``Batch`` stream)."""

    def duplicate(self, op: Op) -> None:
        """A retried call was answered from its stored row (barrier, or 2PC vote)."""

    def null_compensation(self, op: Op) -> None:
        """An undo (compensate, 2PC abort) arrived before its forward op: nothing to undo,
        and the row it left refuses the late forward call."""

    def hanging_refusal(self, op: Op) -> None:
        """A forward op (execute, prepare) arrived after its undo and was refused."""

    def two_phase_prepared(self) -> None:
        """A 2PC branch was prepared here (its yes vote recorded)."""

    def recovery_round(self, committed: int, aborted: int, in_doubt: int,
                       oldest_in_doubt_s: float) -> None:
        """An in-doubt recovery round ended: it committed and aborted so many branches, and
        left ``in_doubt`` still in doubt, the oldest prepared ``oldest_in_doubt_s`` ago."""

    def relay_pass(self, sent: int, retry_later: int, failed: int) -> None:
        """One relay pass ended: so many messages delivered, put back for later, failed."""

    def outbox_backlog(self, messages: int, oldest_age_s: float) -> None:
        """Undelivered messages of a relay's kinds and the age of the oldest, as last counted."""


OFF = ParticipantMetrics()


class _Children:
    """A metric's children by label values: the expected ones made up front (their series
    exist at 0 from the start, so the first increment shows in ``rate()``), any other on
    first use. ``labels()`` takes a lock and builds a tuple on every call; this does not."""

    def __init__(self, metric: Any, expected: Iterable[tuple[str, ...]]) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {k: metric.labels(*k) for k in expected}

    def __getitem__(self, labels: tuple[str, ...]) -> Any:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


def _ops(ops: Iterable[Op]) -> list[tuple[str, ...]]:
    return [(op.value,) for op in ops]


class PrometheusParticipantMetrics(ParticipantMetrics):
    """Records into ``registry``. Serve it with, for example,
    ``prometheus_client.start_http_server(9101, registry=registry)``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._init_calls(registry)
        self._init_barrier(registry)
        self._init_two_phase(registry)
        self._init_outbox(registry)

    @property
    def enabled(self) -> bool:
        return True

    def _init_calls(self, r: CollectorRegistry) -> None:
        calls = Counter("txc_participant_calls", "Branch calls answered by this host",
                        ["op", "outcome"], registry=r)
        self._calls = _Children(calls, [(op.value, o) for op in Op for o in _OUTCOMES.values()])
        seconds = Histogram("txc_participant_call_duration_seconds", "Branch calls, from arrival "
                            "to the reply", ["op"], buckets=CALL_BUCKETS, registry=r)
        self._call_seconds = _Children(seconds, _ops(Op))

    def _init_barrier(self, r: CollectorRegistry) -> None:
        self._duplicates = _Children(Counter(
            "txc_participant_barrier_duplicates", "Retried calls answered from their stored row",
            ["op"], registry=r), _ops(Op))
        self._null = _Children(Counter(
            "txc_participant_null_compensations", "Undos that arrived before their forward op "
            "(nothing to undo)", ["op"], registry=r), _ops(_UNDO_OPS))
        self._hanging = _Children(Counter(
            "txc_participant_hanging_refusals", "Forward ops refused because their undo ran "
            "first", ["op"], registry=r), _ops(_FORWARD_OPS))

    def _init_two_phase(self, r: CollectorRegistry) -> None:
        self._prepared = Counter("txc_participant_two_phase_prepared", "2PC branches prepared "
                                 "here (yes votes recorded)", registry=r)
        recovered = Counter("txc_participant_two_phase_recovered", "In-doubt 2PC branches "
                            "finished by the recovery loop", ["outcome"], registry=r)
        self._committed, self._aborted = recovered.labels("committed"), recovered.labels("aborted")
        self._in_doubt = Gauge("txc_participant_two_phase_in_doubt", "Prepared 2PC branches "
                               "waiting for phase 2 after the last recovery round", registry=r)
        self._in_doubt_age = Gauge("txc_participant_two_phase_in_doubt_oldest_age_seconds",
                                   "Age of the oldest of them (0: none)", registry=r)

    def _init_outbox(self, r: CollectorRegistry) -> None:
        deliveries = Counter("txc_participant_outbox_deliveries", "Outbox messages a relay tried "
                             "to deliver, by verdict", ["outcome"], registry=r)
        self._sent, self._retry, self._failed = (deliveries.labels(o) for o in ("sent", "retry", "failed"))
        self._backlog = Gauge("txc_participant_outbox_backlog", "Undelivered (pending) outbox "
                              "messages of the relay's kinds, as last counted", registry=r)
        self._lag = Gauge("txc_participant_outbox_lag_seconds", "Age of the oldest undelivered "
                          "outbox message (0: none)", registry=r)

    def call(self, op: Op, outcome: Outcome, seconds: float) -> None:
        self._calls[op.value, _OUTCOMES[outcome]].inc()
        self._call_seconds[op.value,].observe(seconds)

    def duplicate(self, op: Op) -> None:
        self._duplicates[op.value,].inc()

    def null_compensation(self, op: Op) -> None:
        self._null[op.value,].inc()

    def hanging_refusal(self, op: Op) -> None:
        self._hanging[op.value,].inc()

    def two_phase_prepared(self) -> None:
        self._prepared.inc()

    def recovery_round(self, committed: int, aborted: int, in_doubt: int,
                       oldest_in_doubt_s: float) -> None:
        self._committed.inc(committed)
        self._aborted.inc(aborted)
        self._in_doubt.set(in_doubt)
        self._in_doubt_age.set(oldest_in_doubt_s)

    def relay_pass(self, sent: int, retry_later: int, failed: int) -> None:
        self._sent.inc(sent)
        self._retry.inc(retry_later)
        self._failed.inc(failed)

    def outbox_backlog(self, messages: int, oldest_age_s: float) -> None:
        self._backlog.set(messages)
        self._lag.set(oldest_age_s)
