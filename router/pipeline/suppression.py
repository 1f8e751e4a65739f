"""Suppression: events of a suppressed user (by ``userId``, Segment's rule) stop here, before
deduplication and every other stage, counted as dropped with reason ``suppressed``.

The set is :attr:`router.privacy.state.SuppressionList.users`, which the processor's reader of
``privacy.suppressions`` keeps current; this stage only reads it: one lookup per event.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from router.pipeline.records import Envelope


def drop_suppressed(
    envelopes: list[Envelope], suppressed: AbstractSet[str]
) -> tuple[list[Envelope], int]:
    """The envelopes whose ``userId`` is not suppressed, and how many were left out."""
    kept: list[Envelope] = []
    keep = kept.append
    for env in envelopes:
        user = env.event.get("userId")
        if user is not None and (user if type(user) is str else str(user)) in suppressed:
            continue
        keep(env)
    return kept, len(envelopes) - len(kept)
