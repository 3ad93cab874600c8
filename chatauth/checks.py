"""System checks for a misconfigured chatauth (``manage.py check [--deploy]``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from chatauth.conf import IMPORT_STRINGS, RENAMED, TIMEDELTAS, settings

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_SECRET_BYTES = 32


@register(Tags.security)
def check_secret(app_configs: Any = None, **kwargs: Any) -> list:
    settings.reload()
    errors: list = []
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


def _chainlit_interop() -> list:
    """Settings that break token exchange with Chainlit while it is on."""
    if not settings.ACCEPT_CHAINLIT_TOKENS:
        return []
    errors: list = []
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
def check_settings(app_configs: Any = None, **kwargs: Any) -> list:
    errors: list = []
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


MIDDLEWARE_PATH = "chatauth.middleware.SessionRevocationMiddleware"
SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


@register(Tags.security)
def check_login_doors(app_configs: Any = None, **kwargs: Any) -> list:
    """Every door that checks a password is throttled; every Django request
    meets the revocation of web sessions."""
    import inspect

    from django.utils.module_loading import import_string

    from chatauth.backends import ThrottleMixin

    errors: list = []
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
def check_session_engine(app_configs: Any = None, **kwargs: Any) -> list:
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


@register()
def check_provider_logout(app_configs: Any = None, **kwargs: Any) -> list:
    """Provider logout settings that cannot work: back-channel or RP-initiated
    logout asked of a provider that is not an OpenID provider (no ID token, so
    no ``sid``, no keys, no ``end_session_endpoint``), a
    ``post_logout_redirect_uri`` that is no URL, and back-channel logout with
    sessions in signed cookies (nothing on the server to end)."""
    from urllib.parse import urlsplit

    from chatauth.oauth import get_provider

    errors: list = []
    providers = settings.OAUTH_PROVIDERS
    if not isinstance(providers, dict):
        return errors
    signed_cookies = django_settings.SESSION_ENGINE.endswith(".signed_cookies")
    for provider_id, config in providers.items():
        if not isinstance(config, dict):
            continue
        provider = get_provider(provider_id)
        if signed_cookies and provider is not None and provider.backchannel_logout:
            errors.append(
                Warning(
                    f"OAuth provider {provider_id!r} may end logins with "
                    "back-channel logout, but SESSION_ENGINE keeps sessions in "
                    "signed cookies: there is no session on the server to end, "
                    "so its logout tokens end nothing.",
                    hint="Use 'django.contrib.sessions.backends.db' or "
                    "'cached_db' (or set \"backchannel_logout\": False for "
                    "this provider).",
                    id="chatauth.W020",
                )
            )
        asked = [
            name
            for name in (
                "backchannel_logout",
                "backchannel_logout_session_required",
                "rp_initiated_logout",
                "post_logout_redirect_uri",
            )
            if config.get(name)
        ]
        if asked and provider is not None and not provider.openid:
            errors.append(
                Error(
                    f"OAuth provider {provider_id!r} sets {', '.join(asked)}, but "
                    "it is not an OpenID Connect provider.",
                    hint="Provider logout needs OpenID Connect: ID tokens (their "
                    "sid), the provider's keys and its end_session_endpoint, "
                    "from its discovery document (server_metadata_url) and the "
                    "'openid' scope.  Remove these keys for an OAuth-only "
                    "provider such as GitHub.",
                    id="chatauth.E014",
                )
            )
        redirect = config.get("post_logout_redirect_uri")
        if redirect is not None:
            parts = urlsplit(str(redirect))
            absolute = parts.scheme in ("http", "https") and parts.netloc
            if not (absolute or (str(redirect).startswith("/") and not parts.netloc)):
                errors.append(
                    Error(
                        f"OAUTH_PROVIDERS[{provider_id!r}]['post_logout_redirect_"
                        f"uri'] = {redirect!r} is not a URL.",
                        hint="An absolute https:// URL, or a path of this site "
                        "('/'); it must be registered at the provider exactly as "
                        "chatauth sends it.",
                        id="chatauth.E015",
                    )
                )
    return errors


@register(Tags.security, deploy=True)
def check_deploy(app_configs: Any = None, **kwargs: Any) -> list:
    errors: list = []
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


def _deploy_proxies() -> list:
    """Who may speak for the client: proxy headers and identity headers."""
    from chatauth import hooks

    errors: list = []
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


def _deploy_secrets() -> list:
    secret = str(settings.SECRET or "")
    errors: list = []
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


def _deploy_limits() -> list:
    errors: list = []
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


def _deploy_origins() -> list:
    from urllib.parse import urlsplit

    errors: list = []
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


def _redis_layer_hosts() -> Iterator[tuple[str, Any]]:
    """``(alias, host)`` for each host of each Redis channel layer."""
    layers = getattr(django_settings, "CHANNEL_LAYERS", {}) or {}
    for alias, layer in layers.items():
        if str(layer.get("BACKEND", "")).endswith("core.RedisChannelLayer"):
            config = layer.get("CONFIG") or {}
            for host in config.get("hosts") or ["redis://localhost"]:
                yield alias, host


@register(Tags.compatibility)
def check_asgi(app_configs: Any = None, **kwargs: Any) -> list:
    """What a chat socket needs besides the settings: a channel layer (DEBUG
    has an in-memory one by default, see ``chatauth.apps``) and an ASGI
    application that routes ``ws/chat/`` to chatauth."""
    errors: list = []
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
    inner: list = []
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
def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list:
    """A Redis channel layer whose read timeout is not longer than its blocking
    read: under load the layer fails now and then, and every chat socket on the
    worker closes with 1011 (redis-py 8 defaults the timeout to 5 s)."""
    errors: list = []
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
def check_channel_layer_pool(app_configs: Any = None, **kwargs: Any) -> list:
    """A Redis channel layer whose connection pool is small: redis-py 8.1 caps
    a pool at 100 connections unless told otherwise, and past that a burst of
    chat sockets is refused (1011) and closing ones cannot leave their groups."""
    errors: list = []
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
