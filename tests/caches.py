"""Caches for tests: a real local-memory cache that can hold a writer at a
chosen point, and a real Redis cache with no server behind it.

The first replays, deterministically, the interleavings of a revocation check
and a concurrent revocation (tests/test_revocation.py); nothing is faked.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings

#: A Redis address where nothing listens (port 1).
NOWHERE = "redis://127.0.0.1:1/0"
#: The machine's Redis (tests that need it call ``require_service`` first).
REDIS = "redis://127.0.0.1:6379/0"


def redis_caches(*locations: str) -> dict:
    """``CACHES`` with a Redis cache ``"redis"`` on ``locations`` under a key
    prefix of its own (other suites may share this Redis)."""
    prefix = f"chatauth-test-{uuid.uuid4().hex[:8]}"
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": list(locations),
            "KEY_PREFIX": prefix,
            "VERSION": 3,  # the key function must be the cache's own
        },
    }


def file_caches(location: Any) -> dict:
    """``CACHES`` with a file cache ``"files"`` in ``location`` (the demo's
    embedded default: not local memory, no atomic counters, no async read)."""
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "files": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(location),
        },
    }


def forget_prefix(cache: Any) -> None:
    """Delete the keys of ``cache``'s prefix only (not ``clear()``: that would
    flush the whole database under a neighbour's feet)."""
    client = cache._cache.get_client(write=True)
    keys = list(client.scan_iter(match=f"{cache.key_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


@contextmanager
def cache_down() -> Iterator[None]:
    """chatauth's cache is a Redis cache that cannot be reached."""
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "down": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": NOWHERE,
        },
    }
    with override_settings(CACHES=caches, CHATAUTH={"CACHE_ALIAS": "down"}):
        yield


class GatedLocMemCache(LocMemCache):
    #: Called with (operation, key, value) before every add/set, when set.
    gate: Callable[[str, str, Any], None] | None = None

    def add(self, key: str, value: Any, *args: Any, **kwargs: Any) -> bool:
        if GatedLocMemCache.gate is not None:
            GatedLocMemCache.gate("add", key, value)
        return super().add(key, value, *args, **kwargs)

    def set(self, key: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if GatedLocMemCache.gate is not None:
            GatedLocMemCache.gate("set", key, value)
        super().set(key, value, *args, **kwargs)


class VanishingLocMemCache(LocMemCache):
    """A real local-memory cache whose counter can expire between a caller's
    ``add`` and ``incr``: with ``vanish`` set, the next ``incr`` finds its key
    gone (as when the window ends, or the key is evicted, in between)."""

    vanish = False

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        if VanishingLocMemCache.vanish:
            VanishingLocMemCache.vanish = False
            self.delete(key, version=version)
        return super().incr(key, delta, version=version)
