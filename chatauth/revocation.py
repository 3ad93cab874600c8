"""Server-side revocation: what is refused, writing denials, telling sockets.

The denylist and each user's state are stored in the database, the source of
truth, with the Django cache (Redis in production) in front of it: see
:mod:`chatauth.denylist`, whose names are importable from here too.

Revoking writes the database first, then the cache.  When the cache cannot be
read (Redis down) every check falls back to the database, so a revoked token is
never accepted because of a cache failure: the check fails closed.  A live check
costs one ``get_many`` round trip.

Telling sockets: every live chat session is in the channel-layer groups of its
user and of each of its credential's keys (:func:`notify`), and each worker
re-checks its sessions against the database on its heartbeat
(:func:`verdicts`), for what a lost message or another process did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models.functions import Greatest
from django.utils import timezone

from chatauth import signals
from chatauth.conf import settings
from chatauth.constants import (
    CloseCode,
    TokenType,
    token_group,
    user_group,
)

# Re-exported (``as``): chatauth.revocation stays the entry point for them.
from chatauth.denylist import (
    GONE,
    MISSING,
    PASSWORD_CLAIM,
    UserState,
    cache_get_many,
    cache_set,
    cache_ttl,
    entry_key,
    invalidate_user,
    load_denied,
    load_user_state,
    load_user_states,
    user_state,
    valid_state,
)
from chatauth.denylist import acached_identity as acached_identity
from chatauth.denylist import cache_identity as cache_identity
from chatauth.denylist import cached_identity as cached_identity
from chatauth.denylist import forget_identity as forget_identity
from chatauth.denylist import is_denied_cached as is_denied_cached
from chatauth.denylist import password_version as password_version
from chatauth.exceptions import TokenError, TokenRevoked
from chatauth.exceptions import close_code as close_code_of
from chatauth.internal.cache import aget_many, is_local
from chatauth.models import Profile, RevokedToken

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from chatauth.credentials import VerifiedToken

logger = logging.getLogger("chatauth.revocation")

#: Lineage keys whose denial refuses only what was issued before it: an
#: identifier's tombstone must not refuse the tokens of a later user of that
#: identifier.  Every other key is denied for good (nothing new can carry it).
_CONDITIONAL = "i-"


class IdentityChanged(TokenError):
    """A Chainlit-format token's identifier no longer names the user it was
    found as (renamed meanwhile): find it again."""


class NeedsDatabase(Exception):
    """``check(..., cache_only=True)``: the cache alone cannot decide."""


def _keys(verified: VerifiedToken) -> list[str]:
    return [
        *(entry_key("deny", key) for key in verified.revocation_keys),
        entry_key("user", verified.user_pk),
    ]


def check(verified: VerifiedToken, *, cache_only: bool = False) -> VerifiedToken:
    """Refuse a revoked credential, one of a logged-out-everywhere, inactive or
    gone user.  ``verified.user_pk`` must be known (see
    :func:`chatauth.tokens.identify`).

    ``cache_only``: decide from the cache alone (fast enough for an event loop
    when the cache is in memory) or raise :class:`NeedsDatabase` -- on a miss,
    and on a cache failure too, so the caller's full check still fails closed.
    """
    keys = _keys(verified)
    cached = cache_get_many(keys)
    if cache_only:
        return _decide_cached(verified, keys, cached)
    _refuse_denied(verified, _denied(verified, keys, cached))
    state = cached.get(keys[-1], MISSING)
    if not valid_state(state):
        state = user_state(verified.user_pk, cached=False)
    check_user(state, verified)
    # (a UserState: check_user refused GONE)
    return _as_of(state, verified)  # type: ignore[arg-type]


def check_denied(verified: VerifiedToken) -> None:
    """The denylist part of :func:`check` alone: it needs no user (a token that
    names an identifier is refused before any user is looked up or created)."""
    keys = [entry_key("deny", key) for key in verified.revocation_keys]
    _refuse_denied(verified, _denied(verified, keys, cache_get_many(keys)))


def _denied(
    verified: VerifiedToken, keys: list[str], cached: dict[str, Any]
) -> dict[str, float]:
    """When each of the credential's keys was revoked (0: it was not), from the
    cache, else from the database (then cached)."""
    denied: dict[str, float] = {}
    missing = []
    for key, cache_key in zip(verified.revocation_keys, keys, strict=False):
        if cache_key in cached:
            denied[key] = cached[cache_key]
        else:
            missing.append(key)
    if missing:
        found = load_denied(missing)
        ttl = min(
            cache_ttl(),
            verified.expires_at - time.time() + settings.LEEWAY.total_seconds(),
        )
        for key in missing:
            denied[key] = found.get(key, 0)
            # ``add``, not ``set``: if a revocation stored "denied" since the
            # database was read, this (now stale) answer must not replace it.
            cache_set(entry_key("deny", key), denied[key], ttl, only_if_absent=True)
    return denied


async def acheck(verified: VerifiedToken) -> VerifiedToken:
    """:func:`check` from the cache alone, for an event loop: a cache in memory
    is read directly, Django's Redis cache through ``redis.asyncio`` (see
    :func:`chatauth.internal.cache.aget_many`).

    Raises :class:`NeedsDatabase` when the cache cannot decide: a miss, a
    failure, or a cache with no non-blocking read.
    """
    if is_local():
        return check(verified, cache_only=True)
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
    if any(key not in cached for key in keys) or not valid_state(cached[keys[-1]]):
        raise NeedsDatabase()
    denied = dict(
        zip(verified.revocation_keys, (cached[k] for k in keys), strict=False)
    )
    _refuse_denied(verified, denied)
    try:
        check_user(cached[keys[-1]], verified)
    except IdentityChanged:
        raise NeedsDatabase() from None  # the full check finds the user again
    return _as_of(cached[keys[-1]], verified)


def _as_of(state: UserState, verified: VerifiedToken) -> VerifiedToken:
    """``verified``, told the user's identifier if it changed since minting."""
    if state.identifier == verified.identifier:
        return verified
    return replace(verified, renamed_to=state.identifier)


def _refuse_denied(verified: VerifiedToken, denied: dict[str, Any]) -> None:
    for key in verified.revocation_keys:
        revoked_at = denied.get(key)
        if not revoked_at:
            continue
        if (
            key == verified.key
            or not key.startswith(_CONDITIONAL)
            or verified.issued_at <= revoked_at
        ):
            raise TokenRevoked()


def check_user(state: Any, verified: VerifiedToken) -> None:
    """Refuse ``verified`` for a user in ``state``: gone, inactive, logged out
    everywhere since it was issued (a Django session: since it logged in),
    its password changed since, or no longer the identifier it names."""
    if state == GONE:
        raise TokenError("User not found.", code="user_not_found")
    active, tokens_nb, sessions_nb, version, identifier = state
    if not active:
        raise TokenError("User is inactive.", code="user_inactive")
    web = verified.token_type == TokenType.SESSION
    if verified.issued_at <= (sessions_nb if web else tokens_nb):
        raise TokenRevoked()
    claimed = verified.claims.get(PASSWORD_CLAIM)
    if claimed is not None and claimed != version:
        raise TokenRevoked()
    if verified.token_type == TokenType.CHAINLIT and identifier != verified.identifier:
        raise IdentityChanged()


# --- The sweep ------------------------------------------------------------------


def verdicts(credentials: Sequence[VerifiedToken]) -> list[int | None]:
    """The database's answer for each live credential: None while it holds,
    else the close code its socket must get.  Two or three queries for the
    whole batch, whatever its size (the heartbeat's sweep).

    A refusal the cache did not know yet is written to it, so HTTP requests
    see what the sweep found (an ORM bulk update, another process).
    """
    denied = load_denied(k for v in credentials for k in v.revocation_keys)
    states = load_user_states(v.user_pk for v in credentials)
    results: list[int | None] = []
    stale_users: set[str] = set()
    for verified in credentials:
        state = states.get(str(verified.user_pk), GONE)
        try:
            _refuse_denied(verified, denied)
            check_user(state, verified)
        except TokenError as e:
            results.append(close_code(e))
            stale_users.add(str(verified.user_pk))
        else:
            results.append(None)
    for key, revoked_at in denied.items():
        cache_set(entry_key("deny", key), revoked_at, cache_ttl())
    for pk in stale_users:
        invalidate_user(pk, states.get(pk, GONE))
    return results


def close_code(error: TokenError) -> int:
    """The WebSocket close code of a refusal (:data:`chatauth.exceptions.ERRORS`)."""
    return close_code_of(error)


# --- Writing -----------------------------------------------------------------


def revoke_key(
    key: str,
    *,
    kind: str,
    reason: str,
    expires_at: float,
    user_pk: Any = None,
    identifier: str = "",
) -> bool:
    """Deny credential ``key`` from now on and close the sockets that hold it,
    on every worker.  False if it was denied already.

    ``expires_at``: when nothing carrying the key can be accepted any more (the
    row may be pruned then).  The unique ``key`` makes this the arbiter of
    refresh-token rotation: of two concurrent refreshes with the same token,
    exactly one inserts the row.  An identifier's tombstone (denying what was
    issued *before* it) is renewed instead: a second deletion of a user of the
    same name moves it to now.
    """
    now = timezone.now()
    expires = datetime.fromtimestamp(expires_at, tz=UTC) + settings.LEEWAY
    created = _insert_denial(key, kind, reason, now, expires, user_pk)
    if not created and key.startswith(_CONDITIONAL):
        RevokedToken.objects.filter(key=key).update(
            revoked_at=now,
            reason=reason[:32],
            expires_at=Greatest("expires_at", expires),
        )
        created = True  # a new denial, as far as anyone is concerned
    ttl = expires_at - time.time() + settings.LEEWAY.total_seconds()
    if created:
        cache_set(entry_key("deny", key), now.timestamp(), ttl)
        signals.token_revoked.send(
            sender=RevokedToken,
            key=key,
            kind=kind,
            reason=reason,
            user_pk=user_pk,
            identifier=identifier,
        )
    else:
        # Whatever a concurrent check cached meanwhile, the row says denied.
        row = RevokedToken.objects.filter(key=key).values_list("revoked_at").first()
        if row is not None:
            cache_set(entry_key("deny", key), row[0].timestamp(), ttl)
    notify(token_group(key), reason=reason)
    return created


def _insert_denial(
    key: str, kind: str, reason: str, now: datetime, expires: datetime, user_pk: Any
) -> bool:
    try:
        with transaction.atomic():
            RevokedToken.objects.create(
                key=key,
                user_id=user_pk,
                token_type=kind[:16],
                reason=reason[:32],
                revoked_at=now,
                expires_at=expires,
            )
    except IntegrityError:
        return False
    return True


def revoke_token(verified: VerifiedToken, *, reason: str = "logout") -> bool:
    """Deny one token (its own key) from now on; tell its live sessions."""
    return revoke_key(
        verified.key,
        kind=verified.token_type,
        reason=reason,
        expires_at=verified.expires_at,
        user_pk=verified.user_pk,
        identifier=verified.identifier,
    )


def revoke_family(verified: VerifiedToken, *, reason: str) -> bool:
    """End the login ``verified`` belongs to: every access and refresh token
    minted for it since, and the sockets opened with them."""
    family = verified.family
    if family is None:
        return False
    lifetime = settings.REFRESH_TOKEN_LIFETIME.total_seconds()
    return revoke_key(
        family,
        kind="family",
        reason=reason,
        expires_at=time.time() + lifetime,
        user_pk=verified.user_pk,
        identifier=verified.identifier,
    )


def end_user(user: AbstractBaseUser, *, reason: str, web_sessions: bool = True) -> None:
    """Refuse every token issued to ``user`` until now (and, with
    ``web_sessions``, every Django session logged in until now) and close
    their live sessions on every worker.

    Without ``web_sessions`` (a password change) Django ends the web sessions
    itself, through their session hash, and keeps the one that made the change
    (``update_session_auth_hash``, under a new key).
    """
    # Strictly after every token minted so far, even one minted this millisecond
    # (``iat`` is rounded to milliseconds, so it may be up to 0.5 ms late).
    now = timezone.now() + timedelta(milliseconds=1)
    fields = {"tokens_not_before": now}
    if web_sessions:
        fields["sessions_not_before"] = now
    # (any user model: the stubs type the field with the settings' one)
    profile, _ = Profile.objects.get_or_create(user=user)  # type: ignore[misc]
    Profile.objects.filter(pk=profile.pk).update(**fields)
    invalidate_user(user.pk, load_user_state(user.pk))
    signals.user_tokens_revoked.send(sender=Profile, user=user, reason=reason)
    notify(user_group(user.pk), reason=reason)


def revoke_user(user: AbstractBaseUser, *, reason: str = "logout_everywhere") -> None:
    """Log ``user`` out everywhere: tokens, Django sessions, live sockets."""
    end_user(user, reason=reason, web_sessions=True)


#: Close messages held back by :func:`notifying_after` (None: send at once).
_held: ContextVar[list[tuple[str, str, int]] | None] = ContextVar(
    "chatauth_held_notifications", default=None
)


@contextmanager
def notifying_after() -> Iterator[None]:
    """Hold the close messages :func:`notify` would send inside the block, and
    send them once the block has finished without an exception -- put it
    *around* a ``transaction.atomic()`` block, so that the sockets are told
    after the commit: a socket told to close before the denial is committed
    could reconnect, be checked against the old rows and stay open.  If the
    block raises, nothing is sent (its transaction rolled back: nothing
    ended)."""
    held: list[tuple[str, str, int]] = []
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
    for group, reason, code in dict.fromkeys(held):
        notify(group, reason=reason, code=code)


def notify(group: str, *, reason: str, code: int = CloseCode.REVOKED) -> None:
    """Close every live chat session in ``group``, on every worker."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    held = _held.get()
    if held is not None:
        held.append((group, reason, int(code)))
        return
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "chatauth.revoked", "reason": reason, "code": int(code)}
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        logger.exception("could not tell live sessions in %s to close", group)
