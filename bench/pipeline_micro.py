"""The processor's stages alone, no Kafka: events/s of Pipeline.process on the bench workload.

Usage: python -m bench.pipeline_micro [--profile] [--plan] [--no-schema] [--suppressed N]
(--plan: with the tracking plan, as the processor figure of ``python -m bench`` runs it; the
source schema is observed per batch as the processor does, unless --no-schema;
--suppressed N: N users suppressed, none of them in the workload, so every event pays the
lookup)
"""

from __future__ import annotations

import cProfile
import pstats
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field

import orjson

from bench.processor_bench import WRITE_KEY, bench_workspace, realistic_event
from router.broker.topics import Topics
from router.config import KafkaSettings
from router.observability.source_schema import SourceSchemas
from router.pipeline.compile import compile_workspace
from router.pipeline.dedup import Deduplicator
from router.pipeline.pipeline import Pipeline


@dataclass
class R:
    value: bytes
    key: bytes
    offset: int
    partition: int = 0
    topic: str = "events.raw"
    timestamp: int = 1795000000000
    headers: list[tuple[str, bytes]] = field(
        default_factory=lambda: [("write-key", WRITE_KEY.encode())]
    )


rng = random.Random(1)
records = []
for i in range(50000):
    e = realistic_event(i, rng)
    records.append(R(orjson.dumps(e), e["userId"].encode(), i, i % 4))
ws = bench_workspace(KafkaSettings(), "/tmp", plan="--plan" in sys.argv)
topics = Topics()
compiled = compile_workspace(ws, topics)
d = Deduplicator(tempfile.mkdtemp(), 86400)
# The processor opens a partition's store when the partition is assigned, not per batch:
# leave opening the four RocksDB stores (tens of ms) out of the timed loop.
d.open(range(4))
suppressed = None
if "--suppressed" in sys.argv:
    count = int(sys.argv[sys.argv.index("--suppressed") + 1])
    suppressed = {f"suppressed-{i}" for i in range(count)}
partitions = {topics.destination(x): 4 for x in compiled.destinations}
p = Pipeline(compiled, topics, d, partitions, suppressed)
if "--no-schema" not in sys.argv:
    p.observe = SourceSchemas().observe
t = time.perf_counter()
for i in range(0, 50000, 5000):
    r = p.process(records[i : i + 5000])
    d.remember(r.pending_keys)
print("pipeline only: %.0f ev/s" % (50000 / (time.perf_counter() - t)))
if "--profile" in sys.argv:
    d2 = Deduplicator(tempfile.mkdtemp(), 86400)
    d2.open(range(4))
    p.dedup = d2
    pr = cProfile.Profile()
    pr.enable()
    for i in range(0, 50000, 5000):
        r = p.process(records[i : i + 5000])
        d2.remember(r.pending_keys)
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)
