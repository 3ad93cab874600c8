"""Test settings: the demo project's, with a fixed secret and cheaper bcrypt.

``DATABASE_URL`` picks the database (a temporary SQLite file by default; the suite also
runs on PostgreSQL), ``REDIS_URL`` the cache and channel layer, as in production.
"""

import os

os.environ.setdefault("CHATAUTH_SECRET", "test-secret-" + "s" * 40)
os.environ.setdefault("DJANGO_SECRET_KEY", "test-django-secret-key-" + "k" * 40)
os.environ.setdefault("DJANGO_DEBUG", "0")

from project.settings import *  # noqa: E402,F403
from project.settings import CHATAUTH  # noqa: E402

if not os.environ.get("DATABASE_URL"):
    # A file, not ":memory:": an in-memory database shared between threads
    # answers concurrent writers with "table is locked" at once (shared-cache
    # mode ignores the busy timeout), while a file waits for the lock as the
    # demo's database does.  One file per test process.
    import tempfile

    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"chatauth-test-{os.getpid()}.db")
    }
    DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"]  # noqa: F405
else:
    # Worker threads (login's bcrypt, averify_token) close their connections only
    # when obsolete: with a max age they would still be open when pytest-django
    # drops the test database ("is being accessed by other users").
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
    # Nor a pool, for the same reason (the servers the suite starts run the
    # demo's settings, pool included).
    DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405

# In-process tests: a local-memory cache (the server-process tests run the
# demo's own settings).
if not os.environ.get("REDIS_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Still bcrypt (the same code path), with the minimum cost so the suite is fast.
PASSWORD_HASHERS = ["tests.hashers.FastBCryptSHA256PasswordHasher"]
CHATAUTH = {**CHATAUTH, "SECRET": os.environ["CHATAUTH_SECRET"], "HOOKS": None}
CHATAUTH["AUTODISCOVER_HOOKS"] = False
# Refusal rows written at once, one per refusal (tests/test_audit.py checks the
# counting with a real interval).
CHATAUTH["AUDIT_REFUSAL_INTERVAL"] = 0
# The test client's peer (127.0.0.1) plays the proxy for header login.
CHATAUTH["TRUSTED_PROXIES"] = ["127.0.0.1", "::1"]
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_SSL_REDIRECT = False
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"chatauth": {"handlers": ["null"], "level": "DEBUG"}},
}
