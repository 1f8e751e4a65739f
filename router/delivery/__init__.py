"""Delivery agents: at-least-once delivery from each ``dest.<id>`` topic through its plugin.

Modules in the order an event travels: :mod:`~router.delivery.agent` (the role, one lane per
destination), :mod:`~router.delivery.lane` (fetch, batch, send, account), then
:mod:`~router.delivery.retry` (backoff and window), :mod:`~router.delivery.throttle`
(rate limit), :mod:`~router.delivery.records` (retry, dead-letter and status formats),
:mod:`~router.delivery.outcomes` (durable writes) and :mod:`~router.delivery.offsets`
(what may be committed).
"""
