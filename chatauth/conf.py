"""The one place chatauth reads its settings.

Everything lives in a single ``CHATAUTH`` dict in the Django settings.  Values are
read when used, never captured at import time, and :func:`reload` (connected to
``setting_changed``) clears the cached attributes *in place*, so
``from chatauth.conf import settings`` stays valid under ``override_settings``.

Usage::

    from chatauth.conf import settings
    settings.ACCESS_TOKEN_LIFETIME
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # --- Signing ---------------------------------------------------------------
    # Falls back to $CHATAUTH_SECRET, then $CHAINLIT_AUTH_SECRET (see ``SECRET``).
    "SECRET": None,
    # Earlier secrets still accepted for verification (never for signing), so a
    # secret can be rotated without logging everybody out.  Empty by default.
    "PREVIOUS_SECRETS": [],
    "ALGORITHM": "HS256",
    "LEEWAY": timedelta(seconds=10),
    "ISSUER": None,
    "AUDIENCE": None,
    # --- Lifetimes (DESIGN.md defaults) ----------------------------------------
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=15),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=7),
    "COPILOT_TOKEN_LIFETIME": timedelta(days=15),
    # --- Chainlit compatibility ---------------------------------------------------
    "ACCEPT_CHAINLIT_TOKENS": True,
    # A Chainlit token carries no ``iat``; for logout-everywhere it is taken to have
    # been issued this long before its ``exp`` (Chainlit's own default lifetime).
    "CHAINLIT_TOKEN_LIFETIME": timedelta(days=15),
    # --- Hooks and extension points (import strings) ---------------------------
    "HOOKS": None,  # a module holding the @chatauth.* callbacks
    "AUTODISCOVER_HOOKS": True,  # import ``chat_hooks`` from installed apps
    "ADAPTER": "chatauth.adapter.DefaultAdapter",
    "ON_MESSAGE": "chatauth.handlers.echo",
    # --- Login throttling ------------------------------------------------------
    "LOGIN_FAILURE_LIMIT": 10,
    "LOGIN_FAILURE_WINDOW": timedelta(minutes=5),
    # --- Cache / revocation ----------------------------------------------------
    "CACHE_ALIAS": "default",
    "CACHE_PREFIX": "chatauth",
    # How long a "this token is not revoked" answer may be served from the cache
    # before the database is asked again.
    "DENYLIST_CACHE_TTL": timedelta(minutes=5),
    # How many tokens whose signature was checked are remembered in each process
    # (exact string, until it expires; revocation is still checked on every
    # use): a token presented again skips PyJWT.  0 turns it off.
    "VERIFIED_TOKEN_CACHE_SIZE": 4096,
    # --- HTTP ------------------------------------------------------------------
    "AUTH_COOKIE": "chatauth_access",
    "AUTH_COOKIE_SECURE": None,  # None: secure unless DEBUG
    "AUTH_COOKIE_SAMESITE": "Lax",
    "FRONTEND_URL": "/",
    "MAX_METADATA_BYTES": 16 * 1024,
    "MAX_BODY_BYTES": 64 * 1024,
    # --- WebSocket -------------------------------------------------------------
    "ALLOWED_ORIGINS": [],
    "AUTH_TIMEOUT": 10,
    "MAX_MESSAGE_BYTES": 64 * 1024,
    "MESSAGE_RATE": (30, 10),  # at most 30 messages per 10 seconds
    "MAX_PROTOCOL_ERRORS": 5,
    "ALLOW_QUERY_STRING_TOKEN": False,
    "HEARTBEAT_INTERVAL": 30,
    # --- Header / OAuth login --------------------------------------------------
    "TRUSTED_PROXIES": [],
    "OAUTH_PROVIDERS": {},
    # Seconds any one call to an OAuth provider may take (connect, read, write,
    # pool): a hung provider becomes a clean refusal, not a stuck worker.
    "OAUTH_TIMEOUT": 10,
    # How long a started OAuth login (its state, PKCE verifier and nonce, kept in
    # the session) may take before the callback refuses it.
    "OAUTH_STATE_LIFETIME": timedelta(minutes=10),
    # The built-in header callback, chatauth.contrib.proxy_header_auth (enable it
    # with "HOOKS": "chatauth.contrib.proxy_header_auth").  "proxy": which reverse
    # proxy sets the identity headers ("oauth2-proxy", "authelia", "cloudflare");
    # "headers": per-field overrides of its header names (user, email, name,
    # groups); "identifier": "email" or "user" first; "groups": if not empty, a
    # user must be in one of them.  Only that one proxy's headers are read.
    "PROXY_HEADER_AUTH": {
        "proxy": "oauth2-proxy",
        "headers": {},
        "identifier": "email",
        "groups": [],
    },
}

IMPORT_STRINGS = ("ADAPTER", "ON_MESSAGE")
TIMEDELTAS = (
    "LEEWAY",
    "ACCESS_TOKEN_LIFETIME",
    "REFRESH_TOKEN_LIFETIME",
    "COPILOT_TOKEN_LIFETIME",
    "CHAINLIT_TOKEN_LIFETIME",
    "LOGIN_FAILURE_WINDOW",
    "DENYLIST_CACHE_TTL",
    "OAUTH_STATE_LIFETIME",
)


class ChatAuthSettings:
    """Attribute access to ``settings.CHATAUTH`` merged over :data:`DEFAULTS`."""

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults = defaults or DEFAULTS
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(django_settings, "CHATAUTH", None) or {}

    def __getattr__(self, name: str) -> Any:
        if name not in self.defaults:
            raise AttributeError(f"Invalid chatauth setting: {name!r}")
        value = self.user_settings.get(name, self.defaults[name])
        if name == "SECRET" and not value:
            value = os.environ.get("CHATAUTH_SECRET") or os.environ.get(
                "CHAINLIT_AUTH_SECRET"
            )
        elif name in TIMEDELTAS and isinstance(value, int | float):
            value = timedelta(seconds=value)
        elif name in IMPORT_STRINGS and isinstance(value, str):
            value = _import(value, name)
        self._cached.add(name)
        setattr(self, name, value)
        return value

    def reload(self) -> None:
        for name in self._cached:
            self.__dict__.pop(name, None)
        self._cached.clear()
        from chatauth import tokens  # local: tokens imports this module
        from chatauth.internal import cache, signed

        tokens.reset_backend()
        cache.reset()
        signed.clear()


def _import(path: str, setting: str) -> Any:
    try:
        return import_string(path)
    except ImportError as e:
        raise ImproperlyConfigured(
            f"Could not import {path!r} for CHATAUTH[{setting!r}]: {e}"
        ) from e


settings = ChatAuthSettings()


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in ("CHATAUTH", "CACHES"):
        settings.reload()
