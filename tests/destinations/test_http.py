from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web

from destinations.base import (
    ConnectionFailed,
    PartnerRequest,
    PartnerResponse,
    RejectedStatus,
    RequestTimeout,
    RetryableStatus,
)
from destinations.http import (
    HttpClient,
    batches,
    is_retryable_status,
    parse_retry_after,
    raise_for_status,
)
from destinations.redact import cut_body, redact_url, secret_values
from router.broker.embedded import free_port
from tests.destinations.local_server import serving


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    now = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == 90.0
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0.0


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
        (501, False),
        (505, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (410, False),
        (413, False),
        (422, False),
        (302, False),
    ],
)
def test_classification(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


REQUEST = PartnerRequest("POST", "https://example.com/in", (), b"{}", ("m1",))


def response(status: int, headers: tuple[tuple[str, str], ...] = ()) -> PartnerResponse:
    return PartnerResponse(status, headers, b"", 0.01)


def test_raise_for_status() -> None:
    raise_for_status(REQUEST, response(200))
    raise_for_status(REQUEST, response(204))
    with pytest.raises(RetryableStatus) as retry:
        raise_for_status(REQUEST, response(429, (("retry-after", "3"),)))
    assert retry.value.retry_after == 3.0 and retry.value.reason == "http_429"
    assert retry.value.request is REQUEST
    with pytest.raises(RetryableStatus) as retry:
        raise_for_status(REQUEST, response(500, (("Retry-After", "3"),)))
    assert retry.value.retry_after is None  # only 429 and 503 carry a meaningful Retry-After
    with pytest.raises(RejectedStatus) as rejected:
        raise_for_status(REQUEST, response(400))
    assert rejected.value.reason == "http_400" and not rejected.value.retriable


def test_batches() -> None:
    assert [list(b) for b in batches([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(batches([], 3)) == []
    with pytest.raises(ValueError):
        list(batches([1], 0))


def test_redaction_helpers() -> None:
    assert redact_url("https://u:p@h.example/x?api_key=1&page=2", []) == (
        "https://***@h.example/x?api_key=***&page=2"
    )
    secret = "abcdefghij"
    text, truncated = cut_body(b"x" * 95 + secret.encode() + b"tail", 100, [secret])
    assert truncated and "abcde" not in text and "***" in text and len(text) == 100
    assert cut_body(b"short", 100, []) == ("short", False)
    assert cut_body(b"\xff\xfe", 10, []) == ("\ufffd\ufffd", False)


def test_secret_values_walks_models() -> None:
    from pydantic import BaseModel, SecretStr

    class Inner(BaseModel):
        token: SecretStr

    class Outer(BaseModel):
        inner: Inner
        headers: dict[str, SecretStr]
        short: SecretStr

    model = Outer(
        inner=Inner(token=SecretStr("tok-123")),
        headers={"a": SecretStr("hdr-4567")},
        short=SecretStr("abc"),
    )
    assert secret_values(model) == ["hdr-4567", "tok-123"]  # longest first; too short to mask


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(text="late")

    async def big(_request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 10_000)

    async def moved(_request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/big"})

    app = web.Application()
    app.router.add_post("/big", big)
    app.router.add_post("/slow", slow)
    app.router.add_post("/moved", moved)
    async with serving(app) as url:
        yield url


def req(url: str) -> PartnerRequest:
    return PartnerRequest("POST", url, (("Content-Type", "application/json"),), b"{}")


async def test_client_answers_timeouts_and_refusals(server: str) -> None:
    async with HttpClient(max_response_bytes=1000) as http:
        big = await http.send(req(f"{server}/big"), time_limit=5)
        assert big.status == 200 and len(big.body) == 1000 and big.body_truncated
        moved = await http.send(req(f"{server}/moved"), time_limit=5)
        assert moved.status == 302  # not followed
        with pytest.raises(RequestTimeout) as timeout:
            await http.send(req(f"{server}/slow"), time_limit=0.2)
        assert timeout.value.retriable and timeout.value.reason == "timeout"
        with pytest.raises(ConnectionFailed) as refused:
            await http.send(req(f"http://127.0.0.1:{free_port()}/x"), time_limit=2)
        assert refused.value.retriable and refused.value.reason == "connection"
