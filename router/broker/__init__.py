"""Kafka plumbing: topic names and creation, client factories, batched produce, embedded broker."""
