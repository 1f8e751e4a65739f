"""Stage 3: dedup by sourceId + messageId, on disk, with a window."""

from __future__ import annotations

from pathlib import Path

from router.pipeline.dedup import Deduplicator, dedup_key
from router.pipeline.records import Envelope


def env(message_id: str, source: str = "web", partition: int = 0) -> Envelope:
    return Envelope(
        event={"messageId": message_id},
        raw=b"",
        partition=partition,
        offset=0,
        timestamp_ms=0,
        source_id=source,
    )


def test_duplicates_inside_a_batch_and_across_batches(tmp_path: Path) -> None:
    dedup = Deduplicator(tmp_path, 3600)
    kept, dups, pending = dedup.filter([env("a"), env("b"), env("a"), env("a", source="app")])
    assert [e.event["messageId"] for e in kept] == ["a", "b", "a"]
    assert dups == {"web": 1}
    # In flight (outputs written, not yet acknowledged): the next batch sees them as seen...
    kept, dups, _ = dedup.filter([env("a")])
    assert kept == [] and dups == {"web": 1}
    # ...unless that batch failed and is forgotten: then its replay must pass again.
    dedup.forget(pending)
    kept, dups, pending = dedup.filter([env("a"), env("b"), env("a", source="app")])
    assert len(kept) == 3 and dups == {}
    dedup.remember(pending)
    kept, dups, _ = dedup.filter([env("a"), env("b"), env("c")])
    assert [e.event["messageId"] for e in kept] == ["c"]
    assert dups == {"web": 2}
    dedup.close()


def test_state_survives_reopen_and_window_expires(tmp_path: Path) -> None:
    now = [1_000_000.0]
    dedup = Deduplicator(tmp_path, 60, clock=lambda: now[0])
    _, _, pending = dedup.filter([env("a", partition=3)])
    dedup.remember(pending)
    dedup.close()

    reopened = Deduplicator(tmp_path, 60, clock=lambda: now[0])
    reopened.open([3])
    kept, dups, _ = reopened.filter([env("a", partition=3)])
    assert kept == [] and dups == {"web": 1}
    now[0] += 61
    kept, _, _ = reopened.filter([env("a", partition=3)])
    assert len(kept) == 1, "outside the window an id is new again"
    reopened.close()


def test_empty_store_is_reported(tmp_path: Path) -> None:
    seen: list[int] = []
    dedup = Deduplicator(tmp_path, 60, on_empty_store=lambda: seen.append(1))
    dedup.open([0, 1])
    dedup.close()
    Deduplicator(tmp_path, 60, on_empty_store=lambda: seen.append(1)).open([0])
    assert len(seen) == 2


def test_kept_events_stay_in_input_order_across_partitions(tmp_path: Path) -> None:
    dedup = Deduplicator(tmp_path, 3600)
    batch = [env(f"m{i % 7}", partition=i % 3) for i in range(21)]
    kept, dups, pending = dedup.filter(batch)
    # Partitions are looked at in order of first appearance, so partition 0's copy of each id
    # is the first sighting; the kept events come back in input order, not grouped.
    assert kept == [e for e in batch if e.partition == 0]
    assert [e.event["messageId"] for e in kept] == ["m0", "m3", "m6", "m2", "m5", "m1", "m4"]
    assert dups == {"web": 14}
    assert sorted(k for keys in pending.values() for k in keys) == sorted(
        dedup_key("web", f"m{i}") for i in range(7)
    )
    dedup.close()
