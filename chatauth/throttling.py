"""Failed-login throttling per client address and per username.

Every door that checks a password goes through here: ``auth/login`` (with or
without a ``password_auth_callback``) and every ``authenticate()`` call --
Django's admin and ``LoginView``, DRF's ``BasicAuthentication``, any code --
through the backends of :mod:`chatauth.backends`.

An attempt *reserves* a slot (an atomic ``incr``) before the password is
checked, so concurrent attempts cannot all slip through a check-then-count race:
of N parallel guesses, at most ``LOGIN_FAILURE_LIMIT`` are ever verified.  A
successful login gives its slots back.  Windows are fixed, starting at the
first failure, and ``Retry-After`` says when the refusing window ends.

The address is counted first.  An attempt it refuses is not counted against
the username, so one address cannot lock arbitrary accounts out: it can spend
its own ``LOGIN_FAILURE_LIMIT`` failures on one account at most.  A guesser
spread over many addresses still meets the per-username limit.  A request
without a usable address (a Unix socket, a proxy's ``unknown``) shares one
conservative bucket: never "no limit".
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied

from chatauth.conf import settings
from chatauth.exceptions import ServiceUnavailable
from chatauth.internal.cache import get_cache, has_atomic_counters
from chatauth.internal.http import address_bucket

logger = logging.getLogger("chatauth.throttling")

#: The bucket of every attempt whose client address is unknown.
UNKNOWN_ADDRESS = "unknown"
#: Serialises this process's reservations when the cache's ``incr`` is not
#: atomic (files, a database): exact within one process, then.
_lock = threading.Lock()
#: Retry-After of the last refusal in this context, for the audit row and the
#: response (see :func:`take_refusal`).
_refused: ContextVar[int | None] = ContextVar("chatauth_login_refused", default=None)


@dataclass(frozen=True)
class Reservation:
    keys: tuple[str, ...]
    allowed: bool
    retry_after: int


class LoginThrottled(PermissionDenied):
    """Raised by a throttled backend: ``authenticate()`` stops at it (no other
    backend checks the password) and answers None, as for a wrong password."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed attempts.")
        self.retry_after = retry_after


def normalize_username(username: str) -> str:
    return username.strip().casefold()


def _key(kind: str, value: str) -> str:
    # Hash: usernames are user input, and cache keys must stay short and safe.
    digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:32]
    return f"{settings.CACHE_PREFIX}:fail:{kind}:{digest}"


def _address_key(ip: str | None) -> str:
    return _key("ip", address_bucket(ip) or UNKNOWN_ADDRESS)


def _username_key(username: str) -> str:
    return _key("user", normalize_username(username))


def reserve(username: str, ip: str | None) -> Reservation:
    """Count one attempt against the address, then the username; ``allowed`` is
    False past either limit.

    Without its cache (Redis down) the count is unknown: a clean 503, never a
    500 and never an unthrottled password check (fail closed).
    """
    try:
        with _serialized():
            return _reserve(username, ip)
    except Exception as e:  # the backend's own errors (redis.ConnectionError, ...)
        logger.warning("cache unavailable; refusing a login it cannot throttle")
        raise ServiceUnavailable() from e


def _serialized() -> AbstractContextManager[Any]:
    return nullcontext() if has_atomic_counters() else _lock


def _reserve(username: str, ip: str | None) -> Reservation:
    address = _address_key(ip)
    retry_after = _take(address)
    if retry_after:
        return Reservation((address,), False, retry_after)
    if not normalize_username(username):
        # No name to count (a backend keyed otherwise): the address only, not
        # one bucket that every such login in the world would share.
        return Reservation((address,), True, 0)
    user = _username_key(username)
    retry_after = _take(user)
    if retry_after:
        _give_back(address)  # nothing was checked: the address spent nothing
        return Reservation((user,), False, retry_after)
    return Reservation((address, user), True, 0)


def _take(key: str) -> int:
    """Take a slot of ``key``'s window: 0 if allowed, else the seconds left."""
    cache = get_cache()
    window: float = settings.LOGIN_FAILURE_WINDOW.total_seconds()
    now = time.time()
    cache.add(f"{key}:t", now, int(window))
    cache.add(key, 0, int(window))
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: a new window
        cache.set(f"{key}:t", now, int(window))
        cache.add(key, 1, int(window))
        count = 1
    if count <= settings.LOGIN_FAILURE_LIMIT:
        return 0
    started: float = cache.get(f"{key}:t") or now
    return max(math.ceil(started + window - now), 1)


def _give_back(key: str) -> None:
    try:
        get_cache().decr(key)
    except ValueError:  # the window ended meanwhile: nothing to give back
        pass


def release(reservation: Reservation) -> None:
    """Give back the attempt of a successful login (it was not a failure)."""
    for key in reservation.keys:
        try:
            with _serialized():
                _give_back(key)
        except Exception:  # cache down: the login succeeded all the same
            logger.warning("cache unavailable; a login's attempt not given back")


def refuse(retry_after: int | None) -> None:
    """Note a throttled refusal in this context (read by :func:`take_refusal`);
    None forgets one noted earlier."""
    _refused.set(retry_after)


def take_refusal() -> int | None:
    """The Retry-After of a refusal noted in this context since the last call,
    or None; called when the failed login is audited."""
    retry_after = _refused.get()
    if retry_after is not None:
        _refused.set(None)
    return retry_after


def reset(username: str | None = None, ip: str | None = None) -> None:
    """Forget the failures of ``username`` and/or ``ip``."""
    if username is not None:
        _forget(_username_key(username))
    if ip is not None:
        _forget(_address_key(ip))


def _forget(key: str) -> None:
    get_cache().delete_many([key, f"{key}:t"])


def unlock(value: str) -> str:
    """Forget the failures of ``value``: an address, or else a username (and,
    for ``unknown``, the shared bucket of unknown addresses too).  Returns
    ``"address"`` or ``"username"``."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if value == UNKNOWN_ADDRESS:
            _forget(_address_key(None))
        reset(username=value)
        return "username"
    reset(ip=value)
    return "address"
