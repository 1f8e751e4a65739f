"""The HTTP Tracking API (Segment-compatible) that writes events to ``events.raw``."""

from router.gateway.server import Gateway

__all__ = ["Gateway"]
