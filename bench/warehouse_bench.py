"""Warehouse loads: events/s into PostgreSQL through the plugin's load path, against COPY.

Ours: the warehouse plugin as the delivery lane runs it (``encode`` -> ``send`` -> ``check``,
two requests in flight) on batches of ``batch_rows`` events of the realistic mix, into an
empty schema whose tables a small warm-up batch created: decoding each batch's records,
flattening, typing and casting, binary COPY into the keyed tables, the ``users`` upsert, one
transaction per batch. It runs with the delivery agent's garbage-collector settings
(``router.gc_tuning``, which the agent applies while it runs); the baseline with Python's
defaults (it makes next to no objects while timed).

Baseline: a plain ``COPY`` (asyncpg ``copy_records_to_table``) of the very rows our load
writes (typed tuples made by the load's own code, ``shapes.materialize``, before the clock
starts) into tables with the same columns and no key, one transaction per batch. Median of
alternating rounds, each on fresh schemas of one throwaway PostgreSQL cluster
(``tests/postgres_server.py``; Debian's postgresql package).

Also reported, without a baseline: the same load into a DuckDB file.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.harness import Result, log, standalone
from bench.workload import realistic_event
from destinations.base import PluginContext
from destinations.http import HttpClient
from destinations.warehouse import WarehouseDestination
from destinations.warehouse.postgres import POSTGRES
from destinations.warehouse.schema import TableLoad, evolve, rows_for
from destinations.warehouse.shapes import materialize
from destinations.warehouse.sql import qualified
from router import gc_tuning
from router.config import Destination
from tests.postgres_server import PostgresServer

BATCH = 5000
IN_FLIGHT = 2
WARM_UP = 1000


def plugin(settings: dict[str, Any], schema: str) -> WarehouseDestination:
    destination = Destination.model_validate(
        {
            "id": "bench-warehouse",
            "name": "Warehouse",
            "type": "warehouse",
            "sources": ["web"],
            "settings": {**settings, "schema": schema, "batch_rows": BATCH},
        }
    )
    return WarehouseDestination(destination, PluginContext(http=HttpClient()))


def workload(count: int, seed: int) -> tuple[list[dict[str, Any]], list[bytes]]:
    """(warm-up events, timed events as records): distinct messageIds, the realistic mix.

    The timed events are kept as JSON, as they wait in Kafka, and decoded batch by batch as
    the delivery lane decodes them (that decoding is timed too): a load never has more than
    its batches alive, which is what Python's garbage collector costs in an agent.
    """
    rng = random.Random(seed)
    events = [realistic_event(i, rng) for i in range(WARM_UP + count)]
    return events[:WARM_UP], [orjson.dumps(event) for event in events[WARM_UP:]]


async def ours(
    settings: dict[str, Any], schema: str, warm_up: list[Any], events: list[bytes]
) -> float:
    target = plugin(settings, schema)
    await target.start()
    try:
        await _load(target, warm_up)  # creates the tables: DDL is not what is measured
        pending = iter(_batches(events))

        async def sender() -> None:
            for batch in pending:
                await _load(target, [orjson.loads(record) for record in batch])

        # The delivery agent runs with these garbage-collector settings (router.gc_tuning).
        gc_tuning.acquire()
        try:
            started = time.perf_counter()
            # As the delivery lane runs a destination: several requests in flight. The plugin
            # runs one transaction at a time; the next batch is cast meanwhile.
            await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
            return len(events) / (time.perf_counter() - started)
        finally:
            gc_tuning.release()
    finally:
        await target.stop()


async def _load(target: WarehouseDestination, batch: list[dict[str, Any]]) -> None:
    encoded = target.encode(batch)
    assert not encoded.failed
    for request in encoded.requests:
        result = await target.send(request)
        assert not target.check(request, result), "a bench event was refused"


def _batches(events: list[Any]) -> list[list[Any]]:
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


def same_rows(schema: str, warm_up: list[Any], records: list[bytes]) -> list[list[TableLoad]]:
    """Per batch, the typed rows our load writes, for the baseline to COPY as they are."""
    events = [orjson.loads(record) for record in records]
    every = [rows_for(e, schema) for e in (*warm_up, *events)]
    state = {table: dict(columns) for table, columns in evolve(every, {}).tables.items()}
    stamp = datetime.now(UTC)
    return [
        list(materialize(batch, [schema] * len(batch), state, stamp).tables)
        for batch in _batches(events)
    ]


async def plain_copy(dsn: str, schema: str, batches: list[list[TableLoad]]) -> float:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
        created: set[str] = set()
        for batch in batches:
            for load in batch:
                name = qualified(load.table._replace(schema=schema))
                if name in created:
                    continue
                created.add(name)
                columns = ", ".join(f'"{c}" {POSTGRES.type_name(k)}' for c, k in load.columns)
                await connection.execute(f"CREATE TABLE {name} ({columns})")
        events = 0
        started = time.perf_counter()
        for batch in batches:
            async with connection.transaction():
                for load in batch:
                    await connection.copy_records_to_table(
                        load.table.name,
                        schema_name=schema,
                        records=load.rows,
                        columns=[c for c, _ in load.columns],
                    )
            events += BATCH
        return events / (time.perf_counter() - started)
    finally:
        await connection.close()


async def measure(count: int, rounds: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"ours": [], "copy": [], "duckdb": []}
    with PostgresServer() as server:
        settings = {
            "backend": "postgres",
            "host": server.host,
            "port": server.port,
            "database": "postgres",
            "user": server.user,
            "password": server.password,
            "sslmode": "disable",
        }
        for i in range(rounds):
            warm_up, events = workload(count, seed=i)
            batches = same_rows(f"copy_{i}", warm_up, events)
            rates["copy"].append(await plain_copy(server.dsn(), f"copy_{i}", batches))
            del batches
            rates["ours"].append(await ours(settings, f"ours_{i}", warm_up, events))
            with tempfile.TemporaryDirectory() as directory:
                path = str(Path(directory) / "bench.duckdb")
                duck = {"backend": "duckdb", "path": path}
                rates["duckdb"].append(await ours(duck, "web", warm_up, events))
            log(
                f"warehouse round {i + 1}: ours {rates['ours'][-1]:.0f}/s, plain COPY "
                f"{rates['copy'][-1]:.0f}/s, DuckDB {rates['duckdb'][-1]:.0f}/s"
            )
    return rates


async def run(quick: bool = False) -> list[Result]:
    count, rounds = (20_000, 1) if quick else (100_000, 3)
    rates = await measure(count, rounds)
    ours_rate = statistics.median(rates["ours"])
    baseline = statistics.median(rates["copy"])
    details = {"events": count, "batch_rows": BATCH, "rounds": rates}
    return [
        Result(
            "warehouse load into PostgreSQL / plain COPY",
            ours_rate,
            baseline,
            unit="events/s",
            target=">= 0.5x",
            passed=ours_rate >= 0.5 * baseline,
            details=details,
        ),
        Result(
            "warehouse load into DuckDB",
            statistics.median(rates["duckdb"]),
            None,
            unit="events/s",
            target="report",
            passed=None,
            details=details,
        ),
    ]


if __name__ == "__main__":
    standalone(run, details=True)
