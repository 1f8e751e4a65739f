"""The console's page in headless Chromium (Debian's, driven by Playwright by executable path;
no browser download): sign in with the token, see a just-sent event in the debugger with its
destinations, open a failing destination's Event Delivery and read the request and response
of an error, fix the partner, redrive from the page and see the letters delivered.

With ``ROUTER_SCREENSHOTS=1`` the screenshots of each view are written to ``docs/console/``
(what the README shows); otherwise to the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from router.config import KafkaSettings
from tests.delivery.sink import Sink
from tests.kafka_helpers import produce
from tests.ops.helpers import (
    TOKEN,
    WRITE_KEY,
    eventually,
    hook,
    running_console,
    running_router,
    status_v2,
    topics,
    unique_kafka,
    workspace,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
TIMEOUT_MS = 30_000


def chromium_binary() -> str:
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    reason = "Debian's chromium is missing: run scripts/test.sh as root"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    binary = chromium_binary()
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="router-console-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,  # a fresh --user-data-dir
                executable_path=binary,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 820},
                # The page's CSP forbids eval; Playwright's wait_for_function needs it.
                bypass_csp=True,
            )
            try:
                page = await context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                yield page
                assert not errors, f"errors in the page: {errors}"
            finally:
                await context.close()


def shots(tmp_path: Path) -> Path:
    if os.environ.get("ROUTER_SCREENSHOTS") == "1":
        folder = ROOT / "docs" / "console"
    else:
        folder = tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def order(index: int, name: str = "Order Completed", **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "userId": f"user-{index % 4}",
        "messageId": f"page-{index}",
        "context": {"ip": "198.51.100.7"},
        "properties": {"email": f"buyer{index}@example.com", "total": 10 + index, **properties},
    }


async def test_sign_in_debug_inspect_a_failure_and_redrive(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    chromium_binary()
    kafka = unique_kafka(kafka)
    folder = shots(tmp_path)
    async with Sink() as shop, Sink() as crm:
        crm.fail(400)  # the CRM refuses everything until it is fixed
        ws = workspace(
            kafka,
            tmp_path / "state",
            [hook("shop", shop.url), hook("crm", crm.url, name="CRM")],
            sources=[
                {
                    "id": "web",
                    "name": "Web app",
                    "write_keys": [WRITE_KEY],
                    "middleware": [
                        {"type": "drop_fields", "fields": ["context.ip"]},
                        {"type": "hash_fields", "fields": ["properties.email"], "salt": "s"},
                    ],
                    "tracking_plan": {"plan": "web-plan", "forward_violations": True},
                }
            ],
            plans=[
                {
                    "id": "web-plan",
                    "rules": {
                        "track": {
                            "Order Completed": {
                                "properties": {"properties": {"required": ["total", "currency"]}}
                            }
                        }
                    },
                }
            ],
        )
        raw = topics(kafka).raw
        headers = [("write-key", WRITE_KEY.encode())]
        async with running_router(ws, tmp_path / "console.sqlite") as (_console, api, port):
            await produce(kafka, raw, [order(i) for i in range(5)], headers=headers)
            await eventually(
                lambda: _count(api, "/api/v1/destinations/crm/dlq", "total", 5), timeout=60
            )
            async with browser_page() as page:
                base = f"http://127.0.0.1:{port}/"
                await page.goto(base)
                await page.fill("#token", "not-the-token-at-all")
                await page.click("#sign-in")
                await page.wait_for_selector("#login-error:has-text('not valid')")
                await page.fill("#token", TOKEN)
                await page.click("#sign-in")
                await page.wait_for_selector("#app:not([hidden])")

                # --- the debugger shows an event sent now, with its destinations
                await page.wait_for_selector("#dbg-live.on")
                await produce(kafka, raw, [order(99, "Checkout Started")], headers=headers)
                row = page.locator("#dbg-table tbody tr", has_text="Checkout Started")
                await row.wait_for()
                await row.click()
                detail = page.locator("#dbg-detail")
                await detail.locator("a", has_text="page-99").wait_for()
                await detail.locator(".badge.delivered", has_text="shop").wait_for()
                await detail.locator(".badge.dead_lettered", has_text="crm").wait_for()
                payload = await detail.locator("pre.payload").inner_text()
                assert "buyer99@example.com" not in payload
                assert "198.51.100.7" not in payload
                assert '"total": 109' in payload
                await page.screenshot(path=str(folder / "debugger.png"))

                # --- Event Delivery: every destination, then the failing one
                await page.click("nav a[data-view=delivery]")
                crm_row = page.locator("#ov-table tbody tr", has_text="CRM")
                await crm_row.wait_for()
                await page.screenshot(path=str(folder / "delivery.png"))
                await crm_row.click()
                error_row = page.locator("#dst-errors tbody tr", has_text="http_400")
                await error_row.wait_for()
                await error_row.click()
                sample = page.locator("#dst-sample")
                await sample.locator("button", has_text="Request").click()
                request_text = await sample.locator("pre").inner_text()
                assert '"method": "POST"' in request_text
                assert crm.url in request_text
                await sample.locator("button", has_text="Response").click()
                response_text = await sample.locator("pre").inner_text()
                assert '"status": 400' in response_text
                await sample.locator("button", has_text="Event").click()
                assert "page-" in await sample.locator("pre").inner_text()
                letters = page.locator("#dlq-table tbody tr")
                await page.wait_for_function(
                    "document.querySelectorAll('#dlq-table tbody tr').length === 6"
                )
                await page.screenshot(path=str(folder / "destination.png"), full_page=True)

                # --- fix the partner, redrive every letter from the page
                crm.ok()
                await page.check("#dlq-all")
                await page.click("#dlq-redrive-selected")
                await page.wait_for_selector("#dlq-result:has-text('Redriven 6 of 6')")
                await page.wait_for_selector("#dlq-empty:not([hidden])")
                assert await letters.count() == 0

                async def crm_has_all() -> bool:
                    return len(crm.unique_delivered) == 6

                await eventually(crm_has_all, timeout=60)
                await page.wait_for_function(
                    "[...document.querySelectorAll('#dst-cards .stat')].some("
                    "s => s.textContent.startsWith('Delivered') && s.textContent.endsWith('6'))",
                    timeout=TIMEOUT_MS,
                )

                # --- one event, every destination; and the violations
                await page.goto(base + "#/event/page-3")
                await page.locator("#evt-result .card", has_text="CRM").wait_for()
                await page.locator("#evt-result", has_text="was redriven").wait_for()
                await page.screenshot(path=str(folder / "event.png"))
                await page.click("nav a[data-view=violations]")
                await page.locator("#vio-plans tr", has_text="Required").first.wait_for()
                await page.screenshot(path=str(folder / "violations.png"))
    assert all(count == 1 for count in crm.delivered.values())


async def _count(api: Any, path: str, key: str, wanted: int) -> bool:
    body = await api.get(path)
    return bool(body[key] >= wanted)


async def test_page_with_500_events_and_50_destinations(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Renders the debugger's 500 events and 50 destinations' Event Delivery (the time it
    took is printed, not asserted: speed is measured by benchmarks, not tests)."""
    chromium_binary()
    kafka = unique_kafka(kafka)
    destinations = [hook(f"d{i:02d}", "http://127.0.0.1:9/hook") for i in range(50)]
    ws = workspace(kafka, tmp_path / "state", destinations, debugger_events=500)
    events = [order(i) for i in range(500)]
    await produce(kafka, topics(kafka).raw, events, headers=[("write-key", WRITE_KEY.encode())])
    statuses = [
        status_v2(d["id"], "delivered", [f"page-{i}" for i in range(10)], latency_ms=[90] * 10)
        for d in destinations
    ]
    await produce(kafka, topics(kafka).status, statuses, key=b"d")
    async with running_console(ws, tmp_path / "c.sqlite") as (console, api):
        await eventually(lambda: _tail_full(console, 500), timeout=30)
        port = api.base.rsplit(":", 1)[1]
        async with browser_page() as page:
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.fill("#token", TOKEN)
            started = time.perf_counter()
            await page.click("#sign-in")
            await page.wait_for_function(
                "document.querySelectorAll('#dbg-table tbody tr').length === 500"
            )
            debugger_ms = (time.perf_counter() - started) * 1000
            await page.locator("#dbg-table tbody tr").first.click()
            await page.locator("#dbg-detail table tbody tr").nth(49).wait_for()
            started = time.perf_counter()
            await page.click("nav a[data-view=delivery]")
            await page.wait_for_function(
                "document.querySelectorAll('#ov-table tbody tr').length === 50"
            )
            overview_ms = (time.perf_counter() - started) * 1000
            print(
                f"\nconsole page: 500 debugger events in {debugger_ms:.0f} ms (sign-in to "
                f"rendered), 50 destinations' Event Delivery in {overview_ms:.0f} ms"
            )


async def _tail_full(console: Any, wanted: int) -> bool:
    return len(console.tail.entries.get("web", ())) >= wanted
