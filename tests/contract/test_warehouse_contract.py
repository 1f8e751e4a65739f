from __future__ import annotations

from typing import Any, ClassVar

from tests.contract.base import DestinationContract


class TestWarehouseDuckDBContract(DestinationContract):
    type_name = "warehouse"
    http = False  # loads answer with rows written, not HTTP statuses (tests/destinations/warehouse)
    valid_settings: ClassVar[dict[str, Any]] = {"backend": "duckdb", "path": "/tmp/x.duckdb"}
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"backend": "oracle"}, "backend"),
        ({"backend": "postgres", "user": "router"}, "database"),
        ({"backend": "postgres", "database": "analytics"}, "user"),
        ({"backend": "postgres", "database": "a", "user": "b", "path": "/x"}, "path"),
        ({"backend": "duckdb", "host": "db.internal"}, "host"),
        ({"batch_rows": 0}, "batch_rows"),
        ({"batch_rows": 50_000}, "batch_rows"),
        ({"flush_interval": "soon"}, "flush_interval"),
        ({"schema": "no spaces"}, "schema"),
    ]
    batch_sizes = (1, 100, 5000)
    deletion_settings = valid_settings


class TestWarehousePostgresContract(DestinationContract):
    type_name = "warehouse"
    http = False
    valid_settings: ClassVar[dict[str, Any]] = {
        "backend": "postgres",
        "host": "warehouse.internal",
        "database": "analytics",
        "user": "router",
        "password": "pg-secret-0123456789",
    }
    secrets: ClassVar[list[str]] = ["pg-secret-0123456789"]
    batch_sizes = (1, 5000)
    deletion_settings = valid_settings
