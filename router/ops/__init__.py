"""Operations: what the roles publish, read for people.

``server`` (health, metrics, and the console's API and page), ``console`` (the role that folds
``delivery.status``, the dead-letter topics and ``events.violations`` into ``store``, and runs
the source ``debugger``), ``replay`` and ``deadletters`` (the tools behind ``router replay`` and
``router dlq``, in ``commands``), ``reading`` (topics read without a consumer group).
"""
