"""The demo's settings, as ``make demo`` runs them, with the bench's routes.

Everything that is measured (token check, revocation check, bcrypt cost, the
cache and channel layer chosen from ``REDIS_URL``) stays as in the demo.  Three
changes only:

* login throttling is raised: the login benchmark sends hundreds of logins for
  the same few users from one address, which is what throttling exists to stop;
* so are the per-worker socket caps (per user, credential, address, and still
  authenticating per address): the WebSocket benchmarks hold thousands of
  sockets of a few users, all from the loopback address, and open them dozens
  at a time;
* with ``BENCH_PREFIX`` set (the runner sets one per run), every Redis key and
  channel of this run starts with it, so a run never reads another's state
  (other runs, test suites or demos may share the Redis server).

And two switches, off unless a benchmark sets them:

* ``BENCH_CACHE=locmem``: Django's local-memory cache instead of the demo's
  file-based one (only without ``REDIS_URL``), for the rows that measure the
  token check against a cache in process memory;
* ``BENCH_CHANNEL_LAYER=memory``: each process its own in-memory channel layer
  even with ``REDIS_URL`` (the Redis cache stays): no channel-layer message
  crosses between processes, so only the heartbeat's sweep can close a socket
  of another process (the ``lifecycle`` benchmark's "message dropped" case).
"""

import os

from project.settings import *  # noqa: F403
from project.settings import CACHES, CHANNEL_LAYERS, CHATAUTH, REDIS_URL

ROOT_URLCONF = "bench.site.urls"
ASGI_APPLICATION = "bench.site.asgi.application"

CHATAUTH = {
    **CHATAUTH,
    "LOGIN_FAILURE_LIMIT": 1_000_000,
    "MAX_SOCKETS_PER_USER": 1_000_000,
    "MAX_SOCKETS_PER_CREDENTIAL": 1_000_000,
    "MAX_SOCKETS_PER_ADDRESS": 1_000_000,
    "MAX_PENDING_SOCKETS_PER_ADDRESS": 1_000_000,
}

if os.environ.get("BENCH_CACHE") == "locmem" and not REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "chatauth-bench",
            # As the demo's file cache: culling drops throttle counts too.
            "OPTIONS": {"MAX_ENTRIES": 1_000_000},
        }
    }
if os.environ.get("BENCH_NEAR_CACHE") == "0":
    CHATAUTH["NEAR_CACHE"] = False
if os.environ.get("BENCH_CHANNEL_LAYER") == "memory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

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
