"""The console in a real headless Chromium (Debian's chromium + chromium-driver, Selenium),
against a real coordinator on the session's etcd. Each page's screenshot is saved in the
test's temporary folder (CI keeps it as an artifact).

Selenium blocks, and the coordinator, the participant and the console all run on the
test's event loop: every browser call goes through a thread so they keep answering.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from coordinator import CoordinatorClient, Notify, Retry, Saga, Step, TwoPhase, pb
from coordinator.rpc.net import free_port
from coordinator.server import CoordinatorServer, DevEtcd, Operators
from tests.integration.participant import ScriptedParticipant
from tests.support.coordinators import running, server_options

pytestmark = pytest.mark.integration
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FIXTURE = Path(__file__).parent / "fixtures" / "chaos-run"
FAST = Retry(initial_backoff_s=0.01, max_backoff_s=0.05)
TOKEN = "console-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium and chromedriver are not installed (scripts/setup.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="txc-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(DRIVER), options=options)
    browser.set_page_load_timeout(20)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Page:
    """The browser, driven from a thread; ``shot`` saves a full-page screenshot."""

    def __init__(self, driver: Any, base: str, shots: Path) -> None:
        self.driver, self.base, self.shots = driver, base, shots

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def on_element(self, css: str, act: Any) -> Any:
        """``act`` on the element ``css`` finds, found again if the page's live refresh
        replaced it between the find and the act (Selenium's stale element reference)."""
        from selenium.common.exceptions import StaleElementReferenceException

        for _ in range(20):
            try:
                return await self.call(lambda: act(self.driver.find_element("css selector", css)))
            except StaleElementReferenceException:
                await asyncio.sleep(0.05)
        return await self.call(lambda: act(self.driver.find_element("css selector", css)))

    async def open(self, path: str) -> None:
        await self.call(self.driver.get, self.base + path)

    async def text(self, css: str = "body") -> str:
        return str(await self.on_element(css, lambda element: element.text))

    async def count(self, css: str) -> int:
        return len(await self.call(self.driver.find_elements, "css selector", css))

    async def wait_text(self, css: str, wanted: str, timeout_s: float = 10.0) -> str:
        """The text of ``css`` once it holds ``wanted``; the element may not be there yet
        (a form's POST and redirect still loading after the click on a loaded machine)."""
        from selenium.common.exceptions import NoSuchElementException

        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    text = await self.text(css)
                except NoSuchElementException:
                    text = ""
                if wanted in text:
                    return text
                await asyncio.sleep(0.2)

    async def fill(self, css: str, value: str) -> None:
        def typed(box: Any) -> None:
            box.clear()
            box.send_keys(value)
        await self.on_element(css, typed)

    async def click(self, css: str) -> None:
        await self.on_element(css, lambda element: element.click())

    async def accept_dialog(self) -> str:
        def accept() -> str:
            from selenium.webdriver.support.ui import WebDriverWait

            alert = WebDriverWait(self.driver, 5).until(lambda d: d.switch_to.alert)
            text = str(alert.text)
            alert.accept()
            return text
        return await self.call(accept)

    async def shot(self, name: str) -> Path:
        def save() -> None:  # the whole page, not the window: emulate a screen as tall
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1400, "height": min(int(height), 6000), "deviceScaleFactor": 1,
                "mobile": False})
            self.driver.save_screenshot(str(self.shots / name))
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        await self.call(save)
        return self.shots / name


@asynccontextmanager
async def console(server: CoordinatorServer | None, driver: Any, tmp: Path,
                  **settings: Any) -> AsyncIterator[Page]:
    """``txc console`` for ``server`` (None: the chaos runs only), in this process (uvicorn
    on a free port)."""
    import uvicorn

    from coordinator.console import Settings, create_app

    port = free_port()
    coordinator = None if server is None else f"127.0.0.1:{server.port}"
    app = create_app(Settings(coordinator=coordinator, **settings))
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        timeout_graceful_shutdown=1))
    task = asyncio.create_task(web.serve())
    while not web.started:
        await asyncio.sleep(0.05)
    await asyncio.to_thread(driver.delete_all_cookies)
    try:
        yield Page(driver, f"http://127.0.0.1:{port}", tmp)
    finally:
        web.should_exit = True
        await task


def shop(p: ScriptedParticipant, gid: str, out_of_stock: bool) -> Saga:
    return Saga([Step("debit", p.address, "accounts.debit", "accounts.refund", {"amount": 30}, retry=FAST),
                 Step("order", p.address, "orders.create", "orders.cancel",
                      {"refuse": out_of_stock}, retry=FAST)], gid=gid, labels={"demo": "shop"})


async def test_the_list_and_the_detail_show_a_saga_and_its_timeline(
        etcd: DevEtcd, prefix: str, driver: Any, tmp_path: Path) -> None:
    participant = await ScriptedParticipant().start()
    try:
        async with running(server_options(etcd, prefix)) as server, \
                CoordinatorClient(f"127.0.0.1:{server.port}") as client:
            await client.start_saga(shop(participant, "shop-book", out_of_stock=False), wait=True)
            lamp = await client.start_saga(shop(participant, "shop-lamp", out_of_stock=True), wait=True)
            assert lamp.transaction.state == pb.TX_STATE_COMPENSATED
            async with console(server, driver, tmp_path) as page:
                await page.open("/tx")
                listed = await page.text("table.txs")
                assert "shop-book" in listed and "shop-lamp" in listed and "demo=shop" in listed
                assert "compensated 1" in (await page.text(".counts")).replace("\n", " ")
                await page.shot("list.png")

                await page.click("a[href='/tx/shop-lamp']")
                await page.wait_text("#tx-state", "compensated")
                assert await page.count(".lane[data-branch]") == 2
                assert await page.count(".seg.backward.undone") == 1  # the refund
                assert await page.count(".seg.failed") == 1  # the refused order
                history = await page.text("table.history")
                assert "compensate" in history and "refused by test" in history
                refund = await page.text("table.branches tr[data-branch=debit]")
                assert participant.address in refund and "accounts.debit / accounts.refund" in refund
                assert await page.count("#actions") == 0  # read-only console
                await page.shot("detail-compensated.png")
                await page.open("/tx/shop-book")
                assert await page.count(".seg.ok") == 2
                await page.shot("detail-committed.png")

                await page.open("/tx/no-such-gid")
                assert "no-such-gid" in await page.text("section.error")
                await page.shot("unknown-gid.png")
                await page.open("/tx?state=stuck&older_than=soon")
                assert "unknown state 'stuck'" in await page.text("#problem")
                await page.shot("bad-filter.png")
    finally:
        await participant.stop()


async def test_a_traced_transaction_links_to_its_trace(
        etcd: DevEtcd, prefix: str, driver: Any, tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    participant = await ScriptedParticipant().start()
    options = replace(server_options(etcd, prefix), tracer_provider=TracerProvider())
    try:
        async with running(options) as server, \
                CoordinatorClient(f"127.0.0.1:{server.port}") as client:
            reply = await client.start_saga(shop(participant, "shop-traced", out_of_stock=False),
                                            wait=True)
            trace_id = reply.transaction.trace_id
            assert len(trace_id) == 32
            jaeger = "http://jaeger.example:16686/trace/{trace_id}"
            async with console(server, driver, tmp_path, trace_url=jaeger) as page:
                await page.open("/tx/shop-traced")
                link = await page.on_element("#trace a", lambda a: a.get_attribute("href"))
                assert link == f"http://jaeger.example:16686/trace/{trace_id}"
                await page.shot("detail-traced.png")
    finally:
        await participant.stop()


async def test_the_detail_says_whom_it_notifies_and_how_that_stands(
        etcd: DevEtcd, prefix: str, driver: Any, tmp_path: Path) -> None:
    participant = await ScriptedParticipant().start()
    nobody = f"127.0.0.1:{free_port()}"  # the receiver is down: the notice stays pending
    saga = replace(shop(participant, "shop-notify", out_of_stock=False),
                   notify=Notify(nobody, "orders.settled", retry=FAST, budget_s=600))
    try:
        async with running(server_options(etcd, prefix)) as server, \
                CoordinatorClient(f"127.0.0.1:{server.port}") as client:
            assert (await client.start_saga(saga, wait=True)).transaction.state == \
                pb.TX_STATE_COMMITTED
            async with console(server, driver, tmp_path) as page:
                await page.open("/tx/shop-notify")
                shown = await page.wait_text("#notice", "pending")
                assert shown == f"orders.settled at {nobody}, pending (notice 1)"
    finally:
        await participant.stop()


async def test_replay_from_the_browser_needs_the_token_and_a_reason(
        etcd: DevEtcd, prefix: str, driver: Any, tmp_path: Path) -> None:
    participant = await ScriptedParticipant().start()
    options = replace(server_options(etcd, prefix), operators=Operators.parse(f"ann {TOKEN}"))
    broken = Saga([Step("debit", participant.address, "a.do", "a.undo", {"undo_refuse": True}, retry=FAST),
                   Step("order", participant.address, "b.do", "b.undo", {"refuse": True}, retry=FAST)],
                  gid="stuck-refund")
    try:
        async with running(options) as server, \
                CoordinatorClient(f"127.0.0.1:{server.port}") as client:
            started = await client.start_saga(broken, wait=True)
            assert started.transaction.state == pb.TX_STATE_FAILED
            async with console(server, driver, tmp_path, allow_actions=True) as page:
                await page.open("/tx/stuck-refund")
                assert await page.count(".seg.failed") == 2  # refused order, stuck refund
                # what the state allows: no abort of a FAILED saga, no skip of the refused order
                assert await page.count("#form-replay") == 1 and await page.count("#form-abort") == 0
                offered = await page.text("#form-skip select[name=branch]")
                assert offered.split() == ["debit"]
                await page.shot("detail-failed.png")

                await replay(page, "refund fixed in v1.4.2")
                refused = await page.wait_text(".flash.error", "UNAUTHENTICATED")
                assert "replay refused" in refused
                assert (await client.get("stuck-refund")).state == pb.TX_STATE_FAILED
                await page.shot("replay-refused.png")

                participant.healed = True
                await page.fill("#token", TOKEN)
                await page.click("form.token button")
                await page.wait_text(".flash.ok", "token kept")
                await replay(page, "refund fixed in v1.4.2")
                await page.wait_text(".flash.ok", "replay sent")
                settled = await client.wait_settled("stuck-refund", timeout_s=10)
                assert settled.state == pb.TX_STATE_COMPENSATED
                await page.open("/tx/stuck-refund")
                await page.wait_text("#tx-state", "compensated")
                history = await page.text("table.history")
                assert "operator:ann" in history and "refund fixed in v1.4.2" in history
                await page.shot("replayed.png")
    finally:
        await participant.stop()


async def test_a_two_phase_aborting_shows_its_unanswered_branch_aborting(
        etcd: DevEtcd, prefix: str, driver: Any, tmp_path: Path) -> None:
    participant = await ScriptedParticipant().start()
    gone = f"127.0.0.1:{free_port()}"  # nobody serves there: its Prepare and Abort go unanswered
    transfer = TwoPhase([Step("debit", gone, "accounts.debit", payload={"amount": 30}, retry=FAST),
                         Step("order", participant.address, "orders.create", payload={}, retry=FAST)],
                        gid="2pc-aborting", timeout_s=1)
    try:
        async with running(server_options(etcd, prefix)) as server, \
                CoordinatorClient(f"127.0.0.1:{server.port}") as client:
            await client.start_two_phase(transfer)
            async with asyncio.timeout(10):
                while (await client.get("2pc-aborting")).state != pb.TX_STATE_ABORTING:
                    await asyncio.sleep(0.1)
            async with console(server, driver, tmp_path, allow_actions=True) as page:
                await page.open("/tx/2pc-aborting")
                lane = await page.text(".lane[data-branch=debit] .name")
                assert "aborting" in lane and "running" not in lane
                row = await page.text("table.branches tr[data-branch=debit]")
                assert gone in row and "accounts.debit" in row and "aborting" in row
                assert await page.count(".lane[data-branch=debit] .seg.backward.open") == 1
                assert await page.count("#form-abort") == 0  # decided: abort is refused
                await page.shot("detail-2pc-aborting.png")
    finally:
        await participant.stop()


async def replay(page: Page, reason: str) -> None:
    await page.fill("#form-replay input[name=reason]", reason)
    await page.click("#form-replay input[name=confirm]")
    await page.click("#form-replay button")
    assert "replay stuck-refund?" in await page.accept_dialog()


async def test_a_chaos_run_folder_renders_with_its_plots(
        etcd: DevEtcd, prefix: str, driver: Any, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURE, runs / "run-1")
    async with running(server_options(etcd, prefix)) as server, \
            console(server, driver, tmp_path, runs=runs) as page:
        await page.open("/runs")
        assert "run-1" in await page.text("table.runs")
        await page.shot("runs.png")
        await page.click("a[href='/runs/run-1']")
        await page.wait_text("table.modes", "saga")
        loaded = await page.call(page.driver.execute_script,
                                 "return [...document.images].map(i => i.complete && i.naturalWidth)")
        assert len(loaded) == 4 and all(w > 0 for w in loaded), loaded
        await page.shot("run.png")


async def test_a_console_given_only_runs_opens_on_them(driver: Any, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURE, runs / "run-1")
    async with console(None, driver, tmp_path, runs=runs) as page:
        await page.open("/")
        assert await page.call(lambda: page.driver.current_url) == page.base + "/runs"
        assert "run-1" in await page.text("table.runs")
        header = await page.text("header.top")
        assert "no coordinator: chaos runs only" in header and "Transactions" not in header
        await page.shot("runs-only.png")
        await page.open("/tx")
        assert "No coordinator" in await page.text("section.error h1")
        await page.shot("runs-only-tx.png")
        await page.click("section.error a")
        assert "run-1" in await page.text("table.runs")


async def test_hold_a_participant_and_act_on_a_filtered_list_from_the_browser(
        etcd: DevEtcd, prefix: str, driver: Any, tmp_path: Path) -> None:
    participant = await ScriptedParticipant().start()
    options = replace(server_options(etcd, prefix), operators=Operators.parse(f"ann {TOKEN}"))

    def broken(gid: str, team: str) -> Saga:
        return Saga([Step("debit", participant.address, "a.do", "a.undo", {"undo_refuse": True},
                          retry=FAST),
                     Step("order", participant.address, "b.do", "b.undo", {"refuse": True},
                          retry=FAST)], gid=gid, labels={"team": team})

    try:
        async with running(options) as server, \
                CoordinatorClient(f"127.0.0.1:{server.port}") as client:
            for gid, team in (("pay-1", "pay"), ("pay-2", "pay"), ("ship-1", "ship")):
                assert (await client.start_saga(broken(gid, team), wait=True)).transaction.state \
                    == pb.TX_STATE_FAILED
            async with console(server, driver, tmp_path, allow_actions=True) as page:
                await page.open("/holds")
                assert "No participant is held" in await page.text("#no-holds")
                await page.fill("#token", TOKEN)
                await page.click("form.token button")
                await page.wait_text(".flash.ok", "token kept")
                await page.fill("#form-hold input[name=address]", participant.address)
                await page.fill("#form-hold input[name=reason]", "accounts db upgrade")
                await page.click("#form-hold input[name=confirm]")
                await page.click("#form-hold button")
                assert "hold this participant?" in await page.accept_dialog()
                await page.wait_text(".flash.ok", "held")
                assert "accounts db upgrade" in await page.text("#holds")
                assert "operator:ann" in await page.text("#holds")

                waiting = Saga([Step("a", participant.address, "a.do", "a.undo", {}, retry=FAST)],
                               gid="waits", timeout_s=1)
                await client.start_saga(waiting)
                await asyncio.sleep(1.5)  # past its deadline: it waits, not compensates
                await page.open("/holds")
                assert "1" in await page.text("#holds tbody td:nth-child(5)")
                await page.shot("holds.png")
                await page.open("/tx/waits")
                await page.wait_text("#live", f"waiting on held participant(s): {participant.address}")
                assert "standing still" in await page.text("#live")
                await page.shot("detail-waiting-on-hold.png")

                await page.open("/holds")
                await page.fill("#holds input[name=reason]", "upgrade done")
                await page.click("#holds input[name=confirm]")
                await page.click("#holds button")
                assert f"release {participant.address}?" in await page.accept_dialog()
                await page.wait_text(".flash.ok", "released")
                assert (await client.wait_settled("waits", 10)).state == pb.TX_STATE_COMMITTED

                participant.healed = True
                await page.open("/tx?label=team%3Dpay")
                await page.call(lambda: page.driver.find_element(
                    "css selector", "#bulk-action option[value=replay]").click())
                await page.click("#bulk button")
                await page.wait_text("h1", "replay: 2 transactions")
                targets = await page.text("#bulk-targets")
                assert "pay-1" in targets and "pay-2" in targets and "ship-1" not in targets
                await page.shot("bulk-preview.png")
                await page.fill("#form-bulk input[name=reason]", "refund fixed")
                await page.click("#form-bulk input[name=confirm]")
                await page.click("#form-bulk button")
                assert "replay 2 transactions?" in await page.accept_dialog()
                await page.wait_text(".flash.ok", "replayed 2 of 2")
                await page.shot("bulk-done.png")
                for gid in ("pay-1", "pay-2"):
                    assert (await client.wait_settled(gid, 10)).state == pb.TX_STATE_COMPENSATED
                assert (await client.get("ship-1")).state == pb.TX_STATE_FAILED
    finally:
        await participant.stop()
