"""The partner connection pool against real servers: aiohttp for ordinary answers, raw asyncio
servers for the byte-level cases (interim answers, closes, garbage, keep-alive races)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from destinations.base import ConnectionFailed, InvalidSettings, PartnerRequest
from destinations.connections import (
    BadResponse,
    ConnectionPool,
    Disconnected,
    InvalidRequest,
)
from destinations.http import HttpClient
from router.broker.embedded import free_port
from tests.destinations.local_server import serving

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def pool(limit: int = 1000) -> ConnectionPool:
    return ConnectionPool(user_agent="router-test", max_response_bytes=limit)


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server speaking bytes by hand; yields its base URL and a list of connection counts."""
    connections = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (Content-Length framed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    """An aiohttp server that answers what it saw, and which client port it came from."""

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": dict(request.headers),
                "body": (await request.read()).decode(),
                "port": peer[1] if peer else None,
            }
        )

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text="late")

    async def chunked(_request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(_request)
        for part in (b"one,", b"two,", b"three"):
            await response.write(part)
        await response.write_eof()
        return response

    async def zipped(_request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b'{"ok":true}'), headers={"Content-Encoding": "gzip"}
        )

    async def big(_request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100_000)

    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", handle)
    app.router.add_post("/slow", slow)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/zipped", zipped)
    app.router.add_post("/big", big)
    async with serving(app) as url:
        yield url


async def test_requests_share_a_keep_alive_connection_and_carry_the_expected_head(
    echo: str,
) -> None:
    async with pool() as client:
        ports = set()
        for i in range(5):
            answer = await client.request(
                "POST",
                f"{echo}/echo/p?x={i}",
                (("Content-Type", "application/json"), ("Idempotency-Key", f"k{i}")),
                b'{"n":%d}' % i,
                time_limit=5,
            )
            assert answer.status == 200 and not answer.body_truncated
            seen = orjson.loads(answer.body)
            assert seen["path"] == f"/echo/p?x={i}" and seen["body"] == f'{{"n":{i}}}'
            headers = seen["headers"]
            assert headers["Idempotency-Key"] == f"k{i}"
            assert headers["Content-Length"] == str(len(seen["body"]))
            assert headers["User-Agent"] == "router-test"
            assert headers["Accept-Encoding"] == "identity"
            assert headers["Host"] == echo.removeprefix("http://")
            ports.add(seen["port"])
        assert len(ports) == 1 and client.opened == 1
        # URL credentials become Basic auth; a non-ASCII path is percent-encoded; GET has no body.
        host = echo.removeprefix("http://")
        answer = await client.request(
            "GET", f"http://al:s%40t@{host}/echo/ü", (), b"", time_limit=5
        )
        seen = orjson.loads(answer.body)
        assert seen["method"] == "GET" and seen["path"] == "/echo/%C3%BC"
        assert seen["headers"]["Authorization"] == "Basic YWw6c0B0"  # al:s@t
        assert "Content-Length" not in seen["headers"]
        # A caller's own User-Agent wins; its Content-Length / Host are replaced by ours.
        answer = await client.request(
            "POST",
            f"{echo}/echo/h",
            (
                ("User-Agent", "mine"),
                ("Accept", "application/json"),
                ("Content-Length", "999"),
                ("Host", "elsewhere"),
            ),
            b"abc",
            time_limit=5,
        )
        headers = orjson.loads(answer.body)["headers"]
        assert headers["User-Agent"] == "mine" and headers["Content-Length"] == "3"
        assert headers["Accept"] == "application/json"  # one Accept, the caller's
        assert headers["Host"] == host


async def test_concurrent_requests_open_a_connection_each_and_reuse_them(echo: str) -> None:
    async with pool() as client:
        answers = await asyncio.gather(
            *(client.request("POST", f"{echo}/slow", (), b"", time_limit=5) for _ in range(4))
        )
        assert [a.body for a in answers] == [b"late"] * 4 and client.opened == 4
        for _ in range(6):
            await client.request("POST", f"{echo}/echo/x", (), b"", time_limit=5)
        assert client.opened == 4


async def test_chunked_gzip_and_oversized_answers(echo: str) -> None:
    async with pool(limit=1000) as client:
        chunked = await client.request("POST", f"{echo}/chunked", (), b"", time_limit=5)
        assert chunked.body == b"one,two,three" and not chunked.body_truncated
        zipped = await client.request("POST", f"{echo}/zipped", (), b"", time_limit=5)
        assert zipped.body == b'{"ok":true}' and zipped.header("content-encoding") == "gzip"
        opened = client.opened
        big = await client.request("POST", f"{echo}/big", (), b"", time_limit=5)
        assert big.body_truncated and big.body == b"x" * 1000
        # Not read to its end, so that connection is gone; the next request opens another.
        again = await client.request("POST", f"{echo}/chunked", (), b"", time_limit=5)
        assert again.body == b"one,two,three" and client.opened == opened + 1


async def test_interim_no_body_and_read_until_close_answers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _body = await read_request(reader)
        path = head.split(b" ")[1]
        if path == b"/continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\n")
            writer.write(b"Content-Length: 2\r\n\r\nok")
        elif path == b"/empty":
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:  # no length, not chunked: the body runs until the close
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
            await writer.drain()
            return
        await writer.drain()
        await handler(reader, writer)  # keep-alive: the next request on this connection

    async with raw_server(handler) as (url, connections), pool() as client:
        answer = await client.request("POST", f"{url}/continue", (), b"x", time_limit=5)
        assert (answer.status, answer.body) == (202, b"ok")
        answer = await client.request("POST", f"{url}/empty", (), b"x", time_limit=5)
        assert (answer.status, answer.body) == (204, b"")
        assert connections[0] == 1
        answer = await client.request("POST", f"{url}/close", (), b"x", time_limit=5)
        assert (answer.status, answer.body) == (200, b"all of it")
        answer = await client.request("POST", f"{url}/empty", (), b"x", time_limit=5)
        assert answer.status == 204 and connections[0] == 2


async def test_a_keep_alive_connection_closed_by_the_server_is_retried_once() -> None:
    """The server answers one request per connection and closes the next one unanswered
    (its keep-alive ran out as the request arrived): the client tries once more, afresh."""
    requests = []

    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _head, body = await read_request(reader)
        requests.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        _head, body = await read_request(reader)
        requests.append(body)  # read, then closed without a byte of answer

    async with raw_server(one_then_close) as (url, connections), pool() as client:
        for n in range(3):
            answer = await client.request("POST", url + "/", (), b"%d" % n, time_limit=5)
            assert answer.body == b"ok"
        # Request 1 and 2 each first went out on the previous, dying connection.
        assert requests == [b"0", b"1", b"1", b"2", b"2"] and connections[0] == 3


async def never_answers(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    """Read one request, then let the connection close without a byte of answer."""
    await read_request(reader)


async def test_a_fresh_connection_closed_unanswered_fails_without_looping() -> None:
    async with raw_server(never_answers) as (url, connections), pool() as client:
        with pytest.raises(Disconnected, match="before answering"):
            await client.request("POST", url + "/", (), b"x", time_limit=5)
        assert connections[0] == 1


async def test_garbage_and_cut_answers_are_connection_failures() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _body = await read_request(reader)
        if b" /garbage " in head:
            writer.write(b"SMTP ready\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await writer.drain()

    client = HttpClient()
    async with raw_server(handler) as (url, _connections), client:
        request = PartnerRequest("POST", f"{url}/garbage", (), b"x")
        with pytest.raises(ConnectionFailed, match=r"BadResponse talking to 127\.0\.0\.1"):
            await client.send(request, time_limit=5)
        with pytest.raises(ConnectionFailed, match="in the middle of its answer") as cut:
            await client.send(PartnerRequest("POST", f"{url}/cut", (), b"x"), time_limit=5)
        assert cut.value.retriable and cut.value.reason == "connection"


async def test_headers_that_would_break_the_framing_are_refused_before_sending() -> None:
    async with raw_server(never_answers) as (url, connections), pool() as client:
        for headers in (
            (("X-Note", "fine\r\nX-Evil: 1"),),
            (("X-Note", "fine\nX-Evil: 1"),),
            (("Bad Name", "v"),),
            (("X-Note:", "v"),),
        ):
            with pytest.raises(InvalidRequest):
                await client.request("POST", url + "/", headers, b"", time_limit=5)
        with pytest.raises(InvalidRequest):
            await client.request("POST", "ftp://example.com/", (), b"", time_limit=5)
        assert connections[0] == 0
    async with HttpClient() as http:
        bad = PartnerRequest("POST", "http://127.0.0.1:1/", (("X", "a\rb"),), b"")
        with pytest.raises(InvalidSettings, match="line break"):
            await http.send(bad, time_limit=5)


async def test_timeouts_and_cancellation_close_their_connection(echo: str) -> None:
    async with pool() as client:
        await client.request("POST", f"{echo}/echo/warm", (), b"", time_limit=5)
        with pytest.raises(TimeoutError):
            await client.request("POST", f"{echo}/slow", (), b"", time_limit=0.05)
        task = asyncio.create_task(client.request("POST", f"{echo}/slow", (), b"", time_limit=5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.opened == 2  # the warm connection timed out; the second was cancelled
        answer = await client.request("POST", f"{echo}/echo/after", (), b"", time_limit=5)
        assert answer.status == 200 and client.opened == 3


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_checks_the_certificate_against_the_trust_store(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
            await writer.drain()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        async with HttpClient() as http:
            with pytest.raises(ConnectionFailed, match="SSLCertVerificationError"):
                await http.send(PartnerRequest("POST", url, (), b"x"), time_limit=5)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now it is in the trust store
        async with pool() as client:
            for _ in range(3):
                answer = await client.request("POST", url, (), b"x", time_limit=5)
                assert answer.body == b"secure"
            assert client.opened == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_refused_connections_and_undecodable_bodies_raise() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope")
        await writer.drain()

    async with raw_server(handler) as (url, _connections), pool() as client:
        with pytest.raises(BadResponse, match="undecodable gzip"):
            await client.request("POST", url + "/", (), b"", time_limit=5)
        with pytest.raises(ConnectionRefusedError):
            await client.request("POST", f"http://127.0.0.1:{free_port()}/", (), b"", time_limit=5)


async def test_an_answer_nobody_asked_for_retires_the_connection() -> None:
    async def two_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _body = await read_request(reader)
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + head.split(b" ")[1][:5]
            writer.write(answer + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")
            await writer.drain()

    async with raw_server(two_answers) as (url, connections), pool() as client:
        first = await client.request("POST", url + "/aaaa", (), b"", time_limit=5)
        second = await client.request("POST", url + "/bbbb", (), b"", time_limit=5)
        assert (first.body, second.body) == (b"/aaaa", b"/bbbb")  # never "extra"
        assert connections[0] == 2
