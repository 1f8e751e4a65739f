"""Deciding outcomes: what one attempt means for each of its events. Pure: no Kafka, no I/O.

An attempt ends for every event of a request in one of three ways: delivered (the partner
took it), retry (a retriable failure with time left in the retry window: due again at a time
spread per event) or dlq (a permanent failure, or the window is used up). Events that share
an outcome, reason and failure form one :class:`~router.delivery.records.Settled` group, so a
request the partner accepted whole is one group, whatever its size.
"""

from __future__ import annotations

import calendar
import random
from collections.abc import Mapping, Sequence

from router.delivery.records import Failure, InFlight, Settled
from router.delivery.retry import RetryPolicy
from router.spec import received_at_seconds

RETRIES_EXHAUSTED = "retries_exhausted"

#: UNIX seconds of a ``YYYY-MM-DDTHH:MM:SS`` prefix, per distinct second (bounded).
_second_starts: dict[str, int] = {}


def received_at(raw: object) -> float | None:
    """An event's ``receivedAt`` value as UNIX seconds, None if absent or unreadable.

    The router writes ``2026-11-23T10:00:00.123Z``; for that shape the date and time are
    parsed once per second and the milliseconds added (an event's share of a delivered
    request is a few microseconds; ``datetime.fromisoformat`` alone cost one). Any other
    shape takes the general parser.
    """
    if type(raw) is str and len(raw) == 24 and raw[19] == "." and raw[23] == "Z":
        prefix = raw[:19]
        start = _second_starts.get(prefix)
        if start is None:
            try:
                start = calendar.timegm(
                    (
                        int(raw[0:4]),
                        int(raw[5:7]),
                        int(raw[8:10]),
                        int(raw[11:13]),
                        int(raw[14:16]),
                        int(raw[17:19]),
                    )
                )
            except ValueError:
                return received_at_seconds(raw)
            if len(_second_starts) >= 256:
                _second_starts.clear()
            _second_starts[prefix] = start
        millis = raw[20:23]
        if millis.isdigit():
            return start + int(millis) / 1000
    return received_at_seconds(raw)


def classify(
    items: Sequence[InFlight],
    *,
    failed: Failure | Mapping[int, Failure] | None,
    at: float,
    policy: RetryPolicy,
    rng: random.Random,
    status: int | None = None,
    duration: float | None = None,
) -> list[Settled]:
    """The groups one attempt of ``items`` ends in.

    ``failed``: None when the partner took every event; one :class:`Failure` when the whole
    request failed; or, per index into ``items``, the failure of each event the partner
    refused (the others were delivered).
    """
    if failed is None:
        return [_delivered(list(items), at, status, duration)]
    if isinstance(failed, Failure):
        return _failed(list(items), failed, at, policy, rng, status, duration)
    taken: list[InFlight] = []
    refused: dict[int, tuple[Failure, list[InFlight]]] = {}
    for index, item in enumerate(items):
        failure = failed.get(index)
        if failure is None:
            taken.append(item)
        else:
            group = refused.get(id(failure))
            if group is None:
                refused[id(failure)] = (failure, [item])
            else:
                group[1].append(item)
    groups = [_delivered(taken, at, status, duration)] if taken else []
    for failure, members in refused.values():
        groups.extend(_failed(members, failure, at, policy, rng, failure.status, duration))
    return groups


def _delivered(
    items: list[InFlight], at: float, status: int | None, duration: float | None
) -> Settled:
    latencies: list[float | None] = []
    for item in items:
        head = item.head
        received = None if head is None else received_at(head.receivedAt)
        latencies.append(None if received is None else max(0.0, at - received))
    return Settled("delivered", items, at, status=status, duration=duration, latencies=latencies)


def _failed(
    items: list[InFlight],
    failure: Failure,
    at: float,
    policy: RetryPolicy,
    rng: random.Random,
    status: int | None,
    duration: float | None,
) -> list[Settled]:
    status = failure.status if failure.status is not None else status
    if not failure.retriable:
        return [Settled("dlq", items, at, failure.reason, status, duration, failure=failure)]
    again: list[InFlight] = []
    dues: list[float] = []
    exhausted: list[InFlight] = []
    for item in items:
        first = item.first_failure if item.first_failure is not None else at
        due = policy.next_due(
            attempt=item.attempt + 1,
            first_failure=first,
            now=at,
            retry_after=failure.retry_after,
            rng=rng,
        )
        if due is None:
            exhausted.append(item)
        else:
            again.append(item)
            dues.append(due)
    groups = []
    if again:
        groups.append(
            Settled(
                "retry", again, at, failure.reason, status, duration, failure=failure, dues=dues
            )
        )
    if exhausted:
        groups.append(
            Settled(
                "dlq",
                exhausted,
                at,
                RETRIES_EXHAUSTED,
                status,
                duration,
                failure=failure,
                exhausted=True,
            )
        )
    return groups
