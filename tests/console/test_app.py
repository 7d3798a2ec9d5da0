"""The console over HTTP (httpx on the app itself: no server, no browser, no coordinator):
which page it opens on, and what a console given only ``--runs`` shows."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from coordinator.cli import _console
from coordinator.console import Settings, create_app

FIXTURE = Path(__file__).parent / "fixtures" / "chaos-run"
UNUSED = "127.0.0.1:1"  # a coordinator nobody listens on: pages that read it answer 503


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "runs" / "run-1")
    return tmp_path / "runs"


@asynccontextmanager
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080",
                                     follow_redirects=True) as http:
            yield http
    finally:
        await app.state.console.close()


@pytest.fixture
async def runs_only(runs: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client(Settings(runs=runs)) as http:
        yield http


async def test_a_console_given_only_runs_opens_on_the_runs(runs_only: httpx.AsyncClient) -> None:
    page = await runs_only.get("/")
    assert page.status_code == 200 and page.url.path == "/runs"
    assert "run-1" in page.text and "Coordinator unreachable" not in page.text
    assert "no coordinator: chaos runs only" in page.text
    assert 'href="/tx"' not in page.text  # no way into pages it cannot show
    assert (await runs_only.get("/runs/run-1")).status_code == 200


@pytest.mark.parametrize("path", ["/tx", "/tx/g-1", "/tx/g-1/watch"])
async def test_its_transaction_pages_say_there_is_no_coordinator(
        runs_only: httpx.AsyncClient, path: str) -> None:
    page = await runs_only.get(path)
    assert page.status_code == 404
    assert "No coordinator" in page.text and "--coordinator HOST:PORT" in page.text
    assert 'href="/runs">Back to the chaos runs' in page.text


async def test_its_actions_are_refused_without_calling_anything(runs_only: httpx.AsyncClient) -> None:
    assert (await runs_only.post("/tx/g-1/replay", data={"reason": "r"})).status_code == 404
    assert (await runs_only.post("/session/token", data={"token": "t"})).status_code == 404


async def test_with_a_coordinator_it_opens_on_the_transactions(runs: Path) -> None:
    async with client(Settings(coordinator=UNUSED, runs=runs, timeout_s=2)) as http:
        home = await http.get("/", follow_redirects=False)
        assert (home.status_code, home.headers["location"]) == (302, "/tx")
        page = await http.get("/tx")
        assert page.status_code == 503 and "Coordinator unreachable" in page.text
        assert 'href="/tx">Back to the transactions' in page.text
        assert (await http.get("/runs")).status_code == 200


def test_settings_need_a_coordinator_or_runs() -> None:
    with pytest.raises(ValueError, match="coordinator, chaos runs, or both"):
        Settings()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="txc")
    _console.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["console", *argv])


def test_the_command_reads_no_coordinator_when_given_only_runs(
        runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TXC_COORDINATOR", raising=False)
    assert _console.coordinator_of(parse("--runs", str(runs))) is None
    assert _console.coordinator_of(parse()) == "127.0.0.1:7070"
    assert _console.coordinator_of(parse("--runs", str(runs), "--coordinator", "c:7070")) == "c:7070"
    monkeypatch.setenv("TXC_COORDINATOR", "env:7070")
    assert _console.coordinator_of(parse("--runs", str(runs))) == "env:7070"


def test_the_command_refuses_actions_without_a_coordinator(
        runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TXC_COORDINATOR", raising=False)
    args = parse("--runs", str(runs), "--allow-actions")
    with pytest.raises(SystemExit, match="--allow-actions needs --coordinator"):
        _console.run(args)


@pytest.mark.parametrize("path", ["/bulk", "/holds/hold", "/holds/release"])
async def test_bulk_and_hold_actions_need_actions_on_and_the_sessions_csrf_secret(path: str) -> None:
    form = {"action": "replay", "gid": "g-1", "address": "p:1", "reason": "r", "confirm": "yes"}
    async with client(Settings(coordinator=UNUSED, timeout_s=2)) as http:
        refused = await http.post(path, data=form)
        assert refused.status_code == 403 and "--allow-actions" in refused.text
    async with client(Settings(coordinator=UNUSED, allow_actions=True, timeout_s=2)) as http:
        refused = await http.post(path, data={**form, "csrf": "not-the-secret"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        # the right secret, sent from another site
        await http.get("/tx")  # opens the session
        session = next(iter(http.cookies.values()))
        console = http._transport.app.state.console  # type: ignore[attr-defined]
        secret = console.sessions.get(session)[0].csrf
        refused = await http.post(path, data={**form, "csrf": secret},
                                  headers={"origin": "http://evil.example"})
        assert refused.status_code == 403 and "another site" in refused.text
