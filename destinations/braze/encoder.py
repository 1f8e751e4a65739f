"""Segment events -> Braze ``/users/track`` requests (pure: same events, same bytes).

What Braze takes (its REST API reference): ``POST /users/track`` with ``Authorization: Bearer
<REST API key>`` and ``{"attributes": [...], "events": [...], "purchases": [...]}``. Every
object names one user: ``external_id``, a ``user_alias`` (``alias_name`` + ``alias_label``),
``braze_id``, ``email`` or ``phone``. Events need ``name`` and ``time`` (ISO 8601); purchases
``product_id``, ``currency`` (ISO 4217), ``price``, ``time`` and optionally ``quantity``
(at most 100). An alias-only user is created only by an attributes object with
``_update_existing_only: false``; events and purchases for an alias only reach an existing
user. At most 75 objects per request (see ``config.MAX_OBJECTS``).

Mapping (Segment's Braze destination): identify -> an attributes object (traits, with
Segment's reserved traits renamed to Braze's standard attributes); track -> an events object;
"Order Completed" with ``products`` -> one purchases object per product; group -> the
attribute ``ab_segment_group_<groupId>: true``. Users are ``external_id`` = ``userId``, else
the alias ``{alias_name: anonymousId, alias_label: <alias_label>}``. One event may become
several objects (an order's products); an event's objects always travel in one request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from destinations.base import DestinationError, Encoded, EncodeError, Event, PartnerRequest
from destinations.braze.config import BrazeSettings
from destinations.segment import identifier, object_copy

TRACK_PATH = "/users/track"
DELETE_PATH = "/users/delete"
ARRAYS = ("attributes", "events", "purchases")
ORDER_COMPLETED = "Order Completed"

#: Segment's reserved traits -> Braze standard attributes (the rest stay custom attributes).
STANDARD_TRAITS: dict[str, str] = {
    "email": "email",
    "phone": "phone",
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "birthday": "dob",
    "avatar": "image_url",
    "gender": "gender",
}
_GENDERS = {
    "m": "M",
    "male": "M",
    "man": "M",
    "f": "F",
    "female": "F",
    "woman": "F",
    "o": "O",
    "other": "O",
    "n": "N",
    "not applicable": "N",
    "p": "P",
    "prefer not to say": "P",
}

OptionsFor = Callable[[Event], Mapping[str, Any]]
BrazeObject = tuple[str, dict[str, Any]]  # (array name, object)


@dataclass(frozen=True, slots=True)
class BrazeRequest(PartnerRequest):
    """A ``/users/track`` request and, per array, which event each object came from.

    ``owners[array][i]`` is the index into ``covers`` of the event whose object is at
    ``array[i]``: Braze reports refused objects by array and index.
    """

    owners: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def owner(self, array: str, index: int) -> int | None:
        for name, owners in self.owners:
            if name == array:
                return owners[index] if 0 <= index < len(owners) else None
        return None


class MissingIdentity(EncodeError):
    """The event names no user Braze can attach it to."""

    reason = "missing_identity"


class TooManyObjects(EncodeError):
    """One event becomes more objects than one request may carry."""

    reason = "too_large"


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _date(value: Any) -> str | None:
    """``YYYY-MM-DD`` from an ISO date or date-time (Braze's ``dob`` format)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).date().isoformat()
    except ValueError:
        return None


def event_time(event: Event) -> str:
    """The event's ``timestamp`` (else ``receivedAt``) as ISO 8601 in UTC."""
    for field in ("timestamp", "receivedAt"):
        raw = event.get(field)
        if isinstance(raw, str):
            try:
                moment = datetime.fromisoformat(raw)
            except ValueError:
                continue
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    raise EncodeError("the event has no readable timestamp or receivedAt for Braze's time")


class BrazeEncoder:
    """Builds ``/users/track`` requests for a batch; see the module docstring for the mapping."""

    def __init__(self, settings: BrazeSettings, *, options_for: OptionsFor) -> None:
        self.settings = settings
        self.options_for = options_for
        self.base_url = settings.base_url
        self.limit = settings.max_objects_per_request
        self.headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", "application/json"),
            ("Authorization", f"Bearer {settings.api_key.get_secret_value()}"),
        )

    # ------------------------------------------------------------ requests

    def encode(self, events: Sequence[Event]) -> Encoded[BrazeRequest]:
        if not events:
            raise ValueError("nothing to encode")
        failed: dict[int, DestinationError] = {}
        requests: list[BrazeRequest] = []
        pending: list[tuple[int, list[BrazeObject]]] = []
        count = 0
        for position, event in enumerate(events):
            try:
                objects = self.objects(event)
            except EncodeError as exc:
                failed[position] = exc
                continue
            if len(objects) > self.limit:
                failed[position] = TooManyObjects(
                    f"this event becomes {len(objects)} Braze objects (an order's products); "
                    f"one /users/track request takes at most {self.limit}"
                )
                continue
            if pending and count + len(objects) > self.limit:
                requests.append(self._request(events, pending))
                pending, count = [], 0
            pending.append((position, objects))
            count += len(objects)
        if pending:
            requests.append(self._request(events, pending))
        return Encoded(requests, failed)

    def _request(
        self, events: Sequence[Event], pending: list[tuple[int, list[BrazeObject]]]
    ) -> BrazeRequest:
        arrays: dict[str, list[dict[str, Any]]] = {name: [] for name in ARRAYS}
        owners: dict[str, list[int]] = {name: [] for name in ARRAYS}
        for index, (_position, objects) in enumerate(pending):
            for array, item in objects:
                arrays[array].append(item)
                owners[array].append(index)
        covers = tuple(position for position, _ in pending)
        try:
            body = orjson.dumps({name: items for name, items in arrays.items() if items})
        except orjson.JSONEncodeError as exc:  # decoded JSON always encodes; be explicit anyway
            raise EncodeError(f"event is not JSON-serializable: {exc}") from exc
        return BrazeRequest(
            method="POST",
            url=self.base_url + TRACK_PATH,
            headers=self.headers,
            body=body,
            message_ids=tuple(str(events[p].get("messageId") or "") for p in covers),
            covers=covers,
            owners=tuple((name, tuple(owners[name])) for name in ARRAYS if owners[name]),
        )

    def delete_users(self, external_ids: Sequence[str]) -> PartnerRequest:
        """``POST /users/delete`` for up to 50 ``external_id``s (privacy deletion)."""
        if not 1 <= len(external_ids) <= 50:
            raise ValueError("Braze deletes 1 to 50 external_ids per request")
        return PartnerRequest(
            method="POST",
            url=self.base_url + DELETE_PATH,
            headers=self.headers,
            body=orjson.dumps({"external_ids": list(external_ids)}),
        )

    # ------------------------------------------------------------ one event

    def objects(self, event: Event) -> list[BrazeObject]:
        """The Braze objects for one event (EncodeError when there can be none)."""
        kind = event.get("type")
        options = self.options_for(event)
        user = self._user(event, options)
        if kind == "identify":
            return [("attributes", self._attributes(event, user, options))]
        if kind == "group":
            group_id = identifier(event.get("groupId"))
            if group_id is None:
                raise EncodeError("group has no groupId")
            return [("attributes", {**user, f"ab_segment_group_{group_id}": True})]
        if kind == "track":
            return self._track(event, user, options)
        raise EncodeError(f"Braze takes no {kind!r} calls", reason="unsupported_type")

    def _user(self, event: Event, options: Mapping[str, Any]) -> dict[str, Any]:
        braze_id = identifier(options.get("braze_id"))
        if braze_id is not None:
            return {"braze_id": braze_id}
        user_id = identifier(event.get("userId"))
        if user_id is not None:
            return {"external_id": user_id}
        anonymous_id = identifier(event.get("anonymousId"))
        label = self.settings.alias_label
        if anonymous_id is not None and label is not None:
            return {"user_alias": {"alias_name": anonymous_id, "alias_label": label}}
        raise MissingIdentity(
            "the event has no userId"
            + (" nor anonymousId" if label is not None else " (anonymous users are off)")
            + ": Braze cannot attach it to a user"
        )

    def _update_only(self, options: Mapping[str, Any]) -> bool:
        wanted = options.get("update_existing_only")
        return wanted if isinstance(wanted, bool) else self.settings.update_existing_only

    def _attributes(
        self, event: Event, user: dict[str, Any], options: Mapping[str, Any]
    ) -> dict[str, Any]:
        traits = object_copy(event.get("traits"))
        item: dict[str, Any] = dict(user)
        address = traits.pop("address", None)
        if isinstance(address, dict):
            if identifier(address.get("city")):
                item["home_city"] = address["city"]
            if identifier(address.get("country")):
                item["country"] = address["country"]
        for key, value in traits.items():
            standard = STANDARD_TRAITS.get(key)
            if standard == "gender":
                # null clears Braze's gender; a value Braze has no code for is left out rather
                # than sent as null, which would clear what Braze already knows.
                gender = None if value is None else _GENDERS.get(str(value).strip().lower())
                if value is None or gender is not None:
                    item["gender"] = gender
            elif standard == "dob":
                item["dob"] = _date(value) or value
            elif standard is not None:
                item[standard] = value
            else:
                item[key] = value
        update_only = self._update_only(options)
        if "user_alias" in user or update_only:
            # Braze creates an alias-only user only when told so explicitly.
            item["_update_existing_only"] = update_only
        return item

    def _track(
        self, event: Event, user: dict[str, Any], options: Mapping[str, Any]
    ) -> list[BrazeObject]:
        name = identifier(event.get("event"))
        if name is None:
            raise EncodeError("track has no event name")
        properties = object_copy(event.get("properties"))
        time = event_time(event)
        common: dict[str, Any] = dict(user)
        app_id = identifier(options.get("app_id")) or self.settings.app_id
        if app_id is not None:
            common["app_id"] = app_id
        if self._update_only(options):
            common["_update_existing_only"] = True
        products = properties.get("products")
        if name == ORDER_COMPLETED and self.settings.purchases and isinstance(products, list):
            purchases = self._purchases(properties, products, common, time)
            if purchases:
                return purchases
        item = {**common, "name": name, "time": time}
        if properties:
            item["properties"] = properties
        return [("events", item)]

    @staticmethod
    def _purchases(
        properties: dict[str, Any],
        products: list[Any],
        common: dict[str, Any],
        time: str,
    ) -> list[BrazeObject]:
        """One purchase per product; none when a product lacks an id or a numeric price.

        Braze requires both, and inventing them would corrupt revenue: such an order goes to
        Braze as the custom event "Order Completed" with all its properties instead.
        """
        currency = identifier(properties.get("currency")) or "USD"
        order_id = properties.get("order_id")
        purchases: list[BrazeObject] = []
        for product in products:
            if not isinstance(product, dict):
                return []
            product_id = (
                identifier(product.get("product_id"))
                or identifier(product.get("sku"))
                or identifier(product.get("name"))
                or identifier(product.get("id"))
            )
            price = _number(product.get("price"))
            if product_id is None or price is None:
                return []
            quantity = _number(product.get("quantity"))
            extra = {
                k: v
                for k, v in product.items()
                if k not in ("product_id", "price", "quantity", "currency")
            }
            if order_id is not None:
                extra.setdefault("order_id", order_id)
            item: dict[str, Any] = {
                **common,
                "product_id": product_id,
                "currency": currency.upper(),
                "price": price,
                "time": time,
            }
            if quantity is not None:
                item["quantity"] = int(quantity)
            if extra:
                item["properties"] = extra
            purchases.append(("purchases", item))
        return purchases
