"""System checks for a misconfigured chatauth (``manage.py check [--deploy]``)."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from chatauth.conf import IMPORT_STRINGS, settings

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_SECRET_BYTES = 32


@register(Tags.security)
def check_secret(app_configs: Any = None, **kwargs: Any) -> list:
    settings.reload()
    errors: list = []
    secret = settings.SECRET
    if not secret:
        if not django_settings.DEBUG:
            errors.append(
                Error(
                    "chatauth has no signing secret.",
                    hint="Set CHATAUTH['SECRET'] or the CHATAUTH_SECRET (or "
                    "CHAINLIT_AUTH_SECRET) environment variable to a random "
                    "string of at least 32 bytes (e.g. `chainlit create-secret`).",
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


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list:
    errors: list = []
    unknown = set(getattr(django_settings, "CHATAUTH", None) or {}) - set(
        settings.defaults
    )
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


@register(Tags.security, deploy=True)
def check_deploy(app_configs: Any = None, **kwargs: Any) -> list:
    errors: list = []
    from django.core.cache import caches

    backend = type(caches[settings.CACHE_ALIAS]).__name__
    if backend in ("LocMemCache", "DummyCache"):
        errors.append(
            Warning(
                f"chatauth's cache ({settings.CACHE_ALIAS!r}) is a {backend}.",
                hint="With several worker processes, use a shared cache (Redis) so "
                "a revocation is seen by every worker within one request.",
                id="chatauth.W005",
            )
        )
    layers = getattr(django_settings, "CHANNEL_LAYERS", {}) or {}
    layer = layers.get("default", {}).get("BACKEND", "")
    if not layer or layer.endswith("InMemoryChannelLayer"):
        errors.append(
            Warning(
                "The channel layer is missing or in-memory.",
                hint="Use channels_redis so logout closes chat sessions on every "
                "worker.",
                id="chatauth.W006",
            )
        )
    if settings.AUTH_COOKIE_SECURE is False:
        errors.append(
            Warning(
                "CHATAUTH['AUTH_COOKIE_SECURE'] is False.",
                hint="The access-token cookie would be sent over plain HTTP.",
                id="chatauth.W007",
            )
        )
    return errors


#: How long channels_redis's RedisChannelLayer blocks on Redis for a message.
LAYER_BLOCK_SECONDS = 5


@register(Tags.compatibility)
def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list:
    """A Redis channel layer whose read timeout is not longer than its blocking
    read: under load the layer fails now and then, and every chat socket on the
    worker closes with 1011 (redis-py 8 defaults the timeout to 5 s)."""
    errors: list = []
    layers = getattr(django_settings, "CHANNEL_LAYERS", {}) or {}
    for alias, layer in layers.items():
        if not str(layer.get("BACKEND", "")).endswith("core.RedisChannelLayer"):
            continue
        hosts = (layer.get("CONFIG") or {}).get("hosts") or ["redis://localhost"]
        for host in hosts:
            timeout = _socket_timeout(host)
            if timeout is not None and timeout <= LAYER_BLOCK_SECONDS:
                errors.append(
                    Warning(
                        f"CHANNEL_LAYERS[{alias!r}] reads Redis with a "
                        f"{timeout:g} s socket timeout, no longer than the "
                        f"{LAYER_BLOCK_SECONDS} s the layer blocks for a message.",
                        hint='Give the host a longer one, e.g. {"address": '
                        '"redis://...", "socket_timeout": 30}.',
                        id="chatauth.W008",
                    )
                )
    return errors


def _socket_timeout(host: Any) -> float | None:
    """The read timeout redis-py will use for a channels_redis ``hosts`` entry."""
    from urllib.parse import parse_qs, urlsplit

    if isinstance(host, dict) and "socket_timeout" in host:
        value = host["socket_timeout"]
        return None if value is None else float(value)
    address = host.get("address") if isinstance(host, dict) else host
    if isinstance(address, str):
        query = parse_qs(urlsplit(address).query)
        if query.get("socket_timeout"):
            try:
                return float(query["socket_timeout"][0])
            except ValueError:
                return None
    return _redis_default_socket_timeout()


def _redis_default_socket_timeout() -> float | None:
    import inspect

    try:
        from redis.asyncio.connection import AbstractConnection
    except ImportError:  # pragma: no cover - channels_redis needs redis
        return None
    parameters = inspect.signature(AbstractConnection.__init__).parameters
    default = parameters.get("socket_timeout")
    if default is None or default.default in (None, inspect.Parameter.empty):
        return None
    return float(default.default)
