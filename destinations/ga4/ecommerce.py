"""Segment's e-commerce spec -> GA4's recommended events, their parameters and ``items``.

- Products Searched -> search: search_term (query);
- Product List Viewed / Filtered -> view_item_list: item_list_id (list_id), item_list_name
  (category), items (products);
- Product Clicked -> select_item: item_list_id, item_list_name, items (the product);
- Product Viewed / Added / Removed / Added to Wishlist -> view_item / add_to_cart /
  remove_from_cart / add_to_wishlist: currency, value, items (the product);
- Product Shared -> share: method (share_via), content_type "product", item_id;
- Cart Viewed / Checkout Started -> view_cart / begin_checkout: currency, value, coupon, items;
- Shipping Info Entered -> add_shipping_info: ... shipping_tier (shipping_method);
- Payment Info Entered -> add_payment_info: ... payment_type (payment_method);
- Order Completed / Order Refunded -> purchase / refund: transaction_id (order_id), currency,
  value, tax, shipping, coupon, affiliation, items;
- Promotion Viewed / Clicked -> view_promotion / select_promotion: promotion_id,
  promotion_name (name), creative_name (creative), creative_slot (position);
- Signed Up / Signed In -> sign_up / login: method (method, else type).

``value`` is ``revenue``, else ``total``, else ``value``, else price x quantity for one
product; ``currency`` defaults to USD when a value is sent (GA4 needs both). An item is a
product's ``product_id`` (else ``sku``, else ``id``) as item_id, name, brand, category,
variant, price, quantity, coupon, position as index, plus its other plain fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from destinations.ga4.names import MAX_ITEM_CUSTOM_PARAMS, MAX_ITEMS, legal_name, param_value
from destinations.segment import number, text

EVENTS: Mapping[str, str] = {
    "Products Searched": "search",
    "Product List Viewed": "view_item_list",
    "Product List Filtered": "view_item_list",
    "Product Clicked": "select_item",
    "Product Viewed": "view_item",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Product Added to Wishlist": "add_to_wishlist",
    "Product Shared": "share",
    "Cart Viewed": "view_cart",
    "Checkout Started": "begin_checkout",
    "Shipping Info Entered": "add_shipping_info",
    "Payment Info Entered": "add_payment_info",
    "Order Completed": "purchase",
    "Order Refunded": "refund",
    "Promotion Viewed": "view_promotion",
    "Promotion Clicked": "select_promotion",
    "Signed Up": "sign_up",
    "Signed In": "login",
}
#: Events about one product, whose properties are the product itself.
SINGLE_PRODUCT = frozenset(
    {"select_item", "view_item", "add_to_cart", "remove_from_cart", "add_to_wishlist"}
)
WITH_VALUE = frozenset(
    {
        "view_item",
        "add_to_cart",
        "remove_from_cart",
        "add_to_wishlist",
        "view_cart",
        "begin_checkout",
        "add_shipping_info",
        "add_payment_info",
        "purchase",
        "refund",
    }
)
#: Segment product fields -> GA4 item parameters.
ITEM_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("item_id", ("product_id", "sku", "id")),
    ("item_name", ("name",)),
    ("item_brand", ("brand",)),
    ("item_category", ("category",)),
    ("item_variant", ("variant",)),
    ("price", ("price",)),
    ("quantity", ("quantity",)),
    ("coupon", ("coupon",)),
    ("index", ("position",)),
    ("affiliation", ("affiliation",)),
)
_ITEM_SOURCES = frozenset(source for _, sources in ITEM_FIELDS for source in sources)
#: Properties an e-commerce mapping consumes (not repeated as custom parameters).
CONSUMED = frozenset(
    {
        "products",
        "order_id",
        "checkout_id",
        "revenue",
        "total",
        "value",
        "currency",
        "tax",
        "shipping",
        "coupon",
        "affiliation",
        "query",
        "list_id",
        "category",
        "promotion_id",
        "creative",
        "position",
        "share_via",
        "method",
        "type",
        "shipping_method",
        "payment_method",
    }
    | _ITEM_SOURCES
)


def item(product: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target, sources in ITEM_FIELDS:
        for source in sources:
            value = param_value(product.get(source))
            if value is not None:
                out[target] = value
                break
    custom = 0
    for key, raw in product.items():
        if key in _ITEM_SOURCES or custom >= MAX_ITEM_CUSTOM_PARAMS:
            continue
        value = param_value(raw)
        if value is not None:
            out.setdefault(legal_name(key), value)
            custom += 1
    return out


def items_of(name: str, properties: Mapping[str, Any]) -> list[dict[str, Any]]:
    if name in SINGLE_PRODUCT:
        return [item(properties)]
    products = properties.get("products")
    if not isinstance(products, list):
        return []
    return [item(p) for p in products[:MAX_ITEMS] if isinstance(p, dict)]


def _value(name: str, properties: Mapping[str, Any]) -> float | None:
    for field in ("revenue", "total", "value"):
        found = number(properties.get(field))
        if found is not None:
            return found
    if name in SINGLE_PRODUCT:
        price = number(properties.get("price"))
        if price is not None:
            quantity = number(properties.get("quantity"))
            return price * (quantity if quantity is not None else 1)
    return None


def params_for(name: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    """The recommended parameters of GA4 event ``name`` from Segment ``properties``."""
    params: dict[str, Any] = {}

    def put(target: str, *sources: str) -> None:
        for source in sources:
            value = param_value(properties.get(source))
            if value is not None:
                params[target] = value
                return

    if name in WITH_VALUE:
        value = _value(name, properties)
        if value is not None:
            params["currency"] = text(properties.get("currency")) or "USD"
            params["value"] = value
        else:
            put("currency", "currency")
        put("coupon", "coupon")
    if name in ("purchase", "refund"):
        put("transaction_id", "order_id", "checkout_id")
        put("tax", "tax")
        put("shipping", "shipping")
        put("affiliation", "affiliation")
    elif name == "search":
        put("search_term", "query")
    elif name in ("view_item_list", "select_item"):
        put("item_list_id", "list_id")
        put("item_list_name", "category")
    elif name in ("view_promotion", "select_promotion"):
        put("promotion_id", "promotion_id", "id")
        put("promotion_name", "name")
        put("creative_name", "creative")
        put("creative_slot", "position")
    elif name in ("sign_up", "login"):
        put("method", "method", "type")
    elif name == "share":
        put("method", "share_via")
        params["content_type"] = "product"
        put("item_id", "product_id", "sku", "id")
    elif name == "add_shipping_info":
        put("shipping_tier", "shipping_method")
    elif name == "add_payment_info":
        put("payment_type", "payment_method")
    return params
