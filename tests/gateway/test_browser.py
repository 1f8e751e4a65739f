"""Segment's browser library (analytics-next from npm) in headless Chromium, pointed at the gateway.

The page and the library's bundle are served from a local static server; the library is
given only ``cdnURL`` (the gateway) and learns where to post from the gateway's settings.
Chromium runs as a plain process (no driver to match its version) with every host name but
127.0.0.1 unresolvable, so nothing leaves the machine; the page reports errors back to the
static server, and the events themselves are read from events.raw.

Needs ``tests/gateway/browser/setup.sh`` (Debian's chromium, ``npm ci``). Without them the test
skips locally and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from router.broker.topics import Topics
from router.config import KafkaSettings
from router.gateway import Gateway
from tests.gateway.conftest import WEB_KEY, make_workspace
from tests.kafka_helpers import consume

HERE = Path(__file__).parent / "browser"
BUNDLE_DIR = HERE / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--enable-logging=stderr",
    # Only loopback resolves: the page cannot reach Segment's CDN (or anything else).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def _chromium() -> str | None:
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _require(what: str, ok: bool) -> None:
    if ok:
        return
    reason = f"{what} is missing: run tests/gateway/browser/setup.sh"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class StaticSite:
    """Serves the test page and the npm bundle, and collects what the page reports."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/", self._page)
        self.app.router.add_get("/analytics-next/index.js", self._bundle)
        self.app.router.add_get("/analytics-next/bundles/{name}", self._chunk)
        self.app.router.add_post("/report", self._report)
        self.port = 0

    async def _page(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(HERE / "index.html")

    async def _bundle(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(BUNDLE_DIR / "index.js")

    async def _chunk(self, request: web.Request) -> web.StreamResponse:
        path = (BUNDLE_DIR / request.match_info["name"]).resolve()
        if path.parent != BUNDLE_DIR.resolve() or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def _report(self, request: web.Request) -> web.Response:
        self.reports.append(orjson.loads(await request.read()))
        self.changed.set()
        return web.Response(status=204)

    def errors(self) -> list[str]:
        return [r["detail"] for r in self.reports if r["what"] == "error"]

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[StaticSite]:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        try:
            yield self
        finally:
            await runner.cleanup()


@contextlib.contextmanager
def chromium(binary: str, url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryDirectory(prefix="router-chromium-") as profile, log.open("wb") as out:
        process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: renderers are stopped with it
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


async def test_analytics_next_page_track_identify_arrive(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    binary = _chromium()
    _require("Chromium", binary is not None)
    _require("@segment/analytics-next (npm ci)", (BUNDLE_DIR / "index.js").is_file())
    assert binary is not None

    registry = CollectorRegistry()
    async with (
        Gateway(make_workspace(kafka), registry, port=0) as gateway,
        StaticSite().serving() as site,
    ):
        url = (
            f"http://127.0.0.1:{site.port}/?gateway=http://127.0.0.1:{gateway.port}"
            f"&writeKey={WEB_KEY}"
        )
        log = tmp_path / "chromium.log"
        with chromium(binary, url, log):
            records = await consume(kafka, topics.raw, expect=3, timeout=45, settle=0.5)
        detail = (
            f"page reports: {site.reports}; chromium log: {log.read_text(errors='replace')[-3000:]}"
        )

    assert not site.errors(), detail
    assert len(records) == 3, detail
    events = {e["type"]: e for e in (orjson.loads(r.value) for r in records)}
    assert set(events) == {"identify", "page", "track"}, detail
    for record in records:
        assert dict(record.headers)["write-key"] == WEB_KEY.encode()
        assert record.key == b"browser-user"
    identify, page, track = events["identify"], events["page"], events["track"]
    assert identify["userId"] == "browser-user" and identify["traits"]["plan"] == "pro"
    assert page["name"] == "Install" and page["properties"]["path"] == "/install"
    assert track["event"] == "Browser Click" and track["properties"] == {"button": "buy"}
    for event in events.values():
        assert event["anonymousId"] and event["messageId"] and event["receivedAt"]
        assert event["context"]["library"]["name"] == "analytics.js"
        assert "writeKey" not in event

    sample = registry.get_sample_value
    settings = sample(
        "router_gateway_requests_total",
        {"path": "/v1/projects/{writeKey}/settings", "status": "200"},
    )
    assert settings == 1, "the library fetched its settings from the gateway"
    # A cross-origin text/plain POST with Authorization is preflighted first.
    assert (sample("router_gateway_requests_total", {"path": "/v1/t", "status": "204"}) or 0) >= 1
    assert sample("router_gateway_requests_total", {"path": "/v1/t", "status": "200"}) == 1
    assert sample("router_gateway_requests_total", {"path": "/v1/m", "status": "200"}) is None


def test_missing_browser_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"setup\.sh"):
        _require("Chromium", False)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match=r"setup\.sh"):
        _require("Chromium", False)
