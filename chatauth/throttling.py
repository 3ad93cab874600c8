"""Failed-login throttling per username and per client address.

An attempt *reserves* a slot (an atomic ``incr``) before the password is checked,
so concurrent attempts cannot all slip through a check-then-count race: of N
parallel guesses, at most ``LOGIN_FAILURE_LIMIT`` are ever verified.  A
successful login gives its slot back.  Windows are fixed, starting at the first
failure, and ``Retry-After`` says when the window ends.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from chatauth.conf import settings
from chatauth.exceptions import ServiceUnavailable
from chatauth.internal.cache import get_cache

logger = logging.getLogger("chatauth.throttling")


@dataclass(frozen=True)
class Reservation:
    keys: tuple[str, ...]
    allowed: bool
    retry_after: int


def _key(kind: str, value: str) -> str:
    # Hash: usernames are user input, and cache keys must stay short and safe.
    digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:32]
    return f"{settings.CACHE_PREFIX}:fail:{kind}:{digest}"


def _scopes(username: str, ip: str | None) -> list[str]:
    keys = [_key("user", username.strip().casefold())]
    if ip:
        keys.append(_key("ip", ip))
    return keys


def reserve(username: str, ip: str | None) -> Reservation:
    """Count one attempt against each scope; ``allowed`` is False past the limit.

    Without its cache (Redis down) the count is unknown: a clean 503, never a
    500 and never an unthrottled password check (fail closed).
    """
    try:
        return _reserve(username, ip)
    except Exception as e:  # the backend's own errors (redis.ConnectionError, ...)
        logger.warning("cache unavailable; refusing a login it cannot throttle")
        raise ServiceUnavailable() from e


def _reserve(username: str, ip: str | None) -> Reservation:
    cache = get_cache()
    window = settings.LOGIN_FAILURE_WINDOW.total_seconds()
    limit = settings.LOGIN_FAILURE_LIMIT
    now = time.time()
    allowed, retry_after, keys = True, 0, _scopes(username, ip)
    for key in keys:
        cache.add(f"{key}:t", now, int(window))
        cache.add(key, 0, int(window))
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, int(window))
            count = 1
        if count > limit:
            started = cache.get(f"{key}:t") or now
            allowed = False
            retry_after = max(retry_after, math.ceil(started + window - now), 1)
    return Reservation(tuple(keys), allowed, retry_after)


def release(reservation: Reservation) -> None:
    """Give back the attempt of a successful login (it was not a failure)."""
    cache = get_cache()
    for key in reservation.keys:
        try:
            cache.decr(key)
        except ValueError:
            pass
        except Exception:  # cache down: the login succeeded all the same
            logger.warning("cache unavailable; a login's attempt not given back")


def reset(username: str, ip: str | None = None) -> None:
    """Forget the failures of ``username`` (and ``ip``), e.g. from the admin."""
    cache = get_cache()
    for key in _scopes(username, ip):
        cache.delete_many([key, f"{key}:t"])
