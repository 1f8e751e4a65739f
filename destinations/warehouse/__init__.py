"""The warehouse destination: Segment's warehouse schema in PostgreSQL or a DuckDB file.

One folder, data flowing top to bottom: :mod:`.config` (settings), :mod:`.naming` (Segment's
identifiers), :mod:`.schema` (events -> rows, types, evolution: pure, the reference),
:mod:`.shapes` (the same rows, fast: one compiled function per event shape), :mod:`.sql` (the
SQL both backends share), :mod:`.loader` (a load: one transaction, bad rows isolated), the two
backends :mod:`.postgres` and :mod:`.duckdb_file`, and :mod:`.cli` (``router warehouse``).

In the plugin contract: :meth:`encode` checks each event (a messageId, one of the calls) and
gives the batch's schemas, :meth:`send` turns the events into rows and loads them, returning
what it wrote, :meth:`check` names the events whose rows the warehouse refused
(dead-lettered alone, the rest of the batch is loaded).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from destinations.base import (
    DestinationError,
    DestinationPlugin,
    Encoded,
    EncodeError,
    Event,
    PartnerResponse,
    PermanentError,
    PluginContext,
    event_sources,
)
from destinations.registry import register
from destinations.warehouse.config import WarehouseSettings
from destinations.warehouse.loader import (
    Backend,
    DeletionResult,
    LoadRequest,
    LoadResult,
    UserDeletion,
    Warehouse,
)
from destinations.warehouse.schema import CALL_TYPES, rows_for, schema_name
from router.config import Destination
from router.observability.warehouse import WarehouseMetrics

__all__ = [
    "DeletionResult",
    "LoadRequest",
    "LoadResult",
    "UserDeletion",
    "WarehouseDestination",
    "WarehouseSettings",
]

#: What the plugin sends: a load, or a privacy deletion; and what each gives back.
WarehouseRequest = LoadRequest | UserDeletion
WarehouseResult = LoadResult | DeletionResult

#: Message ids listed when a load is described in a dead letter or status record.
DESCRIBED_IDS = 20


@register("warehouse")
class WarehouseDestination(DestinationPlugin[WarehouseSettings, WarehouseRequest, WarehouseResult]):
    settings_model = WarehouseSettings
    summary = "Segment's warehouse schema in PostgreSQL or an embedded DuckDB file"
    default_batch_size = 5000
    max_batch_size = 10_000

    def __init__(self, destination: Destination, context: PluginContext) -> None:
        super().__init__(destination, context)
        settings_schema = self.settings.schema_name
        #: The schema of events whose source is unknown (a record written to ``dest.<id>`` by
        #: hand): the one ``schema`` setting, else the destination's first source's.
        self.default_schema = schema_name(settings_schema or destination.sources[0])
        metrics = None
        if context.registry is not None:
            metrics = WarehouseMetrics.on(context.registry)
            metrics.register_destination(destination.id)
        self.warehouse = Warehouse(self.backend(), destination_id=destination.id, metrics=metrics)

    @property
    def schemas(self) -> list[str]:
        """Every schema this destination writes: one per source, or the one ``schema``."""
        if self.settings.schema_name:
            return [self.default_schema]
        return sorted({schema_name(source) for source in self.destination.sources})

    def schema_for(self, source: str | None) -> str:
        """Segment's rule: one schema per source (unless ``schema`` names one for all)."""
        if self.settings.schema_name or not source:
            return self.default_schema
        return schema_name(source)

    @property
    def path(self) -> Path:
        """The DuckDB file: ``path``, else ``warehouse.duckdb`` in the destination's state."""
        if self.settings.path:
            return Path(self.settings.path)
        return self.context.state_dir / "warehouse.duckdb"

    def backend(self, *, read_only: bool = False) -> Backend:
        settings = self.settings
        if settings.backend == "duckdb":
            from destinations.warehouse.duckdb_file import DuckDBBackend

            return DuckDBBackend(self.path, read_only=read_only)
        from destinations.warehouse.postgres import PostgresBackend

        assert settings.database is not None and settings.user is not None  # validated
        return PostgresBackend(
            host=settings.host or "127.0.0.1",
            port=settings.port or 5432,
            database=settings.database,
            user=settings.user,
            password=settings.password.get_secret_value() if settings.password else None,
            sslmode=settings.sslmode or "prefer",
            connect_timeout=settings.connect_timeout,
            read_only=read_only,
        )

    @property
    def batch_size(self) -> int:
        """Rows (events) per load: ``settings.batch_rows``."""
        return max(1, min(self.settings.batch_rows, self.max_batch_size))

    @property
    def flush_interval(self) -> float:
        """Longest a partial batch waits for more events: ``settings.flush_interval``."""
        return self.settings.flush_interval

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.warehouse.start()

    async def stop(self) -> None:
        await self.warehouse.stop()

    async def health_check(self) -> tuple[bool, str]:
        try:
            return await self.warehouse.backend.probe()
        except Exception as exc:  # noqa: BLE001 - a health check reports, never raises
            return False, f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------ one attempt

    def encode(self, events: Sequence[Event]) -> Encoded[WarehouseRequest]:
        """Checks only: the load turns events into rows (see ``loader``: while another batch's
        transaction runs, a slice at a time)."""
        sources = event_sources(events)
        if sources:
            schema_of = {source: self.schema_for(source) for source in set(sources)}
            schemas = [schema_of[source] for source in sources]
        else:
            schemas = [self.default_schema] * len(events)
        message_ids = [event.get("messageId") for event in events]
        if None not in message_ids and "" not in message_ids and _calls_only(events):
            # The usual batch: every event is loaded; the request covers them all.
            return Encoded(
                [LoadRequest(tuple(events), tuple(schemas), tuple(map(str, message_ids)))]
            )
        kept: list[Event] = []
        kept_schemas: list[str] = []
        kept_ids: list[str] = []
        covers: list[int] = []
        failed: dict[int, DestinationError] = {}
        for position, (event, message_id) in enumerate(zip(events, message_ids, strict=True)):
            if message_id is None or message_id == "":
                failed[position] = EncodeError(
                    "the event has no messageId: every warehouse row is keyed on it"
                )
                continue
            kind = event.get("type")
            if type(kind) is not str or kind not in CALL_TYPES:
                try:
                    rows_for(event, schemas[position])  # says what is wrong with it
                except ValueError as exc:
                    failed[position] = EncodeError(str(exc))
                    continue
            kept.append(event)
            kept_schemas.append(schemas[position])
            kept_ids.append(str(message_id))
            covers.append(position)
        requests: list[WarehouseRequest] = (
            [LoadRequest(tuple(kept), tuple(kept_schemas), tuple(kept_ids), tuple(covers))]
            if kept
            else []
        )
        return Encoded(requests, failed)

    async def send(self, request: WarehouseRequest) -> WarehouseResult:
        if isinstance(request, UserDeletion):
            started = time.monotonic()
            deleted = await self.warehouse.delete_user(request.user_id, request.schemas)
            return DeletionResult(deleted, time.monotonic() - started)
        return await self.warehouse.load(request)

    def deletion_request(self, user_id: str) -> UserDeletion:
        """Every row of the user in every schema this destination writes, in one transaction
        (:meth:`Warehouse.delete_user`)."""
        return UserDeletion(user_id, tuple(self.schemas))

    def check(
        self, request: WarehouseRequest, response: WarehouseResult
    ) -> Mapping[int, DestinationError]:
        if not isinstance(response, LoadResult):
            return {}
        return {
            index: PermanentError(
                f"the warehouse cannot store this event: {message}", reason="row_rejected"
            )
            for index, message in response.rejected.items()
        }

    def status_of(self, response: WarehouseResult) -> int | None:
        return None

    # ------------------------------------------------------------ what people may read

    def describe_request(
        self, request: WarehouseRequest, *, limit: int | None = None
    ) -> dict[str, Any]:
        if isinstance(request, UserDeletion):
            return {
                "warehouse": self.describe_text(self.warehouse.backend.describe()),
                "deleteUser": True,
                "schemas": list(request.schemas),
            }
        if not isinstance(request, LoadRequest):
            return super().describe_request(request, limit=limit)
        return {
            "warehouse": self.describe_text(self.warehouse.backend.describe()),
            "events": len(request.events),
            "messageIds": list(request.message_ids[:DESCRIBED_IDS]),
            "rows": request.tables(),
        }

    def describe_response(
        self, response: WarehouseResult, *, limit: int | None = None
    ) -> dict[str, Any]:
        if isinstance(response, DeletionResult):
            return {"deleted": dict(response.deleted), "seconds": round(response.seconds, 6)}
        if isinstance(response, PartnerResponse):  # not ours; described as HTTP, redacted
            return self._describe_http_response(response, limit)
        if not isinstance(response, LoadResult):
            return super().describe_response(response, limit=limit)
        return {
            "rows": dict(response.rows),
            "rejected": len(response.rejected),
            "discarded": response.discarded,
            "transactions": response.transactions,
            "seconds": round(response.seconds, 6),
        }


def _calls_only(events: Sequence[Event]) -> bool:
    """Every event is one of the six calls (a ``type`` that is not even text is not)."""
    try:
        return {event.get("type") for event in events} <= CALL_TYPES
    except TypeError:  # an object or array as the type
        return False
