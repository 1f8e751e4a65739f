"""Metrics through hooks: stages call ``on_*`` methods; one container per role implements them.

Stages never import prometheus_client. Each role gets a metrics object built on a
``CollectorRegistry`` (the process-wide one in production, a fresh one per test).
Conventions: prefix ``router_``, base units, counters end in ``_total``, labels bounded
(destination, source, reason, stage), never user ids.
"""
