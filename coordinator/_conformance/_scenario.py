"""The scenario file: what the checker may call on the participant under test (JSON).

    {
      "branch": "conformance",                      (optional: the branch name used)
      "saga": {
        "action": "accounts.debit", "compensation": "accounts.refund",
        "payload": {"account": "check-saga", "amount": 1},
        "refused_payload": {"account": "check-saga", "amount": 1000000000},  (optional)
        "observe": {"operation": "accounts.balance", "payload": {"account": "check-saga"},
                    "field": "balance"}                                       (optional)
      },
      "two_phase": {"operation": "accounts.debit", "payload": ..., "refused_payload": ...,
                    "observe": ...}     (optional; best on an account of its own, "check-2pc")
      "notify": {"operation": "orders.settled", "observe": ...}
                                        (optional: a receiver of settlement notices)
    }

A payload is any JSON value, sent as compact JSON with sorted keys (a string is sent as its
UTF-8 text); ``payload_base64`` gives raw bytes instead. ``observe`` names a read-only
operation the checker calls with ``Execute`` (a fresh gid each time): its result bytes, or
the top-level ``field`` of its JSON result, must show the action's effect.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..client._coordinator import encode_payload


class ScenarioError(ValueError):
    """The scenario file cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Observe:
    operation: str
    payload: bytes
    field: str | None = None


@dataclass(frozen=True)
class SagaSpec:
    action: str
    compensation: str
    payload: bytes
    refused_payload: bytes | None
    observe: Observe | None


@dataclass(frozen=True)
class TwoPhaseSpec:
    operation: str
    payload: bytes
    refused_payload: bytes | None
    observe: Observe | None


@dataclass(frozen=True)
class NotifySpec:
    operation: str
    observe: Observe | None


@dataclass(frozen=True)
class Scenario:
    branch: str
    saga: SagaSpec | None
    two_phase: TwoPhaseSpec | None
    notify: NotifySpec | None = None

    def section(self, name: str) -> SagaSpec | TwoPhaseSpec | NotifySpec | None:
        """The spec of section ``name`` ("saga", "two_phase", "notify"); None if not given."""
        spec: SagaSpec | TwoPhaseSpec | NotifySpec | None = getattr(self, name)
        return spec


def load_scenario(path: str | Path) -> Scenario:
    """The scenario in ``path``; :class:`ScenarioError` naming what is wrong."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    try:
        return parse_scenario(body)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def parse_scenario(body: object) -> Scenario:
    doc = _object(body, "the scenario")
    _only(doc, "the scenario", {"branch", "saga", "two_phase", "notify"})
    saga = _saga(_object(doc["saga"], "saga")) if "saga" in doc else None
    two_phase = _two_phase(_object(doc["two_phase"], "two_phase")) if "two_phase" in doc else None
    notify = _notify(_object(doc["notify"], "notify")) if "notify" in doc else None
    if saga is None and two_phase is None and notify is None:
        raise ScenarioError("give at least one of 'saga', 'two_phase' and 'notify'")
    return Scenario(_text(doc.get("branch", "conformance"), "branch"), saga, two_phase, notify)


def _notify(doc: dict[str, Any]) -> NotifySpec:
    _only(doc, "notify", {"operation", "observe"})
    return NotifySpec(_text(doc.get("operation"), "notify.operation"), _observe(doc, "notify"))


def _saga(doc: dict[str, Any]) -> SagaSpec:
    _only(doc, "saga", {"action", "compensation", *_PAYLOAD_KEYS, *_REFUSED_KEYS, "observe"})
    return SagaSpec(_text(doc.get("action"), "saga.action"),
                    _text(doc.get("compensation"), "saga.compensation"),
                    _payload(doc, "payload", "saga"), _refused(doc, "saga"), _observe(doc, "saga"))


def _two_phase(doc: dict[str, Any]) -> TwoPhaseSpec:
    _only(doc, "two_phase", {"operation", *_PAYLOAD_KEYS, *_REFUSED_KEYS, "observe"})
    return TwoPhaseSpec(_text(doc.get("operation"), "two_phase.operation"),
                        _payload(doc, "payload", "two_phase"), _refused(doc, "two_phase"),
                        _observe(doc, "two_phase"))


_PAYLOAD_KEYS = ("payload", "payload_base64")
_REFUSED_KEYS = ("refused_payload", "refused_payload_base64")


def _refused(doc: dict[str, Any], where: str) -> bytes | None:
    if not any(key in doc for key in _REFUSED_KEYS):
        return None
    return _payload(doc, "refused_payload", where)


def _observe(doc: dict[str, Any], where: str) -> Observe | None:
    if "observe" not in doc:
        return None
    name = f"{where}.observe"
    obs = _object(doc["observe"], name)
    _only(obs, name, {"operation", "field", *_PAYLOAD_KEYS})
    field = obs.get("field")
    return Observe(_text(obs.get("operation"), f"{name}.operation"),
                   _payload(obs, "payload", name, required=False),
                   None if field is None else _text(field, f"{name}.field"))


def _payload(doc: dict[str, Any], key: str, where: str, required: bool = True) -> bytes:
    raw = f"{key}_base64"
    if key in doc and raw in doc:
        raise ScenarioError(f"{where}: give {key!r} or {raw!r}, not both")
    if raw in doc:
        try:
            return base64.b64decode(_text(doc[raw], f"{where}.{raw}"), validate=True)
        except binascii.Error as exc:
            raise ScenarioError(f"{where}.{raw}: not base64 ({exc})") from None
    if key in doc:
        return encode_payload(doc[key])
    if required:
        raise ScenarioError(f"{where}: {key!r} is missing")
    return b""


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{what} must be a JSON object")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{what} must be a non-empty string")
    return value


def _only(doc: dict[str, Any], what: str, allowed: set[str]) -> None:
    # A misspelt key would silently turn a case off: name it instead.
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ScenarioError(f"{what}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
