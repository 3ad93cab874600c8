"""Checks of chatauth's own settings: the signing secret and algorithm, unknown
or malformed ``CHATAUTH`` entries, the app order, and settings that break
token exchange with Chainlit."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.apps import AppConfig
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from chatauth.conf import IMPORT_STRINGS, RENAMED, TIMEDELTAS, settings

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_SECRET_BYTES = 32


@register(Tags.security)
def check_secret(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    settings.reload()
    errors: list[CheckMessage] = []
    secret = settings.SECRET
    if not secret:  # in DEBUG too: the first login would be a 500
        errors.append(
            Error(
                "chatauth has no signing secret.",
                hint="Set CHATAUTH['SECRET'] or the CHATAUTH_SECRET (or "
                "CHAINLIT_AUTH_SECRET) environment variable to a random "
                'string of at least 32 bytes: python -c "import secrets; '
                'print(secrets.token_urlsafe(48))" (or `chainlit create-secret`).',
                id="chatauth.E001",
            )
        )
    elif len(str(secret).encode()) < MIN_SECRET_BYTES:
        errors.append(
            Warning(
                f"chatauth's signing secret is shorter than {MIN_SECRET_BYTES} bytes.",
                hint="An HMAC key shorter than the hash output is easier to "
                "brute-force offline from one captured token (RFC 7518 §3.2).",
                id="chatauth.W001",
            )
        )
    if settings.ALGORITHM not in HMAC_ALGORITHMS:
        errors.append(
            Error(
                f"CHATAUTH['ALGORITHM'] = {settings.ALGORITHM!r} is not supported.",
                hint=f"Use one of {', '.join(HMAC_ALGORITHMS)}: chatauth signs with "
                "a shared secret, as Chainlit does.",
                id="chatauth.E002",
            )
        )
    return errors


def _chainlit_interop() -> list[CheckMessage]:
    """Settings that break token exchange with Chainlit while it is on."""
    if not settings.ACCEPT_CHAINLIT_TOKENS:
        return []
    errors: list[CheckMessage] = []
    if settings.AUDIENCE:
        errors.append(
            Warning(
                "CHATAUTH['AUDIENCE'] is set while ACCEPT_CHAINLIT_TOKENS is on: "
                "Chainlit refuses chatauth's tokens (PyJWT refuses an 'aud' its "
                "decoder names none for) and chatauth refuses Chainlit's (they "
                "carry no 'aud').",
                hint="Unset AUDIENCE to share tokens with a Chainlit server, or "
                "turn ACCEPT_CHAINLIT_TOKENS off if you do not.",
                id="chatauth.W021",
            )
        )
    if settings.ISSUER:
        errors.append(
            Warning(
                "CHATAUTH['ISSUER'] is set while ACCEPT_CHAINLIT_TOKENS is on: "
                "chatauth refuses every token Chainlit mints (they carry no 'iss').",
                hint="Unset ISSUER to accept Chainlit's tokens, or turn "
                "ACCEPT_CHAINLIT_TOKENS off if you do not.",
                id="chatauth.W022",
            )
        )
    return errors


@register()
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    unknown = set(getattr(django_settings, "CHATAUTH", None) or {}) - {
        *settings.defaults,
        *RENAMED.values(),
    }
    for name in sorted(unknown):
        errors.append(
            Warning(
                f"CHATAUTH[{name!r}] is not a chatauth setting and is ignored.",
                id="chatauth.W002",
            )
        )
    for name in IMPORT_STRINGS:
        try:
            getattr(settings, name)
        except ImproperlyConfigured as e:
            errors.append(Error(str(e), id="chatauth.E003"))
    for name in TIMEDELTAS:
        value = getattr(settings, name)
        if not isinstance(value, timedelta) or value < timedelta(0):
            errors.append(
                Error(
                    f"CHATAUTH[{name!r}] = {value!r} is not a duration.",
                    hint="Give a datetime.timedelta (timedelta(minutes=15)) or a "
                    "number of seconds (900).",
                    id="chatauth.E011",
                )
            )
    apps = list(getattr(django_settings, "INSTALLED_APPS", []))
    if "chatauth" in apps:
        before = [
            app
            for app in ("django.contrib.auth", "django.contrib.admin")
            if app in apps and apps.index(app) > apps.index("chatauth")
        ]
        if before:
            errors.append(
                Error(
                    f"'chatauth' comes before {' and '.join(map(repr, before))} in "
                    "INSTALLED_APPS: chatauth's admin pages for users (log out "
                    "everywhere, deactivate, chat sessions) are replaced by "
                    "Django's own.",
                    hint="List 'chatauth' after the django.contrib apps.",
                    id="chatauth.E012",
                )
            )
    errors += _chainlit_interop()
    if settings.ALLOW_QUERY_STRING_TOKEN:
        errors.append(
            Warning(
                "CHATAUTH['ALLOW_QUERY_STRING_TOKEN'] is on.",
                hint="Tokens in URLs end up in proxy and server logs and browser "
                "history; use the chatauth.bearer subprotocol instead.",
                id="chatauth.W003",
            )
        )
    for entry in settings.TRUSTED_PROXIES:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            errors.append(
                Error(
                    f"CHATAUTH['TRUSTED_PROXIES'] entry {entry!r} is not an IP "
                    "address or network.",
                    id="chatauth.E004",
                )
            )
    from chatauth.internal.http import parse_origin

    for entry in settings.ALLOWED_ORIGINS:
        if not isinstance(entry, str) or parse_origin(entry) is None:
            errors.append(
                Error(
                    f"CHATAUTH['ALLOWED_ORIGINS'] entry {entry!r} is not an origin: "
                    "it allows nothing.",
                    hint="Origins are compared exactly: write each as "
                    "scheme://host[:port] (e.g. 'https://app.example.com'), with "
                    "no wildcard, path or trailing slash.",
                    id="chatauth.E008",
                )
            )
    if settings.IDENTIFIER_CASE not in ("fold", "preserve"):
        errors.append(
            Error(
                f"CHATAUTH['IDENTIFIER_CASE'] = {settings.IDENTIFIER_CASE!r} is not "
                "'fold' or 'preserve'.",
                id="chatauth.E009",
            )
        )
    size = settings.VERIFIED_TOKEN_CACHE_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        errors.append(
            Error(
                "CHATAUTH['VERIFIED_TOKEN_CACHE_SIZE'] must be a whole number >= 0 "
                "(0 turns the cache off).",
                id="chatauth.E005",
            )
        )
    hashers = getattr(django_settings, "PASSWORD_HASHERS", [])
    if hashers and "BCrypt" not in hashers[0]:
        errors.append(
            Warning(
                "The first PASSWORD_HASHERS entry is not a bcrypt hasher.",
                hint="Put 'django.contrib.auth.hashers.BCryptSHA256PasswordHasher' "
                "first, as chatauth's design expects.",
                id="chatauth.W004",
            )
        )
    return errors
