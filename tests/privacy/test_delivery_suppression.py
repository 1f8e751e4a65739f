"""Delivery agents follow the suppression list too: events of a suppressed user already on a
destination's topic (routed before the suppression took effect, waiting for a retry, or
redriven from the dead letters) are not sent, and are counted as filtered."""

from __future__ import annotations

from router.broker.clients import BatchSender, make_producer
from router.broker.topics import Topics
from router.config import KafkaSettings
from router.privacy.records import SUPPRESS
from router.privacy.submit import submit
from tests.delivery.helpers import (
    destination,
    event,
    make_workspace,
    produce_events,
    running_agent,
    samples,
    scrape,
    unique_kafka,
    value,
    wait_until,
)
from tests.delivery.sink import Sink
from tests.ops.helpers import eventually


async def test_an_agent_does_not_send_a_suppressed_users_events(
    kafka: KafkaSettings, sink: Sink
) -> None:
    kafka = unique_kafka(kafka)
    workspace = make_workspace(kafka, [destination("hook", sink.url)])
    topics = Topics(kafka.topic_prefix)
    async with running_agent(workspace, ["hook"]) as (agent, ops):
        producer = make_producer(kafka, role="test")
        await producer.start()
        try:
            await submit(BatchSender(producer), topics, workspace, SUPPRESS, ["user-3"])
        finally:
            await producer.stop()
        await wait_until(lambda: "user-3" in agent.suppressions, timeout=10, what="suppressed")

        events = [event(i) for i in range(14)]  # users user-0 .. user-6, twice each
        await produce_events(kafka, topics.destination("hook"), events)
        expected = {e["messageId"] for e in events if e["userId"] != "user-3"}
        await wait_until(lambda: set(sink.delivered) == expected, timeout=20, what="delivered")

        labels = {"destination": "hook", "reason": "suppressed"}

        async def both_filtered() -> bool:
            # Counted once the batch's outcome records are acknowledged.
            metrics = samples(await scrape(ops.port))
            return value(metrics, "router_delivery_filtered_total", **labels) == 2

        await eventually(both_filtered, timeout=10)
        assert not any(e["userId"] == "user-3" for r in sink.requests for e in r.events), (
            "a suppressed user's event reached the partner"
        )
