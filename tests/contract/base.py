"""The contract every destination plugin meets; subclass it once per destination.

    class TestAcmeContract(DestinationContract):
        type_name = "acme"
        valid_settings = {"api_key": "k-123456789"}
        invalid_settings = [({}, "api_key")]
        secrets = ["k-123456789"]

The subclass gets every test below for free: settings validation (by path, never echoing a
value), credentials held as ``SecretStr`` and masked in anything a person reads, every call
type either encoded or declared unsupported, encoding that is deterministic and leaves events
untouched, batching within the plugin's limits, the idempotency key, (for HTTP partners)
the classification of partner statuses (retry versus dead letter, ``Retry-After``), and
privacy deletion: a request covering no event, sent and checked like any other, or a reason
why the destination cannot delete (``deletion_settings`` says which settings can).

Destinations that are not HTTP partners set ``http = False``; the status tests then skip,
and the destination's own tests cover what its writes answer.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from destinations.base import (
    AnyPlugin,
    DeletionUnsupported,
    DestinationError,
    Encoded,
    Event,
    PartnerRequest,
    PartnerResponse,
    PermanentError,
    PluginContext,
    RetryableError,
)
from destinations.http import HttpClient
from destinations.registry import get_plugin, validate_settings
from router.config import Destination

MARKER = "leak-marker-7f3a9c"

#: Segment's delivery rules (segment-compat.md section 6): None = accepted.
STATUSES: dict[int, bool | None] = {
    200: None,
    201: None,
    202: None,
    204: None,
    301: False,
    400: False,
    401: False,
    403: False,
    404: False,
    409: False,
    413: False,
    422: False,
    408: True,
    429: True,
    500: True,
    501: False,
    502: True,
    503: True,
    504: True,
    505: False,
    511: True,
}


def sample_events() -> list[Event]:
    """One event of every Segment call type, as the processor writes them."""
    base: dict[str, Any] = {
        "receivedAt": "2026-11-23T10:00:00.123Z",
        "timestamp": "2026-11-23T10:00:00.100Z",
        "sentAt": "2026-11-23T10:00:00.110Z",
        "context": {"library": {"name": "analytics-python", "version": "2.3.0"}, "ip": "10.0.0.1"},
        "integrations": {},
    }
    return [
        {
            **base,
            "type": "track",
            "messageId": "c-1",
            "userId": "u1",
            "event": "Order Completed",
            "properties": {"revenue": 12.5, "currency": "EUR", "products": [{"sku": "a"}]},
        },
        {
            **base,
            "type": "identify",
            "messageId": "c-2",
            "userId": "u1",
            "traits": {"email": "u1@example.com", "plan": "pro"},
        },
        {
            **base,
            "type": "page",
            "messageId": "c-3",
            "anonymousId": "a1",
            "name": "Home",
            "properties": {"path": "/"},
        },
        {**base, "type": "screen", "messageId": "c-4", "anonymousId": "a1", "name": "Settings"},
        {
            **base,
            "type": "group",
            "messageId": "c-5",
            "userId": "u1",
            "groupId": "g1",
            "traits": {"name": "Acme"},
        },
        {**base, "type": "alias", "messageId": "c-6", "userId": "u1", "previousId": "a1"},
    ]


class DestinationContract:
    #: The registry name of the plugin under test.
    type_name: ClassVar[str]
    #: Settings that validate.
    valid_settings: ClassVar[dict[str, Any]]
    #: (settings, sub-path the problem must be reported at).
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = []
    #: Credential values present in ``valid_settings``: must never reach what people read.
    secrets: ClassVar[list[str]] = []
    #: Batch sizes the destination supports (``delivery.batch_size``).
    batch_sizes: ClassVar[tuple[int, ...]] = (1,)
    statuses: ClassVar[dict[int, bool | None]] = STATUSES
    #: An HTTP partner: its answers are HTTP statuses and the status tests apply.
    http: ClassVar[bool] = True
    #: Settings under which the destination can delete a user's data (None: it never can).
    deletion_settings: ClassVar[dict[str, Any] | None] = None
    #: Credentials those settings add (never shown either).
    deletion_secrets: ClassVar[list[str]] = []

    # ------------------------------------------------------------ helpers

    def make_plugin(
        self, *, batch_size: int | None = None, settings: dict[str, Any] | None = None
    ) -> AnyPlugin:
        data: dict[str, Any] = {
            "id": "contract",
            "name": "Contract",
            "type": self.type_name,
            "sources": ["web"],
            "settings": self.valid_settings if settings is None else settings,
        }
        if batch_size is not None:
            data["delivery"] = {"batch_size": batch_size}
        destination = Destination.model_validate(data)
        # Encoding, classification and description never touch the network.
        return get_plugin(self.type_name)(destination, PluginContext(http=HttpClient()))

    def events(self) -> list[Event]:
        """One event of every call type the plugin takes."""
        return sample_events()

    def supported_events(self, plugin: AnyPlugin) -> list[Event]:
        return [e for e in self.events() if e["type"] in plugin.call_types]

    @staticmethod
    def encoded(plugin: AnyPlugin, events: Sequence[Event]) -> Encoded[Any]:
        result = plugin.encode(events)
        return result if isinstance(result, Encoded) else Encoded([result])

    @staticmethod
    def covered(request: Any, encoded: Encoded[Any], count: int) -> tuple[int, ...]:
        covers = getattr(request, "covers", ())
        return tuple(covers) or tuple(i for i in range(count) if i not in encoded.failed)

    def first_request(self, plugin: AnyPlugin) -> Any:
        events = self.supported_events(plugin)[:1]
        encoded = self.encoded(plugin, events)
        assert encoded.requests, "the first supported event must encode"
        return encoded.requests[0]

    def response(
        self, status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b"{}"
    ) -> PartnerResponse:
        return PartnerResponse(status=status, headers=tuple(headers), body=body, elapsed=0.01)

    def encode_each(self, plugin: AnyPlugin) -> list[Encoded[Any]]:
        return [self.encoded(plugin, [event]) for event in self.supported_events(plugin)]

    # ------------------------------------------------------------ settings

    def test_registered(self) -> None:
        assert get_plugin(self.type_name).type_name == self.type_name

    def test_valid_settings(self) -> None:
        assert validate_settings(self.type_name, self.valid_settings) == []

    def test_invalid_settings_reported_by_path(self) -> None:
        for settings, path in self.invalid_settings:
            problems = validate_settings(self.type_name, settings)
            assert problems, f"{settings} should be invalid"
            assert path in [p for p, _ in problems], f"{path} not in {problems}"

    def test_unknown_keys_rejected(self) -> None:
        problems = validate_settings(self.type_name, {**self.valid_settings, "no_such_key": 1})
        assert ("no_such_key", "unknown key") in problems

    def test_problems_never_echo_values(self) -> None:
        for key, value in self.valid_settings.items():
            if isinstance(value, str):
                # A wrong type with a recognizable value: the message must not repeat it.
                bad = {**self.valid_settings, key: [MARKER]}
                rendered = json.dumps(validate_settings(self.type_name, bad))
                assert MARKER not in rendered
        rendered = json.dumps(validate_settings(self.type_name, {MARKER: MARKER}))
        assert rendered.count(MARKER) <= 1  # the key (a path) may be named, never the value

    def test_credentials_are_secret(self) -> None:
        plugin = self.make_plugin()
        shown = repr(plugin.settings) + str(plugin.settings) + plugin.settings.model_dump_json()
        for secret in self.secrets:
            assert secret not in shown
            assert secret in plugin.secrets()

    # ------------------------------------------------------------ encoding

    def test_every_call_type_encodes_or_is_declared_unsupported(self) -> None:
        plugin = self.make_plugin()
        assert plugin.call_types, "a destination takes at least one call type"
        for event in self.events():
            if event["type"] not in plugin.call_types:
                continue
            encoded = self.encoded(plugin, [event])
            assert not encoded.failed, f"{event['type']}: {dict(encoded.failed)}"
            assert encoded.requests, f"{event['type']} encodes to no request"

    def test_encode_is_deterministic(self) -> None:
        first = self.encode_each(self.make_plugin())
        again = self.encode_each(self.make_plugin())
        assert first == again

    def test_encode_leaves_events_untouched(self) -> None:
        plugin = self.make_plugin()
        events = self.supported_events(plugin)
        before = copy.deepcopy(events)
        for event in events:
            plugin.encode([event])
        plugin.encode(events[: plugin.batch_size])
        assert events == before

    def test_requests_cover_every_event_once(self) -> None:
        plugin = self.make_plugin(batch_size=plugin_batch(self))
        events = self.supported_events(plugin)
        events = (events * plugin.batch_size)[: plugin.batch_size]
        events = [{**e, "messageId": f"m-{i}"} for i, e in enumerate(events)]
        encoded = self.encoded(plugin, events)
        seen: list[int] = list(encoded.failed)
        for request in encoded.requests:
            seen.extend(self.covered(request, encoded, len(events)))
        assert sorted(seen) == list(range(len(events)))

    def test_batches_within_limits(self) -> None:
        plugin = self.make_plugin(batch_size=10_000 if self.batch_sizes != (1,) else 1)
        assert 1 <= plugin.batch_size <= plugin.max_batch_size
        for size in self.batch_sizes:
            if size == 1:
                continue
            plugin = self.make_plugin(batch_size=size)
            events = (self.supported_events(plugin) * size)[: plugin.batch_size]
            assert self.encoded(plugin, events) == self.encoded(plugin, events)

    def test_idempotency_key(self) -> None:
        plugin = self.make_plugin()
        if not plugin.accepts_idempotency_key:
            pytest.skip("the partner takes no idempotency key")
        for event, encoded in zip(
            self.supported_events(plugin), self.encode_each(plugin), strict=True
        ):
            request = encoded.requests[0]
            assert isinstance(request, PartnerRequest)
            assert event["messageId"] in [value for _, value in request.headers]

    # ------------------------------------------------------------ partner answers

    def test_status_classification(self) -> None:
        if not self.http:
            pytest.skip("not an HTTP partner")
        plugin = self.make_plugin()
        request = self.first_request(plugin)
        for status, retriable in self.statuses.items():
            response = self.response(status)
            if retriable is None:
                assert not plugin.check(request, response)
                continue
            expected = RetryableError if retriable else PermanentError
            with pytest.raises(expected) as caught:
                plugin.check(request, response)
            assert caught.value.retriable is retriable, status
            assert caught.value.response is response

    def test_retry_after_honoured(self) -> None:
        if not self.http:
            pytest.skip("not an HTTP partner")
        plugin = self.make_plugin()
        request = self.first_request(plugin)
        with pytest.raises(RetryableError) as caught:
            plugin.check(request, self.response(429, [("Retry-After", "7")]))
        assert caught.value.retry_after == 7.0
        with pytest.raises(RetryableError) as caught:
            plugin.check(
                request, self.response(503, [("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")])
            )
        assert caught.value.retry_after == 0.0  # a date in the past: retry on the normal schedule

    def test_descriptions_hide_credentials(self) -> None:
        plugin = self.make_plugin()
        request = self.first_request(plugin)
        echoed = ("|".join(self.secrets)).encode()
        response = self.response(
            401, [("Set-Cookie", "session=abc123456")], body=b"bad key " + echoed
        )
        shown = json.dumps([plugin.describe_request(request), plugin.describe_response(response)])
        for secret in self.secrets:
            assert secret not in shown
        assert "abc123456" not in shown

    # ------------------------------------------------------------ privacy deletion

    def test_deletion_is_a_request_or_a_reason(self) -> None:
        plugin = self.make_plugin(settings=self.deletion_settings or self.valid_settings)
        request = plugin.deletion_request("user-7")
        if self.deletion_settings is None:
            assert isinstance(request, DeletionUnsupported)
            assert len(request.reason) > 10  # a sentence a person can act on
            return
        assert not isinstance(request, DeletionUnsupported), request.reason
        assert tuple(getattr(request, "covers", ())) == ()  # it covers no event
        assert plugin.deletion_request("user-7") == request
        shown = json.dumps(plugin.describe_request(request))
        for secret in self.secrets + self.deletion_secrets:
            assert secret not in shown
        assert self.deletion_secrets == [] or all(
            secret in plugin.secrets() for secret in self.deletion_secrets
        )
        if not self.http:
            return
        assert not plugin.check(request, self.response(200))
        with pytest.raises(RetryableError):
            plugin.check(request, self.response(503))
        with pytest.raises(PermanentError):
            plugin.check(request, self.response(401))

    def test_deletion_without_its_settings_says_why(self) -> None:
        if self.deletion_settings is None or self.deletion_settings == self.valid_settings:
            pytest.skip("deletion needs no settings beyond the valid ones")
        request = self.make_plugin().deletion_request("user-7")
        assert isinstance(request, DeletionUnsupported)
        assert "settings." in request.reason  # names the setting to add


def plugin_batch(contract: DestinationContract) -> int | None:
    """The largest batch size the contract declares (None: the plugin's default)."""
    sizes = [size for size in contract.batch_sizes if size > 1]
    return max(sizes) if sizes else None


__all__ = ["MARKER", "STATUSES", "DestinationContract", "DestinationError", "sample_events"]
