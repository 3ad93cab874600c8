"""The demo's settings, as ``make demo`` runs them, with the bench's routes.

Everything that is measured (token check, revocation check, bcrypt cost, the
cache and channel layer chosen from ``REDIS_URL``) stays as in the demo.  Two
changes only:

* login throttling is raised: the login benchmark sends hundreds of logins for
  the same few users from one address, which is what throttling exists to stop;
* with ``BENCH_PREFIX`` set (the runner sets one per run), every Redis key and
  channel of this run starts with it, so a run never reads another's state
  (other runs, test suites or demos may share the Redis server).
"""

import os

from project.settings import *  # noqa: F403
from project.settings import CACHES, CHANNEL_LAYERS, CHATAUTH

ROOT_URLCONF = "bench.site.urls"
ASGI_APPLICATION = "bench.site.asgi.application"

CHATAUTH = {**CHATAUTH, "LOGIN_FAILURE_LIMIT": 1_000_000}

BENCH_PREFIX = os.environ.get("BENCH_PREFIX")
if BENCH_PREFIX:
    CHATAUTH["CACHE_PREFIX"] = BENCH_PREFIX
    for cache in CACHES.values():
        cache["KEY_PREFIX"] = BENCH_PREFIX
    for layer in CHANNEL_LAYERS.values():
        if "CONFIG" in layer:
            layer["CONFIG"]["prefix"] = BENCH_PREFIX

# The demo logs every logout at INFO; a benchmark only wants to hear of trouble.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
