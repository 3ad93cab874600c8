"""Settings of the real servers the adversarial suite starts: the demo's, plus knobs.

``project.settings`` (production-like, from the environment) with, from env vars
of this suite only:

``CHATAUTH_TEST_BCRYPT_ROUNDS``  bcrypt cost of the password hasher (default: the
                                 demo's hashers, cost 12)
``CHATAUTH_TEST_LOGIN_LIMIT``    ``LOGIN_FAILURE_LIMIT`` (default 10)
``CHATAUTH_TEST_HEARTBEAT``      ``HEARTBEAT_INTERVAL`` in seconds (default 30)
``CHATAUTH_TEST_LOG_FILE``       also write every log record (DEBUG and up) there
"""

import os

from django.contrib.auth.hashers import BCryptSHA256PasswordHasher

from project.settings import *  # noqa: F403
from project.settings import CHATAUTH, LOGGING


class TunableBCryptSHA256PasswordHasher(BCryptSHA256PasswordHasher):
    """Django's bcrypt hasher (same code path) at the cost this server was given."""

    rounds = int(os.environ.get("CHATAUTH_TEST_BCRYPT_ROUNDS", "12"))


if os.environ.get("CHATAUTH_TEST_BCRYPT_ROUNDS"):
    PASSWORD_HASHERS = [
        "tests.security.server_settings.TunableBCryptSHA256PasswordHasher"
    ]

CHATAUTH = {
    **CHATAUTH,
    "LOGIN_FAILURE_LIMIT": int(os.environ.get("CHATAUTH_TEST_LOGIN_LIMIT", "10")),
    "HEARTBEAT_INTERVAL": float(os.environ.get("CHATAUTH_TEST_HEARTBEAT", "30")),
}

if os.environ.get("CHATAUTH_TEST_LOG_FILE"):
    LOGGING = {
        **LOGGING,
        "handlers": {
            **LOGGING["handlers"],
            "file": {
                "class": "logging.FileHandler",
                "filename": os.environ["CHATAUTH_TEST_LOG_FILE"],
                "formatter": "plain",
            },
        },
        "root": {"handlers": ["file"], "level": "DEBUG"},
        "loggers": {
            "chatauth": {"handlers": ["console"], "level": "DEBUG"},
            "django.db.backends": {"level": "INFO"},  # no SQL (it has parameters)
        },
    }
