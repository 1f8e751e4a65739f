"""Segment's Python library -> gateway -> events.raw -> processor -> delivery -> both warehouses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import segment.analytics as analytics
from prometheus_client import CollectorRegistry

from destinations.warehouse import WarehouseDestination
from router.config import KafkaSettings
from router.delivery.agent import DeliveryAgent
from router.gateway import Gateway
from router.processor import Processor
from router.workspace import validate_workspace
from tests.destinations.warehouse.conftest import postgres_settings
from tests.postgres_server import PostgresServer

KEY = "wk-warehouse-e2e"
CONSUMER_OPTIONS: dict[str, object] = {
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 500,
    "rebalance_timeout_ms": 3000,
}


def warehouse(dest_id: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": dest_id,
        "name": f"Warehouse {dest_id}",
        "type": "warehouse",
        "warehouse": True,
        "settings": {**settings, "batch_rows": 500, "flush_interval": "200ms"},
        "sources": ["shop"],
        "delivery": {"backoff_min": "50ms", "backoff_max": "200ms"},
    }


async def rows(plugin: WarehouseDestination, table: str) -> int:
    try:
        _, found = await plugin.warehouse.query(f"SELECT count(*) FROM shop.{table}")
    except Exception:  # the table does not exist yet
        return 0
    return int(found[0][0])


async def test_sdk_events_land_in_duckdb_and_postgres(
    kafka: KafkaSettings, tmp_path: Path, postgres_server: PostgresServer, pg_database: str
) -> None:
    config = validate_workspace(
        {
            "kafka": kafka.model_dump(),
            "processor": {"state_dir": str(tmp_path / "state"), "poll_timeout": "100ms"},
            "sources": [{"id": "shop", "write_keys": [KEY]}],
            "destinations": [
                warehouse(
                    "duck", {"backend": "duckdb", "path": str(tmp_path / "warehouse.duckdb")}
                ),
                warehouse("pg", postgres_settings(postgres_server, pg_database)),
            ],
        }
    )
    registry = CollectorRegistry()
    expected = {"tracks": 2, "order_completed": 1, "identifies": 1, "users": 1, "pages": 1}
    expected |= {"screens": 1, "groups": 1, "accounts": 1, "aliases": 1, "signed_up": 1}
    async with (
        Gateway(config, registry, port=0) as gateway,
        Processor(config, registry, group_id=f"{kafka.topic_prefix}processor"),
        DeliveryAgent(config, ["duck", "pg"], registry, consumer_options=CONSUMER_OPTIONS) as agent,
    ):
        client = analytics.Client(
            KEY, host=f"http://127.0.0.1:{gateway.port}", gzip=True, upload_interval=0.05
        )
        client.track("u1", "Order Completed", {"total": 10, "items": [{"sku": "a"}]})
        client.identify("u1", {"plan": "pro", "address": {"city": "Lyon"}})
        client.page("u1", "Docs", "Home", {"path": "/"})
        client.screen("u1", "App", "Settings")
        client.group("u1", "g1", {"name": "Acme"})
        client.alias("anon-1", "u1")
        # Warehouses ignore integrations.All = false (Segment's rule for warehouses).
        client.track("u1", "Signed Up", integrations={"All": False})
        await asyncio.to_thread(client.shutdown)

        plugins = [agent.lanes[d].plugin for d in ("duck", "pg")]
        deadline = time.monotonic() + 60
        for plugin in plugins:
            assert isinstance(plugin, WarehouseDestination)
            while True:
                found = {table: await rows(plugin, table) for table in expected}
                if found == expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert found == expected, plugin.destination.id

        for plugin in plugins:
            assert isinstance(plugin, WarehouseDestination)
            _, order = await plugin.warehouse.query(
                "SELECT user_id, total, items, context_library_name FROM shop.order_completed"
            )
            assert order == [("u1", 10, '[{"sku":"a"}]', "analytics-python")]
            _, users = await plugin.warehouse.query("SELECT id, plan, address_city FROM shop.users")
            assert users == [("u1", "pro", "Lyon")]
            _, pages = await plugin.warehouse.query("SELECT name, category, path FROM shop.pages")
            assert pages == [("Home", "Docs", "/")]

    def loaded(dest: str, table: str) -> float | None:
        labels = {"destination": dest, "table": f"shop.{table}"}
        return registry.get_sample_value("router_warehouse_rows_loaded_total", labels)

    assert loaded("duck", "tracks") == loaded("pg", "tracks") == 2
    assert registry.get_sample_value("router_delivery_delivered_total", {"destination": "pg"}) == 7
