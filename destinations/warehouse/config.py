"""Settings of the warehouse destination (``type: warehouse``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from router.config import Duration

Backend = Literal["duckdb", "postgres"]
_POSTGRES_ONLY = ("host", "port", "database", "user", "password", "sslmode")


class WarehouseSettings(BaseModel):
    """Where the rows go, and how big and how often loads are.

    ``backend: duckdb`` (the default) writes a file: ``path``, default
    ``<processor.state_dir>/warehouse-<destination id>.duckdb``. ``backend: postgres`` needs
    ``database`` and ``user``; ``password`` is a credential (masked everywhere).

    ``schema`` names the schema the destination writes; by default the snake_case of its one
    source (Segment: one schema per source).

    ``batch_rows`` and ``flush_interval`` bound a load: events are loaded once
    ``batch_rows`` have gathered or the oldest has waited ``flush_interval``, whichever
    comes first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    backend: Backend = "duckdb"
    path: str | None = Field(default=None, min_length=1)
    host: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    database: str | None = Field(default=None, min_length=1, validate_default=True)
    user: str | None = Field(default=None, min_length=1, validate_default=True)
    password: SecretStr | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = (
        None
    )
    connect_timeout: Duration = 10.0
    schema_name: str | None = Field(
        default=None, alias="schema", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
    )
    batch_rows: int = Field(default=5000, ge=1, le=10_000)
    flush_interval: Duration = 10.0

    @field_validator("path")
    @classmethod
    def _duckdb_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("backend") == "postgres":
            raise ValueError("only for backend: duckdb")
        return value

    @field_validator(*_POSTGRES_ONLY)
    @classmethod
    def _postgres_only(cls, value: Any, info: ValidationInfo) -> Any:
        backend = info.data.get("backend")
        if backend == "duckdb" and value is not None:
            raise ValueError("only for backend: postgres")
        if backend == "postgres" and value is None and info.field_name in ("database", "user"):
            raise ValueError("required for backend: postgres")
        return value
