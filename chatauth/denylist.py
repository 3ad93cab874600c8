"""The denylist and each user's state: stored, read and cached.

The database is the source of truth; the Django cache (Redis in production) is
in front of it:

* ``<prefix>:deny:<key>`` is the time (epoch seconds) the credential ``key`` was
  revoked, or ``0`` when the database said it was not (kept for
  :func:`cache_ttl` at most).  A key is a token's own (``jti``) or one of its
  lineage (refresh family, Django session, API key, identifier: see
  :mod:`chatauth.credentials`).
* ``<prefix>:user:<pk>`` is the user's :class:`UserState`, or ``GONE``.
* ``<prefix>:ident:<digest>`` is the user a Chainlit-format token's identifier
  was last found as.

A cache that cannot be read is an empty answer here (never a decision): what
is refused and when is :mod:`chatauth.revocation`'s, which re-exports these
names.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from chatauth.conf import settings
from chatauth.internal.cache import (
    aget_many,
    forget_near,
    get_cache,
    is_local,
    is_process_memory,
)
from chatauth.internal.models import has_field
from chatauth.models import APIKey, RevokedToken

if TYPE_CHECKING:
    from django.core.cache.backends.base import BaseCache

#: The logger of :mod:`chatauth.revocation`, whose cache this is.
logger = logging.getLogger("chatauth.revocation")
GONE = "gone"
#: Not in the cache (``None`` may be a cached answer).
MISSING = object()
#: The claim of the password version a token was minted under (see
#: :func:`password_version`).
PASSWORD_CLAIM = "pwv"


class UserState(NamedTuple):
    """What decides whether a user's credentials hold (epoch seconds)."""

    active: bool
    #: Tokens issued at or before this are refused (logout everywhere,
    #: password change, deactivation).
    tokens_not_before: float
    #: Django sessions logged in at or before this are refused (logout
    #: everywhere, deactivation; a password change is Django's own business:
    #: its session hash).
    sessions_not_before: float
    #: :func:`password_version` of the stored password hash: a token minted
    #: before the hash changed carries another one (its ``pwv`` claim), by
    #: whatever path the hash changed -- ``QuerySet.update()``, raw SQL.
    password_version: str
    #: The user's ``USERNAME_FIELD``: what a token that names an identifier
    #: instead of a user id (Chainlit's format) must still name.
    identifier: str


def password_version(encoded: str | None) -> str:
    """A short keyed hash of a stored password hash, as Django's session hash
    is: a token carries the one of the hash it was minted under.  An upgraded
    hash (at login, a new hasher or work factor) is a new version too, as it
    is for Django's sessions."""
    from django.utils.crypto import salted_hmac

    # HMAC-SHA1 named explicitly (Django 6.1 warns that its default will
    # change): every token in circulation carries this value, and a new
    # algorithm would end them all at an upgrade.  HMAC-SHA1 is a sound MAC.
    digest = salted_hmac(
        "chatauth.password_version", encoded or "", algorithm="sha1"
    ).hexdigest()
    return digest[:16]


def _cache() -> BaseCache:
    return get_cache()


def entry_key(kind: str, value: Any) -> str:
    """The cache key of an entry: ``<prefix>:<kind>:<value>``."""
    return f"{settings.CACHE_PREFIX}:{kind}:{value}"


def cache_ttl() -> float:
    """How long an answer read from the database may be served from the cache.

    A cache in process memory cannot be told by another process (a management
    command, another worker) that something changed: there it is trusted for
    one heartbeat at most, the bound the sweep gives live sockets too.
    """
    ttl: float = settings.DENYLIST_CACHE_TTL.total_seconds()
    if is_process_memory():
        ttl = min(ttl, float(settings.HEARTBEAT_INTERVAL))
    return ttl


def cache_get_many(keys: list[str]) -> dict[str, Any]:
    try:
        return _cache().get_many(keys)
    except Exception:  # a cache outage must not decide anything: ask the DB
        logger.warning("cache unavailable; checking revocation in the database")
        return {}


def cache_set(
    key: str, value: Any, ttl: float, *, only_if_absent: bool = False
) -> None:
    try:
        if only_if_absent:
            _cache().add(key, value, max(1, int(ttl)))
        else:
            _cache().set(key, value, max(1, int(ttl)))
        forget_near([key])  # this process's copies (chatauth.internal.nearcache)
    except Exception:
        if only_if_absent:  # a check's answer: the next check asks again
            logger.warning("cache unavailable; %s not cached", key.rsplit(":", 2)[-2])
        else:
            # A revocation the cache did not take: a stale "not revoked" there
            # stays until it expires (a cache that reads but refuses writes --
            # Redis at maxmemory with "noeviction" -- does this).
            logger.error(
                "cache refused a revocation (%s); a cached earlier answer "
                "may stand for up to DENYLIST_CACHE_TTL",
                key.rsplit(":", 2)[-2],
            )


def cache_delete(key: str) -> None:
    try:
        _cache().delete(key)
        forget_near([key])
    except Exception:
        logger.error("cache unavailable; could not drop a stale entry")


# --- Reading -----------------------------------------------------------------


def _epoch(value: datetime | None) -> float:
    return value.timestamp() if value else 0.0


def load_user_states(user_pks: Iterable[Any]) -> dict[str, UserState | str]:
    """The state of each user in the database (``GONE`` for a missing one),
    by ``str(pk)``: one query, whatever the number of users."""
    User = get_user_model()
    wanted = {str(pk) for pk in user_pks if pk is not None}
    fields = [
        "pk",
        "chatauth_profile__tokens_not_before",
        "chatauth_profile__sessions_not_before",
        User.USERNAME_FIELD,
    ]
    has_active = has_field(User, "is_active")
    has_password = has_field(User, "password")
    fields += ["is_active"] * has_active + ["password"] * has_password
    states: dict[str, UserState | str] = dict.fromkeys(wanted, GONE)
    try:
        rows = User._default_manager.filter(pk__in=list(wanted)).values_list(*fields)
        for pk, tokens_nb, sessions_nb, identifier, *rest in rows:
            active = bool(rest.pop(0)) if has_active else True
            encoded = rest.pop(0) if has_password else None
            states[str(pk)] = UserState(
                active,
                _epoch(tokens_nb),
                _epoch(sessions_nb),
                password_version(encoded),
                str(identifier),
            )
    except (ValueError, TypeError, ValidationError):  # a pk of the wrong type
        pass
    return states


def load_user_state(user_pk: Any) -> UserState | str:
    return load_user_states([user_pk]).get(str(user_pk), GONE)


def load_denied(keys: Iterable[str]) -> dict[str, float]:
    """Which of ``keys`` the database denies, with when: one query (two when an
    API key is among them: its own row says so too, whoever revoked it)."""
    keys = list(dict.fromkeys(keys))
    denied = {
        key: revoked_at.timestamp()
        for key, revoked_at in RevokedToken.objects.filter(key__in=keys).values_list(
            "key", "revoked_at"
        )
    }
    api_keys = {int(k[2:]): k for k in keys if k.startswith("k-") and k not in denied}
    if api_keys:
        for pk, revoked_at in APIKey.objects.filter(
            pk__in=list(api_keys), revoked_at__isnull=False
        ).values_list("pk", "revoked_at"):
            if revoked_at is not None:  # (it is not: filtered so)
                denied[api_keys[pk]] = revoked_at.timestamp()
    return denied


def is_denied_cached(key: str) -> bool:
    """Whether the cache already says credential ``key`` is denied (a shortcut
    for writers; checks never trust a miss)."""
    cache_key = entry_key("deny", key)
    return bool(cache_get_many([cache_key]).get(cache_key))


def cached_identity(identifier: str) -> Any:
    """The user id a Chainlit-format token's ``identifier`` was last found as."""
    key = _identity_key(identifier)
    return cache_get_many([key]).get(key)


async def acached_identity(identifier: str) -> Any:
    """:func:`cached_identity` for an event loop (see :func:`acheck`): None when
    the cache does not know it, cannot be read without blocking, or fails."""
    if is_local():
        return cached_identity(identifier)
    key = _identity_key(identifier)
    try:
        cached = await aget_many([key])
    except Exception:  # a cache outage: the full check finds the user
        return None
    return None if cached is None else cached.get(key)


def cache_identity(identifier: str, user_pk: Any) -> None:
    cache_set(_identity_key(identifier), user_pk, cache_ttl())


def forget_identity(identifier: str) -> None:
    cache_delete(_identity_key(identifier))


def _identity_key(identifier: str) -> str:
    # A digest: identifiers sharing a long prefix must not share an entry.
    return entry_key("ident", hashlib.sha256(identifier.encode()).hexdigest())


def valid_state(state: object) -> TypeGuard[UserState | str]:
    """A state this version wrote (an older shape is a miss: read again)."""
    return state == GONE or (isinstance(state, tuple) and len(state) == 5)


def user_state(user_pk: Any, *, cached: bool = True) -> UserState | str:
    """The user's state, from the cache or else the database (then cached)."""
    key = entry_key("user", user_pk)
    state = cache_get_many([key]).get(key, MISSING) if cached else MISSING
    if not valid_state(state):
        state = load_user_state(user_pk)
        cache_set(key, state, cache_ttl(), only_if_absent=True)
    return state


def invalidate_user(
    user_pk: Any, state: UserState | tuple[bool, float, float] | str | None = None
) -> None:
    """Drop the cached state of a user (saved, deactivated, deleted, revoked), or
    replace it with ``state`` when the change makes the user stricter.

    Where tokens stop working (deactivated, deleted, logged out everywhere) the
    new state is *stored*, not just deleted: a check that read the old row just
    before the change would otherwise put it back for ``cache_ttl()``;
    :func:`chatauth.revocation.check` only ``add``s, so it cannot overwrite a
    stored state.
    """
    key = entry_key("user", user_pk)
    if state is None:
        cache_delete(key)
    else:
        cache_set(key, state, cache_ttl())
