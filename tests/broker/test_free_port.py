"""``free_port`` hands out listening ports that nothing else in the process can be given."""

from __future__ import annotations

import asyncio

from router.broker.embedded import _ephemeral_range_start, free_port


def test_ports_are_never_handed_out_twice_and_lie_below_the_ephemeral_range() -> None:
    """A port from bind(0) is released before its user binds it: a second bind(0) or an
    outgoing connection could be given it meanwhile, and a test's partner then failed to
    start with "address in use"."""
    ephemeral = _ephemeral_range_start()
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    if ephemeral > 21000:
        assert all(port < ephemeral for port in ports)


async def test_a_handed_out_port_can_be_listened_on() -> None:
    port = free_port()
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", port)
    async with server:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
