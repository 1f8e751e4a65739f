"""The warehouse tests' PostgreSQL server and databases, for the deletion tests."""

from tests.destinations.warehouse.conftest import pg_database, postgres_server

__all__ = ["pg_database", "postgres_server"]
