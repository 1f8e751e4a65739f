"""A self-hosted, Segment-compatible customer-data event router on Kafka."""

__version__ = "0.1.0"
