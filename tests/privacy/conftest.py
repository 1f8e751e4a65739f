"""The warehouse tests' PostgreSQL databases, for the deletion tests (the server itself is
the session's, from tests/conftest.py)."""

from tests.destinations.warehouse.conftest import pg_database

__all__ = ["pg_database"]
