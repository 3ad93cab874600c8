"""Server-side revocation: the denylist, per-user "not before", and telling sockets.

The database is the source of truth; the Django cache (Redis in production) is
in front of it:

* ``<prefix>:deny:<key>`` is ``1`` for a revoked token and ``0`` for one the
  database said was not revoked (kept for ``DENYLIST_CACHE_TTL`` at most).
* ``<prefix>:user:<pk>`` is ``(is_active, not_before)`` of the user, or ``GONE``.

Revoking writes the database first, then the cache.  When the cache cannot be
read (Redis down) every check falls back to the database, so a revoked token is
never accepted because of a cache failure: the check fails closed.  A live check
costs one ``get_many`` round trip.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.signals import user_logged_in
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from chatauth import signals
from chatauth.conf import settings
from chatauth.constants import CloseCode, token_group, user_group
from chatauth.exceptions import HookError, TokenError, TokenRevoked
from chatauth.internal.cache import aget_many, get_cache
from chatauth.models import Profile, RevokedToken

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.core.cache.backends.base import BaseCache

    from chatauth.tokens import VerifiedToken

logger = logging.getLogger("chatauth.revocation")
GONE = "gone"
_MISSING = object()


def _cache() -> BaseCache:
    return get_cache()


def _k(kind: str, value: Any) -> str:
    return f"{settings.CACHE_PREFIX}:{kind}:{value}"


def _cache_get_many(keys: list[str]) -> dict[str, Any]:
    try:
        return _cache().get_many(keys)
    except Exception:  # a cache outage must not decide anything: ask the DB
        logger.warning("cache unavailable; checking revocation in the database")
        return {}


def _cache_set(
    key: str, value: Any, ttl: float, *, only_if_absent: bool = False
) -> None:
    try:
        if only_if_absent:
            _cache().add(key, value, max(1, int(ttl)))
        else:
            _cache().set(key, value, max(1, int(ttl)))
    except Exception:
        logger.warning("cache unavailable; %s not cached", key.rsplit(":", 2)[-2])


def _cache_delete(key: str) -> None:
    try:
        _cache().delete(key)
    except Exception:
        logger.error("cache unavailable; could not drop a stale entry")


# --- Reading -----------------------------------------------------------------


def _load_user_state(user_pk: Any) -> tuple[bool, float] | str:
    User = get_user_model()
    has_active = any(f.name == "is_active" for f in User._meta.concrete_fields)
    fields = ["chatauth_profile__tokens_not_before"]
    if has_active:
        fields.append("is_active")
    try:
        row = User._default_manager.filter(pk=user_pk).values_list(*fields).first()
    except (ValueError, TypeError, ValidationError):  # pk of the wrong type
        row = None
    if row is None:
        return GONE
    not_before = row[0].timestamp() if row[0] else 0.0
    return (bool(row[1]) if has_active else True, not_before)


def _resolve_chainlit_user(verified: VerifiedToken) -> VerifiedToken:
    """Find (or create, as Chainlit's own flows do) the user a Chainlit token names."""
    from chatauth.adapter import get_adapter
    from chatauth.hooks import User

    identifier = verified.identifier
    key = _k("ident", identifier.encode().hex()[:200])
    pk = _cache_get_many([key]).get(key)
    if pk is None:
        claims = verified.claims
        try:
            user = get_adapter().get_or_create_user(
                User(
                    identifier, claims.get("display_name"), claims.get("metadata") or {}
                ),
                update=False,
            )
        except HookError as e:  # e.g. longer than the user model's USERNAME_FIELD
            raise TokenError() from e
        pk = user.pk
        _cache_set(key, pk, settings.DENYLIST_CACHE_TTL.total_seconds())
    return replace(verified, user_pk=pk)


class NeedsDatabase(Exception):
    """``check(..., cache_only=True)``: the cache alone cannot decide."""


def _keys(verified: VerifiedToken) -> list[str]:
    return [_k("deny", verified.key), _k("user", verified.user_pk)]


def check(verified: VerifiedToken, *, cache_only: bool = False) -> VerifiedToken:
    """Refuse a revoked token, a logged-out-everywhere one, or one of a gone user.

    ``cache_only``: decide from the cache alone (fast enough for an event loop
    when the cache is local memory) or raise :class:`NeedsDatabase` -- on a miss,
    and on a cache failure too, so the caller's full check still fails closed.
    """
    if verified.user_pk is None:
        if cache_only:
            raise NeedsDatabase()
        verified = _resolve_chainlit_user(verified)
    keys = _keys(verified)
    cached = _cache_get_many(keys)
    if cache_only:
        return _decide_cached(verified, keys, cached)
    deny_key, user_key = keys
    denied = cached.get(deny_key, _MISSING)
    if denied is _MISSING:
        denied = RevokedToken.objects.filter(key=verified.key).exists()
        ttl = min(
            settings.DENYLIST_CACHE_TTL.total_seconds(),
            verified.expires_at - time.time() + settings.LEEWAY.total_seconds(),
        )
        # ``add``, not ``set``: if a revocation stored "denied" since the database
        # was read, this (now stale) answer must not replace it.
        _cache_set(deny_key, int(denied), ttl, only_if_absent=True)
    if denied:
        raise TokenRevoked()

    _check_user(verified.user_pk, verified.issued_at, cached.get(user_key, _MISSING))
    return verified


async def acheck_cached(verified: VerifiedToken) -> VerifiedToken:
    """:func:`check` with ``cache_only`` for an event loop, reading the cache
    without blocking it (see :func:`chatauth.internal.cache.aget_many`).

    Raises :class:`NeedsDatabase` when the cache cannot decide: a miss, a
    failure, or a cache with no async read.
    """
    if verified.user_pk is None:
        raise NeedsDatabase()
    keys = _keys(verified)
    try:
        cached = await aget_many(keys)
    except Exception:  # a cache outage decides nothing: the full check runs
        logger.warning("cache unavailable; checking revocation in the database")
        raise NeedsDatabase() from None
    if cached is None:
        raise NeedsDatabase()
    return _decide_cached(verified, keys, cached)


def _decide_cached(
    verified: VerifiedToken, keys: list[str], cached: dict[str, Any]
) -> VerifiedToken:
    deny_key, user_key = keys
    if deny_key not in cached or user_key not in cached:
        raise NeedsDatabase()
    if cached[deny_key]:
        raise TokenRevoked()
    _check_user(verified.user_pk, verified.issued_at, cached[user_key])
    return verified


def _check_user(user_pk: Any, issued_at: float, state: Any = _MISSING) -> None:
    if state is _MISSING:
        key = _k("user", user_pk)
        state = _cache_get_many([key]).get(key, _MISSING)
    if state is _MISSING:
        state = _load_user_state(user_pk)
        ttl = settings.DENYLIST_CACHE_TTL.total_seconds()
        _cache_set(_k("user", user_pk), state, ttl, only_if_absent=True)
    if state == GONE:
        raise TokenError("User not found.", code="user_not_found")
    active, not_before = state
    if not active:
        raise TokenError("User is inactive.", code="user_inactive")
    if issued_at <= not_before:
        raise TokenRevoked()


# --- Django sessions ----------------------------------------------------------

#: When the session's user logged in (``time.time()``), set at ``login()``.
SESSION_AUTH_AT = "_chatauth_auth_at"


def session_auth_time(session: Any) -> float:
    """When ``session``'s user logged in; 1.0 for a session older than chatauth's
    stamp (so it survives until the user is logged out everywhere)."""
    value = session.get(SESSION_AUTH_AT)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1.0
    return float(value)


def check_session(user_pk: Any, session: Any) -> None:
    """Refuse a Django session whose user was logged out everywhere (or
    deactivated, or deleted) after it logged in: "everywhere" includes the web
    sessions that mint copilot tokens and open chat sockets, not only JWTs.
    Raises like :func:`check`."""
    _check_user(user_pk, session_auth_time(session))


@receiver(user_logged_in)
def _stamp_session(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    # Only a session that ``login()`` tied to this user (not an API login's
    # request, whose session nobody keeps).
    if session is not None and str(session.get(SESSION_KEY)) == str(user.pk):
        session[SESSION_AUTH_AT] = time.time()


# --- Writing -----------------------------------------------------------------


def revoke_token(verified: VerifiedToken, *, reason: str = "logout") -> bool:
    """Deny one token from now on; tell its live sessions.  False if already denied.

    The unique ``key`` makes this the arbiter of refresh-token rotation: of two
    concurrent refreshes with the same token, exactly one inserts the row.
    """
    expires = datetime.fromtimestamp(verified.expires_at, tz=UTC)
    expires += settings.LEEWAY
    try:
        with transaction.atomic():
            RevokedToken.objects.create(
                key=verified.key,
                user_id=verified.user_pk,
                token_type=verified.token_type,
                reason=reason,
                expires_at=expires,
            )
        created = True
    except IntegrityError:
        created = False
    ttl = verified.expires_at - time.time() + settings.LEEWAY.total_seconds()
    _cache_set(_k("deny", verified.key), 1, ttl)
    if created:
        signals.token_revoked.send(
            sender=RevokedToken, token=verified, reason=reason, user_pk=verified.user_pk
        )
    notify(token_group(verified.key), reason=reason)
    return created


def revoke_user(user: AbstractBaseUser, *, reason: str = "logout_everywhere") -> None:
    """Refuse every token issued to ``user`` until now and close all their sessions."""
    now = timezone.now()
    # Strictly after every token minted so far, even one minted this millisecond.
    now += timedelta(milliseconds=1)
    profile, _ = Profile.objects.get_or_create(user=user)
    Profile.objects.filter(pk=profile.pk).update(tokens_not_before=now)
    invalidate_user(user.pk, _load_user_state(user.pk))
    signals.user_tokens_revoked.send(sender=Profile, user=user, reason=reason)
    notify(user_group(user.pk), reason=reason)


def invalidate_user(
    user_pk: Any, state: tuple[bool, float] | str | None = None
) -> None:
    """Drop the cached state of a user (saved, deactivated, deleted, revoked), or
    replace it with ``state`` when the change makes the user stricter.

    Where tokens stop working (deactivated, deleted, logged out everywhere) the
    new state is *stored*, not just deleted: a check that read the old row just
    before the change would otherwise put it back for ``DENYLIST_CACHE_TTL``;
    :func:`check` only ``add``s, so it cannot overwrite a stored state.
    """
    key = _k("user", user_pk)
    if state is None:
        _cache_delete(key)
    else:
        _cache_set(key, state, settings.DENYLIST_CACHE_TTL.total_seconds())


def notify(group: str, *, reason: str, code: int = CloseCode.REVOKED) -> None:
    """Close every live chat session in ``group``, on every worker."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "chatauth.revoked", "reason": reason, "code": int(code)}
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        logger.exception("could not tell live sessions in %s to close", group)


@receiver(post_save)
@receiver(post_delete)
def _user_changed(sender: type, instance: Any, **kwargs: Any) -> None:
    if sender is get_user_model():
        if kwargs.get("signal") is post_delete:
            invalidate_user(instance.pk, GONE)
        elif not getattr(instance, "is_active", True):
            invalidate_user(instance.pk, (False, 0.0))
            notify(user_group(instance.pk), reason="deactivated")
        else:
            invalidate_user(instance.pk)
    elif sender is Profile:
        invalidate_user(instance.user_id)
