"""``--log-format json``: the fields of a line, where they come from, and what never leaves."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from coordinator.cli import build_parser
from coordinator.domain.records import Op
from coordinator.telemetry._logging import _opentelemetry_trace, json_log_handler, log_context
from tests.support.processes import ROOT

Lines = Callable[[], list[dict[str, Any]]]
log = logging.getLogger("txcoord.test.json")


@pytest.fixture
def lines() -> Iterator[Lines]:
    """The JSON lines ``log`` writes during the test, parsed one by one."""
    stream = io.StringIO()
    handler = json_log_handler(stream)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    log.removeHandler(handler)


def test_a_line_has_time_level_logger_message_and_the_bound_fields(lines: Lines) -> None:
    with log_context(gid="g-1", branch="debit", op=Op.EXECUTE, attempt=2):
        log.info("transition %s", "ok", extra={"outcome": "ok"})
    log.warning("outside")
    inside, outside = lines()
    assert inside.pop("time").endswith("Z")
    assert inside == {"level": "INFO", "logger": "txcoord.test.json", "message": "transition ok",
                      "gid": "g-1", "branch": "debit", "op": "execute", "attempt": 2, "outcome": "ok"}
    moment = datetime.fromisoformat(outside.pop("time"))
    assert moment.tzinfo is not None and moment.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 60
    assert outside == {"level": "WARNING", "logger": "txcoord.test.json", "message": "outside"}


def test_extra_beats_the_context_and_inner_contexts_add_to_outer_ones(lines: Lines) -> None:
    with log_context(gid="outer", branch="a"):
        with log_context(branch="b", attempt=3):
            log.info("inner", extra={"attempt": 9})
        log.info("outer again")
    inner, outer = lines()
    assert (inner["gid"], inner["branch"], inner["attempt"]) == ("outer", "b", 9)
    assert (outer["gid"], outer["branch"], "attempt" in outer) == ("outer", "a", False)


async def test_the_context_stays_with_its_task(lines: Lines) -> None:
    both_bound = asyncio.Barrier(2)

    async def call(gid: str) -> None:
        with log_context(gid=gid):
            await both_bound.wait()  # the other task has bound its own gid by now
            log.info(gid)
            await asyncio.create_task(child())  # a task started here inherits the gid

    async def child() -> None:
        log.info("child")

    await asyncio.gather(call("g-a"), call("g-b"))
    log.info("caller")
    got = lines()
    assert sorted((line["message"], line.get("gid")) for line in got) == [
        ("caller", None), ("child", "g-a"), ("child", "g-b"), ("g-a", "g-a"), ("g-b", "g-b")]


def test_one_object_per_line_with_the_exception_as_a_field(lines: Lines) -> None:
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        log.exception("failed:\nwith a line break")
    log.info("next")
    failed, following = lines()
    assert failed["message"] == "failed:\nwith a line break" and following["message"] == "next"
    assert failed["level"] == "ERROR"
    assert failed["exception"].startswith("Traceback") and "ValueError: first line" in failed["exception"]


def test_only_the_fixed_fields_leave(lines: Lines) -> None:
    log.info("call", extra={"payload": b"SECRET-PAYLOAD", "result": "SECRET-RESULT", "gid": "g"})
    log.info({"payload": "SECRET-DICT"})  # a dict message is another way in: closed too
    first, second = lines()
    assert set(first) == {"time", "level", "logger", "message", "gid"}
    assert set(second) == {"time", "level", "logger", "message"} and second["message"] == ""
    assert "SECRET" not in json.dumps([first, second])


def test_trace_and_span_ids_come_from_the_current_span(lines: Lines) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("call") as span:
        log.info("in a span")
        ids = span.get_span_context()
    log.info("after it")
    inside, after = lines()
    assert inside["trace_id"] == f"{ids.trace_id:032x}" and len(inside["trace_id"]) == 32
    assert inside["span_id"] == f"{ids.span_id:016x}" and len(inside["span_id"]) == 16
    assert "trace_id" not in after and "span_id" not in after


def _txc_serve_without_etcd(*flags: str, **env: str) -> str:
    """``txc serve`` with no etcd logs one error and exits 2: its stderr, for the format."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TXC_")}
    done = subprocess.run([sys.executable, "-m", "coordinator.cli", "serve", *flags], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    return done.stderr


def test_txc_serve_logs_json_when_asked_by_flag_or_variable() -> None:
    for stderr in (_txc_serve_without_etcd("--log-format", "json"),
                   _txc_serve_without_etcd(TXC_LOG_FORMAT="json")):
        (line,) = [json.loads(text) for text in stderr.splitlines()]
        assert (line["level"], line["logger"]) == ("ERROR", "txcoord.cli")
        assert line["message"].startswith("no etcd")


def test_txc_serve_logs_text_by_default() -> None:
    stderr = _txc_serve_without_etcd()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR txcoord\.cli no etcd: .*\n", stderr)


def test_txc_demo_takes_the_format_too(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(["demo", "--log-format", "json"]).log_format == "json"
    monkeypatch.setenv("TXC_LOG_FORMAT", "json")
    assert build_parser().parse_args(["demo"]).log_format == "json"
    monkeypatch.setenv("TXC_LOG_FORMAT", "xml")
    with pytest.raises(SystemExit, match="TXC_LOG_FORMAT"):
        build_parser()


def test_without_opentelemetry_lines_have_no_trace_fields(
        lines: Lines, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # makes its import fail
    _opentelemetry_trace.cache_clear()
    try:
        log.info("untraced")
    finally:
        _opentelemetry_trace.cache_clear()
    (line,) = lines()
    assert line["message"] == "untraced" and "trace_id" not in line
