"""GA4's rules for names and values, and how a Segment name is made to follow them.

Google Analytics drops (silently, with a 2xx) an event whose name breaks these rules, and
ignores parameters and user properties past its limits:

- event and parameter names: at most 40 characters, letters (any language's), digits and
  underscores, starting with a letter; not starting with ``_``, ``firebase_``, ``ga_``,
  ``google_`` or ``gtag.``; event names not among the reserved ones below;
- user property names: at most 24 characters, same alphabet and prefixes, not reserved;
- at most 25 parameters per event, 25 user properties, 25 events per request, 200 items
  per event; string parameter values at most 100 characters, user property values 36.

A Segment name becomes legal by lowercasing, turning every run of other characters into one
``_``, prefixing ``x_`` when it would start with something other than a letter or with a
reserved prefix, and cutting to the length limit (``Order Shipped!`` -> ``order_shipped``).
"""

from __future__ import annotations

import re
from typing import Any

EVENT_NAME = re.compile(r"^[^\W\d_]\w{0,39}$")
MAX_NAME = 40
MAX_USER_PROPERTY_NAME = 24
MAX_PARAM_VALUE = 100
MAX_USER_PROPERTY_VALUE = 36
MAX_PARAMS = 25
MAX_USER_PROPERTIES = 25
MAX_EVENTS = 25
MAX_ITEMS = 200
MAX_ITEM_CUSTOM_PARAMS = 27
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
#: Event names the Measurement Protocol reserves.
RESERVED_EVENTS = frozenset(
    {
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_impression",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_background",
        "app_clear_data",
        "app_exception",
        "app_install",
        "app_remove",
        "app_store_refund",
        "app_update",
        "app_upgrade",
        "dynamic_link_app_open",
        "dynamic_link_app_update",
        "dynamic_link_first_open",
        "error",
        "first_open",
        "first_visit",
        "in_app_purchase",
        "notification_dismiss",
        "notification_foreground",
        "notification_open",
        "notification_receive",
        "notification_send",
        "os_update",
        "screen_view",
        "session_start",
        "user_engagement",
    }
)
RESERVED_USER_PROPERTIES = frozenset(
    {
        "first_open_time",
        "first_visit_time",
        "last_deep_link_referrer",
        "user_id",
        "first_open_after_install",
    }
)
_OTHER = re.compile(r"[\W_]+")


def is_reserved_event(name: str) -> bool:
    return name in RESERVED_EVENTS or name.startswith(RESERVED_PREFIXES)


def legal_name(raw: str, *, limit: int = MAX_NAME, reserved: frozenset[str] = frozenset()) -> str:
    """``raw`` as a GA4-legal name of at most ``limit`` characters (see the module doc)."""
    name = _OTHER.sub("_", raw.lower()).strip("_")
    if not name:
        name = "x"
    if not name[0].isalpha() or name.startswith(RESERVED_PREFIXES) or name in reserved:
        name = f"x_{name}"
    return name[:limit].rstrip("_") or "x"


def event_name(raw: str) -> str:
    return legal_name(raw, reserved=RESERVED_EVENTS)


def param_value(value: Any, *, limit: int = MAX_PARAM_VALUE) -> str | int | float | None:
    """A value GA4 takes as a parameter: numbers as they are, strings cut, booleans as text;
    None for what GA4 cannot take (objects, arrays, null)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, str):
        return value[:limit]
    return None
