"""A ``header_auth_callback`` for the usual reverse-proxy login, set up by settings.

Enable it by naming it as the hooks module, or import it from your own::

    CHATAUTH = {
        "HOOKS": "chatauth.contrib.proxy_header_auth",
        "TRUSTED_PROXIES": ["127.0.0.1"],          # the proxy's address
        "PROXY_HEADER_AUTH": {"proxy": "authelia", "groups": ["chat-users"]},
    }

Proxies and the headers read (case-insensitive; user, email, name, groups):

- ``oauth2-proxy``: ``X-Forwarded-User``, ``X-Forwarded-Email``,
  ``X-Forwarded-Preferred-Username``, ``X-Forwarded-Groups``;
- ``authelia``: ``Remote-User``, ``Remote-Email``, ``Remote-Name``,
  ``Remote-Groups``;
- ``cloudflare`` (Cloudflare Access): ``Cf-Access-Authenticated-User-Email`` only.
  (Cloudflare also sends a signed ``Cf-Access-Jwt-Assertion``; this callback relies
  on ``TRUSTED_PROXIES`` instead, e.g. ``cloudflared`` on the same host.)

Groups are comma-separated.  Only the configured proxy's headers are read.  A
proxy overwrites the headers it sets itself, but passes every other header of the
client through: reading, say, Authelia's ``Remote-User`` behind oauth2-proxy would
let any client name itself.
``POST auth/header`` accepts the headers only from ``TRUSTED_PROXIES``.

The user: ``identifier`` is the email (or the user name, with ``"identifier":
"user"``; each falls back to the other), ``display_name`` the name header, and
``metadata`` ``{"provider": "header", "proxy": ..., "email": ..., "groups": [...]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from chatauth.conf import settings
from chatauth.hooks import User, header_auth_callback

PROXIES: dict[str, dict[str, str | None]] = {
    "oauth2-proxy": {
        "user": "X-Forwarded-User",
        "email": "X-Forwarded-Email",
        "name": "X-Forwarded-Preferred-Username",
        "groups": "X-Forwarded-Groups",
    },
    "authelia": {
        "user": "Remote-User",
        "email": "Remote-Email",
        "name": "Remote-Name",
        "groups": "Remote-Groups",
    },
    "cloudflare": {
        "user": None,
        "email": "Cf-Access-Authenticated-User-Email",
        "name": None,
        "groups": None,
    },
}
DEFAULTS: dict[str, Any] = {
    "proxy": "oauth2-proxy",
    "headers": {},
    "identifier": "email",
    "groups": [],
}
MAX_VALUE = 255
MAX_GROUPS = 100


def config() -> dict[str, Any]:
    """``CHATAUTH["PROXY_HEADER_AUTH"]`` over the defaults, header names resolved."""
    options = {**DEFAULTS, **(settings.PROXY_HEADER_AUTH or {})}
    proxy = options["proxy"]
    if proxy not in PROXIES:
        raise ImproperlyConfigured(
            f"CHATAUTH['PROXY_HEADER_AUTH']['proxy'] = {proxy!r}: use one of "
            f"{', '.join(sorted(PROXIES))}."
        )
    options["header_names"] = {**PROXIES[proxy], **(options["headers"] or {})}
    return options


def _value(headers: Mapping[str, str], name: str | None) -> str:
    if not name:
        return ""
    value = (headers.get(name) or "").strip()
    # A value a proxy would never send (too long, control characters) is an
    # injection attempt or a misconfiguration: treat the header as absent.
    if len(value) > MAX_VALUE or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return ""
    return value


@header_auth_callback
def authenticate(headers: Mapping[str, str]) -> User | None:
    """The user the trusted proxy vouches for, or None."""
    options = config()
    names = options["header_names"]
    user = _value(headers, names.get("user"))
    email = _value(headers, names.get("email"))
    if email and "@" not in email:
        email = ""
    name = _value(headers, names.get("name"))
    groups_header = headers.get(names["groups"]) if names.get("groups") else None
    groups = [g.strip() for g in (groups_header or "").split(",") if g.strip()][
        :MAX_GROUPS
    ]
    first, second = (user, email) if options["identifier"] == "user" else (email, user)
    identifier = first or second
    if not identifier:
        return None
    required = set(options["groups"] or [])
    if required and not required.intersection(groups):
        return None
    metadata: dict[str, Any] = {"provider": "header", "proxy": options["proxy"]}
    if email:
        metadata["email"] = email
    if groups:
        metadata["groups"] = groups
    return User(
        identifier=identifier, display_name=name or user or None, metadata=metadata
    )
