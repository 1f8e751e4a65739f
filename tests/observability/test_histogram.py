"""BatchHistogram exports exactly what prometheus_client's Histogram exports."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from router.observability.histogram import BatchHistogram

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 14400.0)


def samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if line and not line.startswith("#"))


def test_same_series_as_the_standard_histogram() -> None:
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = BatchHistogram("lat_seconds", "doc", ["destination"], BUCKETS, registry=ours_registry)
    theirs = Histogram(
        "lat_seconds", "doc", ["destination"], buckets=BUCKETS, registry=theirs_registry
    )
    rng = random.Random(4)
    for destination in ("a", "b"):
        ours.touch(destination)
        theirs.labels(destination)
        for _ in range(50):
            # Bounds themselves are included (le), and values past the last bound count too.
            batch = [rng.choice([0.05, 0.1, 30.0, 20000.0, rng.uniform(0, 50)]) for _ in range(7)]
            observed = ours.observe_many((destination,), [*batch, None])
            assert observed == len(batch)
            for value in batch:
                theirs.labels(destination).observe(value)
    ours.touch("idle")
    theirs.labels("idle")
    standard = [s for s in samples(theirs_registry) if "_created" not in s]
    mine = samples(ours_registry)
    assert [s.rsplit(" ", 1)[0] for s in mine] == [s.rsplit(" ", 1)[0] for s in standard]
    for a, b in zip(mine, standard, strict=True):
        assert abs(float(a.rsplit(" ", 1)[1]) - float(b.rsplit(" ", 1)[1])) < 1e-6, (a, b)
