"""Stage 3: dedup by sourceId + messageId, on disk, with a window."""

from __future__ import annotations

from pathlib import Path

from router.pipeline.dedup import (
    ChangelogEntry,
    Deduplicator,
    decode_entry,
    dedup_key,
    encode_entries,
)
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


def test_changelog_entries_round_trip_and_split() -> None:
    keys = [dedup_key("web", f"id-{i}") for i in range(3)] + [dedup_key("web", "é\x00\n" * 30)]
    (value,) = encode_entries(1234.5, 17, -1, keys)
    assert decode_entry(value) == ChangelogEntry(1234.5, 17, -1, keys)
    many = [dedup_key("web", f"{i:0100d}") for i in range(12_000)]
    values = encode_entries(1.0, 5, 6, many)
    assert len(values) > 1 and all(len(v) <= 512 * 1024 for v in values)
    decoded = [decode_entry(v) for v in values]
    assert [k for e in decoded if e for k in e.keys] == many
    for junk in (None, b"", b"DK\x01", b"other bytes", value[:-3]):
        assert decode_entry(junk) is None


def test_restore_applies_committed_entries_inside_the_window(tmp_path: Path) -> None:
    now = [10_000.0]
    dedup = Deduplicator(tmp_path, 600, clock=lambda: now[0])
    dedup.open([2])
    assert dedup.checkpoint(2) is None
    entries = [
        ChangelogEntry(9_900.0, 10, -1, [dedup_key("web", "committed")]),
        ChangelogEntry(9_900.0, 10, 4, [dedup_key("web", "both-committed")]),
        ChangelogEntry(9_000.0, 5, -1, [dedup_key("web", "expired")]),
        # The batch ending at raw offset 12 was never committed: it will be read again.
        ChangelogEntry(9_950.0, 12, -1, [dedup_key("web", "replayed")]),
        ChangelogEntry(9_950.0, -1, 9, [dedup_key("web", "rekeyed-uncommitted")]),
    ]
    assert dedup.apply(2, entries, (10, 4), following=41) == 2
    assert dedup.checkpoint(2) == 41
    batch = [
        env(m, partition=2)
        for m in ("committed", "both-committed", "expired", "replayed", "rekeyed-uncommitted")
    ]
    kept, dups, _ = dedup.filter(batch)
    assert [e.event["messageId"] for e in kept] == ["expired", "replayed", "rekeyed-uncommitted"]
    assert dups == {"web": 2}
    # Restored keys keep their first-seen time: the window counts from there.
    now[0] = 9_900.0 + 601
    dedup.forget({2: [dedup_key("web", "committed")]})
    kept, _, _ = dedup.filter([env("committed", partition=2)])
    assert len(kept) == 1
    dedup.close()


def test_remember_writes_the_checkpoint_with_the_keys(tmp_path: Path) -> None:
    dedup = Deduplicator(tmp_path, 600)
    dedup.open([0, 1])
    _, _, pending = dedup.filter([env("a", partition=0)])
    dedup.remember(pending, None, {0: 8, 1: 3})
    dedup.close()
    again = Deduplicator(tmp_path, 600)
    again.open([0, 1])
    assert (again.checkpoint(0), again.checkpoint(1)) == (8, 3)
    assert again.stored_partitions() == {0, 1}
    again.close()
