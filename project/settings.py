"""Settings of the chatauth demo project, also the reference deployment.

Everything a deployment changes comes from the environment; the table in
docs/deployment.md lists every variable read here, with its default.
Safe as shipped: with ``DJANGO_DEBUG`` off, cookies are Secure, plain HTTP is
redirected to HTTPS, HSTS is on, header login is off (no proxy trusted), and
only the ASGI server -- told which proxy to trust -- decides a request's
scheme and client address.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def env_list(name: str, default: str = "") -> list[str]:
    return [
        item.strip()
        for item in os.environ.get(name, default).split(",")
        if item.strip()
    ]


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or (
    "django-insecure-demo-key-change-me" if DEBUG else ""
)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "chatauth",
    "project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Web sessions ended by a logout everywhere or a deactivation end here for
    # every view (the admin too); throttled login forms answer 429.
    "chatauth.middleware.SessionRevocationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
import dj_database_url  # noqa: E402

DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # A pool per worker process, bounded.  Under ASGI every concurrent request
    # runs its sync code in a thread of its own, and with persistent
    # connections (CONN_MAX_AGE) each such thread would keep a connection:
    # a burst of requests (an attacker's, say) opens one per request until
    # PostgreSQL refuses everyone ("too many clients").  Past the pool's size
    # a request waits up to its timeout, then gets a 503.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": int(os.environ.get("DJANGO_DB_POOL_SIZE", "10")),
        "timeout": 10,
    }
elif DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # One writer at a time: wait for the lock instead of failing at once, and take
    # it when a transaction starts (no deadlock-prone read-to-write upgrade).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # WAL: readers never wait for the writer; synchronous=NORMAL: one fsync per
    # checkpoint instead of per commit (safe in WAL mode; a power cut loses at
    # most the last commits, never consistency).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

# --- Cache and channel layer ------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL")
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, exactly
                # as long as channels_redis blocks waiting for a message: on a
                # busy loop the empty reply is read late, the layer raises and
                # every chat socket closes (1011).  chatauth.W008 checks this.
                # redis-py 8.1 caps a pool at 100 connections by default: a burst
                # of connects past it is refused (1011).  chatauth.W011 checks.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 30,
                        "max_connections": 1000,
                    }
                ],
                "prefix": REDIS_PREFIX or "asgi",
            },
        }
    }
else:
    # Files next to the database: every process on this machine that uses the
    # database sees the same cache, so a revocation made by a management command
    # (chatauth_revoke, changepassword) holds in the server at once.  (A
    # local-memory cache is each process's own.)  Live sockets of another
    # process, which the in-memory channel layer cannot reach, close at its
    # next heartbeat.
    import hashlib

    _db = DATABASES["default"]
    _cache_dir = (
        Path(f"{_db['NAME']}-cache").resolve()
        if _db["ENGINE"].endswith("sqlite3")
        else Path(tempfile.gettempdir())
        / f"chatauth-cache-{hashlib.sha256(DATABASE_URL.encode()).hexdigest()[:16]}"
    )
    CACHES = {
        "default": {
            # Django's FileBasedCache, pruned of expired entries once a minute
            # instead of listing its directory at every write.
            "BACKEND": "chatauth.cache.FileCache",
            "LOCATION": str(_cache_dir),
            # Culling (past MAX_ENTRIES) drops entries at random, throttle
            # counts among them: keep it far away (expired ones go first).
            "OPTIONS": {"MAX_ENTRIES": 1_000_000},
        }
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Auth -------------------------------------------------------------------------
# Django's ModelBackend, with every password check throttled (the admin's login
# form and any other door that calls authenticate(), not only auth/login).
AUTHENTICATION_BACKENDS = ["chatauth.backends.ThrottledModelBackend"]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

CHATAUTH_SECRET = os.environ.get("CHATAUTH_SECRET") or os.environ.get(
    "CHAINLIT_AUTH_SECRET"
)
if not CHATAUTH_SECRET and DEBUG:
    # Development only: the system check refuses to run without a secret otherwise.
    CHATAUTH_SECRET = "insecure-demo-secret-for-development-only-0123456789"

CHATAUTH = {
    "SECRET": CHATAUTH_SECRET,
    "HOOKS": "project.chat_hooks",
    "ALLOWED_ORIGINS": env_list("CHATAUTH_ALLOWED_ORIGINS"),
    "ON_MESSAGE": "chatauth.handlers.echo",
    # Header login (auth/header) is off until a proxy is named here: only its
    # requests may carry identity headers, and it must strip the ones clients
    # send.  Empty by default: a local process cannot log in as anyone.
    "TRUSTED_PROXIES": env_list("CHATAUTH_TRUSTED_PROXIES"),
    "FRONTEND_URL": os.environ.get("CHATAUTH_FRONTEND_URL", "/"),
}
# OAuth providers, from the environment only: each is on when its client id is set
# (OAUTH_<ID>_CLIENT_ID / _CLIENT_SECRET, as Chainlit names them): google, github,
# azure-ad (Microsoft Entra ID, OAUTH_AZURE_AD_TENANT_ID), and any OpenID provider
# as "oidc" with OAUTH_OIDC_DISCOVERY_URL (its .well-known/openid-configuration).
CHATAUTH["OAUTH_PROVIDERS"] = {
    provider: (
        {"server_metadata_url": os.environ.get("OAUTH_OIDC_DISCOVERY_URL")}
        if provider == "oidc"
        else {}
    )
    for provider in ("google", "github", "azure-ad", "oidc")
    if os.environ.get(f"OAUTH_{provider.upper().replace('-', '_')}_CLIENT_ID")
}
CHATAUTH["PREVIOUS_SECRETS"] = env_list("CHATAUTH_PREVIOUS_SECRETS")
if os.environ.get("CHATAUTH_HEARTBEAT_INTERVAL"):
    CHATAUTH["HEARTBEAT_INTERVAL"] = float(os.environ["CHATAUTH_HEARTBEAT_INTERVAL"])
if os.environ.get("CHATAUTH_COPILOT_TOKEN_LIFETIME"):
    CHATAUTH["COPILOT_TOKEN_LIFETIME"] = int(
        os.environ["CHATAUTH_COPILOT_TOKEN_LIFETIME"]
    )

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "chatauth",
    "DESCRIPTION": "Authentication for chat and AI-assistant products.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# WebSocket frames under `runserver` (daphne): at most twice chatauth's
# MAX_MESSAGE_BYTES (chatauth closes 4413 past its own limit; daphne refuses
# bigger frames before reading them).  daphne never accepts per-message
# compression, so no frame inflates.  (uvicorn: see the README's command.)
DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE = 2 * 64 * 1024
DAPHNE_WEBSOCKET_MAX_FRAME_SIZE = 2 * 64 * 1024

# --- Production hardening (on whenever DEBUG is off) ------------------------------
# No SECURE_PROXY_SSL_HEADER: Django would take X-Forwarded-Proto from any
# peer.  The ASGI server sets the scheme from the proxies it is told to trust
# (uvicorn --proxy-headers --forwarded-allow-ips=<proxy>), and Django reads it.
if not DEBUG:
    SECURE_CONTENT_TYPE_NOSNIFF = True
    # "0" for a local trial of these settings over plain HTTP (Secure cookies
    # never come back over it: every form and OAuth login would fail).
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
    X_FRAME_OPTIONS = "DENY"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The demo under uvicorn (no DEBUG) still serves copilot.js when this is on.
SERVE_STATIC = env_bool("DJANGO_SERVE_STATIC", DEBUG)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"chatauth": {"handlers": ["console"], "level": "INFO"}},
}
