"""Security checks: every password door throttled, web sessions revocable,
and ``check --deploy``'s look at caches, channel layers, proxies, secrets,
limits and origins."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from chatauth.conf import settings

MIDDLEWARE_PATH = "chatauth.middleware.SessionRevocationMiddleware"
SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


@register(Tags.security)
def check_login_doors(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Every door that checks a password is throttled; every Django request
    meets the revocation of web sessions."""
    import inspect

    from django.utils.module_loading import import_string

    from chatauth.backends import ThrottleMixin

    errors: list[CheckMessage] = []
    for path in getattr(django_settings, "AUTHENTICATION_BACKENDS", []):
        try:
            backend = import_string(path)
        except ImportError:
            continue  # Django's own checks and the first login report it
        try:
            parameters = inspect.signature(backend.authenticate).parameters
        except (TypeError, ValueError):
            continue
        if issubclass(backend, ThrottleMixin):
            continue
        takes_password = "password" in parameters
        takes_anything = any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )
        if takes_anything and not takes_password:
            errors.append(
                Warning(
                    f"The authentication backend {path!r} takes any credentials: "
                    "if it checks passwords, they are not throttled.",
                    hint="Add chatauth.backends.ThrottleMixin first among its "
                    "bases if it checks passwords.",
                    id="chatauth.W010",
                )
            )
        if takes_password:
            errors.append(
                Error(
                    f"The authentication backend {path!r} checks passwords "
                    "without chatauth's throttle: the admin's and every other "
                    "login form can be brute-forced through it.",
                    hint="Use 'chatauth.backends.ThrottledModelBackend' instead of "
                    "Django's ModelBackend, or add chatauth.backends.ThrottleMixin "
                    "first among the backend's bases.",
                    id="chatauth.E006",
                )
            )
    middleware = list(getattr(django_settings, "MIDDLEWARE", None) or [])
    if SESSION_MIDDLEWARE in middleware and MIDDLEWARE_PATH not in middleware:
        errors.append(
            Error(
                f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: a Django session whose "
                "user was logged out everywhere or deactivated still opens the "
                "admin and every other page.",
                hint=f"Add {MIDDLEWARE_PATH!r} to MIDDLEWARE, after "
                f"{AUTH_MIDDLEWARE!r}.",
                id="chatauth.E007",
            )
        )
    elif (
        MIDDLEWARE_PATH in middleware
        and SESSION_MIDDLEWARE in middleware
        and middleware.index(MIDDLEWARE_PATH) < middleware.index(SESSION_MIDDLEWARE)
    ):
        errors.append(
            Error(
                f"{MIDDLEWARE_PATH} comes before {SESSION_MIDDLEWARE}: it cannot "
                "see the session.",
                hint=f"Put it after {AUTH_MIDDLEWARE!r}.",
                id="chatauth.E007",
            )
        )
    return errors


#: Session engines whose sessions chatauth sees deleted (their model's
#: post_delete signal): the database ones.
DB_SESSION_ENGINES = (
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cached_db",
)


@register(Tags.security)
def check_session_engine(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Copilot tokens minted for a Django session end with the session; chatauth
    sees every end only with a database session engine."""
    engine = getattr(django_settings, "SESSION_ENGINE", DB_SESSION_ENGINES[0])
    if engine in DB_SESSION_ENGINES:
        return []
    if engine.endswith(".signed_cookies"):
        detail = (
            "signed-cookie sessions change key at every change and cannot be "
            "ended on the server: copilot tokens minted for them end only with "
            "logout(), logout everywhere or their expiry"
        )
    else:
        detail = (
            "a session flushed or deleted without logout() goes unseen: copilot "
            "tokens minted for it live until logout everywhere or their expiry"
        )
    return [
        Warning(
            f"SESSION_ENGINE = {engine!r}: {detail}.",
            hint="Use 'django.contrib.sessions.backends.db' or 'cached_db'.",
            id="chatauth.W009",
        )
    ]


@register(Tags.security, deploy=True)
def check_deploy(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    from django.core.cache import caches
    from django.core.cache.backends.dummy import DummyCache
    from django.core.cache.backends.filebased import FileBasedCache
    from django.core.cache.backends.locmem import LocMemCache

    cache = caches[settings.CACHE_ALIAS]
    backend = type(cache).__name__
    if isinstance(cache, LocMemCache | DummyCache | FileBasedCache):
        reach = (
            "the processes of this machine"
            if isinstance(cache, FileBasedCache)
            else "this process"
        )
        errors.append(
            Warning(
                f"chatauth's cache ({settings.CACHE_ALIAS!r}) is a {backend}: "
                f"only {reach} can see what it holds.",
                hint="With workers on several machines, use a shared cache (Redis) "
                "so a revocation is seen by every worker within one request.",
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
    return [
        *errors,
        *_deploy_proxies(),
        *_deploy_secrets(),
        *_deploy_limits(),
        *_deploy_origins(),
    ]


#: Django settings that make it believe a request header from any peer.
FORWARDED_SETTINGS = (
    "SECURE_PROXY_SSL_HEADER",
    "USE_X_FORWARDED_HOST",
    "USE_X_FORWARDED_PORT",
)
#: Networks wider than these are "a whole network", not a proxy.
WIDEST_PROXY_PREFIX = {4: 16, 6: 64}


def _deploy_proxies() -> list[CheckMessage]:
    """Who may speak for the client: proxy headers and identity headers."""
    from chatauth import hooks

    errors: list[CheckMessage] = []
    for name in FORWARDED_SETTINGS:
        if getattr(django_settings, name, None):
            errors.append(
                Warning(
                    f"{name} is set: Django takes that header from every peer, "
                    "so any client can claim HTTPS (or another host or port).",
                    hint="Let the ASGI server decide, from the proxies it trusts "
                    "(uvicorn --proxy-headers --forwarded-allow-ips=<proxy>; "
                    "daphne --proxy-headers behind a proxy that overwrites them), "
                    f"and remove {name}.  Silence this check only if every "
                    "request reaches Django through a proxy that overwrites the "
                    "header.",
                    id="chatauth.W012",
                )
            )
    header_login = hooks.get_hook("header_auth_callback") is not None
    for entry in settings.TRUSTED_PROXIES:
        try:
            network = ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            continue  # chatauth.E004
        if network.prefixlen < WIDEST_PROXY_PREFIX[network.version]:
            errors.append(
                Warning(
                    f"CHATAUTH['TRUSTED_PROXIES'] entry {entry!r} trusts "
                    f"{network.num_addresses:,} addresses: any of them may set "
                    "the client address chatauth throttles and audits"
                    + (
                        ", and log in as anyone through auth/header."
                        if header_login
                        else "."
                    ),
                    hint="List the proxies' own addresses (or their small subnet).",
                    id="chatauth.W013",
                )
            )
        elif header_login and network.is_loopback:
            errors.append(
                Warning(
                    f"Header login trusts {entry!r}: every process on this "
                    "machine can log in as anyone through auth/header.",
                    hint="Trust a proxy on another address, or make sure nothing "
                    "else on this machine can reach the server, and that the "
                    "proxy strips the identity headers clients send.",
                    id="chatauth.W014",
                )
            )
    if not settings.REDACT_QUERY_STRINGS:
        errors.append(
            Warning(
                "CHATAUTH['REDACT_QUERY_STRINGS'] is False: tokens and OAuth codes "
                "sent in a query string are written to the server's access log.",
                hint="Leave it on (the default).",
                id="chatauth.W015",
            )
        )
    return errors


def _deploy_secrets() -> list[CheckMessage]:
    secret = str(settings.SECRET or "")
    errors: list[CheckMessage] = []
    if secret and "insecure" in secret.lower():
        errors.append(
            Error(
                "chatauth's signing secret is a development placeholder.",
                hint="Set CHATAUTH_SECRET to a random string of at least 32 bytes "
                '(python -c "import secrets; print(secrets.token_urlsafe(48))").',
                id="chatauth.E010",
            )
        )
    django_key = str(getattr(django_settings, "SECRET_KEY", "") or "")
    if secret and secret == django_key:
        errors.append(
            Warning(
                "chatauth's signing secret is Django's SECRET_KEY.",
                hint="Use a secret of its own: a leak of either (or a rotation of "
                "SECRET_KEY) must not decide the other.",
                id="chatauth.W016",
            )
        )
    return errors


#: Above these, a "limit" no longer bounds what one client can make a worker
#: hold.
LIMIT_CEILINGS = {
    "MAX_MESSAGE_BYTES": 1024 * 1024,
    "MAX_SOCKETS_PER_USER": 1_000,
    "MAX_SOCKETS_PER_CREDENTIAL": 1_000,
    "MAX_SOCKETS_PER_ADDRESS": 10_000,
    "MAX_PENDING_SOCKETS_PER_ADDRESS": 1_000,
}


def _deploy_limits() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name, ceiling in LIMIT_CEILINGS.items():
        value = getattr(settings, name)
        if isinstance(value, int) and not isinstance(value, bool) and value > ceiling:
            errors.append(
                Warning(
                    f"CHATAUTH['{name}'] = {value:,} does not bound what one "
                    "client can make a worker hold.",
                    hint=f"Keep it at most {ceiling:,} (the default is "
                    f"{settings.defaults[name]:,}).",
                    id="chatauth.W017",
                )
            )
    return errors


def _deploy_origins() -> list[CheckMessage]:
    from urllib.parse import urlsplit

    errors: list[CheckMessage] = []
    for entry in settings.ALLOWED_ORIGINS:
        parts = urlsplit(str(entry))
        if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
            errors.append(
                Warning(
                    f"CHATAUTH['ALLOWED_ORIGINS'] entry {entry!r} is plain HTTP: a "
                    "page anyone on the network path can rewrite may open chat "
                    "sessions with the user's cookie.",
                    hint="Allow the https:// origin.",
                    id="chatauth.W018",
                )
            )
    return errors


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
