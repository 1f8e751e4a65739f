"""Fake partner APIs, one module per partner, written from each partner's reference.

Each fake checks requests the way its partner documents them (path, authentication,
required fields, batch and size limits) and answers with the partner's documented success,
per-event error and throttling bodies. They run on 127.0.0.1, port 0.
"""
