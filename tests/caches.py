"""A real local-memory cache that can hold a writer at a chosen point.

Used to replay, deterministically, the interleavings of a revocation check and a
concurrent revocation (tests/test_revocation.py); nothing is faked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.cache.backends.locmem import LocMemCache


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
