"""Checks of what a chat socket needs besides chatauth's settings: a channel
layer, an ASGI application that routes ``ws/chat/``, and a Redis layer whose
timeouts and connection pool hold under load."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register


def _redis_layer_hosts() -> Iterator[tuple[str, Any]]:
    """``(alias, host)`` for each host of each Redis channel layer."""
    layers = getattr(django_settings, "CHANNEL_LAYERS", {}) or {}
    for alias, layer in layers.items():
        if str(layer.get("BACKEND", "")).endswith("core.RedisChannelLayer"):
            config = layer.get("CONFIG") or {}
            for host in config.get("hosts") or ["redis://localhost"]:
                yield alias, host


@register(Tags.compatibility)
def check_asgi(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """What a chat socket needs besides the settings: a channel layer (DEBUG
    has an in-memory one by default, see ``chatauth.apps``) and an ASGI
    application that routes ``ws/chat/`` to chatauth."""
    errors: list[CheckMessage] = []
    layers = getattr(django_settings, "CHANNEL_LAYERS", None) or {}
    if "default" not in layers:
        errors.append(
            Error(
                "CHANNEL_LAYERS has no 'default' layer: chat sockets cannot open "
                "(they close with 1011) and logouts cannot reach them.",
                hint="Set CHANNEL_LAYERS to channels_redis's RedisChannelLayer "
                '(or, on one process, {"default": {"BACKEND": '
                '"channels.layers.InMemoryChannelLayer"}}).',
                id="chatauth.E013",
            )
        )
    path, application = _asgi_application()
    if application is not None and not _routes_chat(application):
        errors.append(
            Warning(
                f"The ASGI application {path} does not route chatauth's chat "
                "socket: WebSocket handshakes to ws/chat/ fail.",
                hint="In the project's asgi.py: 'from chatauth.asgi import "
                "get_asgi_application' instead of Django's, or include "
                "chatauth.routing.websocket_urlpatterns in its ProtocolTypeRouter.",
                id="chatauth.W019",
            )
        )
    return errors


def _asgi_application() -> tuple[str, Any]:
    """The project's ASGI application: ``ASGI_APPLICATION``, else
    ``<the package of ROOT_URLCONF>.asgi.application`` (startproject's layout);
    ``None`` when it cannot be imported (Django or the server says why)."""
    from django.utils.module_loading import import_string

    path = getattr(django_settings, "ASGI_APPLICATION", None)
    if not path:
        package = str(getattr(django_settings, "ROOT_URLCONF", "")).rpartition(".")[0]
        if not package:
            return "", None
        path = f"{package}.asgi.application"
    try:
        return path, import_string(path)
    except Exception:  # an import error is the server's to report, not a check's
        return path, None


def _routes_chat(application: Any, depth: int = 0) -> bool:
    """Whether ``application`` leads to chatauth's ``ChatConsumer`` (or a
    subclass) through Channels' routers and middleware."""
    from chatauth.consumers import ChatConsumer

    consumer = getattr(application, "consumer_class", None)
    if isinstance(consumer, type) and issubclass(consumer, ChatConsumer):
        return True
    if depth > 20:
        return False
    inner: list[object] = []
    mapping = getattr(application, "application_mapping", None)
    if isinstance(mapping, dict):
        inner.append(mapping.get("websocket"))
    inner.extend(getattr(application, "routes", None) or [])
    for name in ("inner", "application", "app", "callback"):
        inner.append(getattr(application, name, None))
    return any(
        _routes_chat(item, depth + 1)
        for item in inner
        if item is not None and item is not application
    )


#: How long channels_redis's RedisChannelLayer blocks on Redis for a message.
LAYER_BLOCK_SECONDS = 5


@register(Tags.compatibility)
def check_channel_layer(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """A Redis channel layer whose read timeout is not longer than its blocking
    read: under load the layer fails now and then, and every chat socket on the
    worker closes with 1011 (redis-py 8 defaults the timeout to 5 s)."""
    errors: list[CheckMessage] = []
    for alias, host in _redis_layer_hosts():
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


#: What a Redis channel layer needs at least: each concurrent send, receive
#: and group change takes a connection from its pool.
MIN_LAYER_CONNECTIONS = 200


@register(Tags.compatibility)
def check_channel_layer_pool(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """A Redis channel layer whose connection pool is small: redis-py 8.1 caps
    a pool at 100 connections unless told otherwise, and past that a burst of
    chat sockets is refused (1011) and closing ones cannot leave their groups."""
    errors: list[CheckMessage] = []
    for alias, host in _redis_layer_hosts():
        size = _pool_size(host)
        if size is not None and size < MIN_LAYER_CONNECTIONS:
            errors.append(
                Warning(
                    f"CHANNEL_LAYERS[{alias!r}] may open only {size} Redis "
                    "connections per worker: a burst of chat sockets past "
                    "that is refused.",
                    hint='Give the host more, e.g. {"address": "redis://...", '
                    '"max_connections": 1000}.',
                    id="chatauth.W011",
                )
            )
    return errors


def _pool_size(host: Any) -> int | None:
    """The connection cap redis-py will give a channels_redis ``hosts`` entry."""
    if isinstance(host, dict) and host.get("max_connections"):
        return int(host["max_connections"])
    return _redis_default_pool_size()


def _redis_default_pool_size() -> int | None:
    import inspect
    import re

    try:
        from redis.asyncio.connection import ConnectionPool
    except ImportError:  # pragma: no cover - channels_redis needs redis
        return None
    try:
        source = inspect.getsource(ConnectionPool.__init__)
    except (OSError, TypeError):
        return None
    found = re.search(r"max_connections = max_connections or (\d+)", source)
    return int(found[1]) if found else None  # older redis-py: no cap


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
