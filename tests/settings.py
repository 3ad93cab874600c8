"""Test settings: the demo project's, with a fixed secret and cheaper bcrypt.

``DATABASE_URL`` picks the database (SQLite in memory by default; the suite also
runs on PostgreSQL), ``REDIS_URL`` the cache and channel layer, as in production.
"""

import os

os.environ.setdefault("CHATAUTH_SECRET", "test-secret-" + "s" * 40)
os.environ.setdefault("DJANGO_SECRET_KEY", "test-django-secret-key-" + "k" * 40)
os.environ.setdefault("DJANGO_DEBUG", "0")

from project.settings import *  # noqa: E402,F403
from project.settings import CHATAUTH  # noqa: E402

if not os.environ.get("DATABASE_URL"):
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    }

# Still bcrypt (the same code path), with the minimum cost so the suite is fast.
PASSWORD_HASHERS = ["tests.hashers.FastBCryptSHA256PasswordHasher"]
CHATAUTH = {**CHATAUTH, "SECRET": os.environ["CHATAUTH_SECRET"], "HOOKS": None}
CHATAUTH["AUTODISCOVER_HOOKS"] = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"chatauth": {"handlers": ["null"], "level": "DEBUG"}},
}
