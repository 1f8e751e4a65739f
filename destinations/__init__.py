"""Destination plugins: one folder per partner (config, encoder, sender), shared plumbing beside.

- :mod:`destinations.base`: the plugin contract, the records that flow (request, response)
  and the one error root whose ``retriable`` class attribute decides retry versus dead letter.
- :mod:`destinations.http`: the shared aiohttp client, status classification, ``Retry-After``
  parsing, batching and credential redaction.
- :mod:`destinations.segment`: reading Segment events the way partner encoders need them
  (times, ids, context paths), packing items into size-limited bodies, and
  :class:`~destinations.segment.ItemizedRequest` for partners that answer per item.
- :mod:`destinations.registry`: ``@register("type")`` plus the ``event_router.destinations``
  entry-point group, so a new destination needs no edit here.

Adding a destination: a folder ``destinations/<name>/`` with ``config.py`` (a pydantic model,
``extra="forbid"``, ``SecretStr`` for every credential), ``encoder.py`` (events -> one
:class:`~destinations.base.PartnerRequest`, deterministic), optionally ``sender.py`` (a health
check; sending goes through the shared client) and ``__init__.py`` with a
``@register("<name>")`` subclass of :class:`~destinations.base.DestinationPlugin`; then a test
class in ``tests/contract/`` that subclasses ``DestinationContract``. Override
:meth:`~destinations.base.DestinationPlugin.check` when the partner reports errors in a 200.
"""
