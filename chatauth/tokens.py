"""Minting and verifying chatauth's JWTs.

Minting goes through djangorestframework-simplejwt's :class:`Token` (its claims,
``jti``, lifetimes).  Verifying is chatauth's own, in one pipeline that every
HTTP route and every WebSocket runs, :func:`verify_token`:

1. **signature** and 2. **form**: :func:`chatauth.credentials.verify_signed`
   (the token read, with no I/O, as a :class:`VerifiedToken` and its lineage);
3. **identity** (:func:`identify`): the user a Chainlit-format token names;
4. **revocation** (:func:`chatauth.revocation.check`): the denylist and the
   user's state, through the cache, the database as the source of truth.

The names of :mod:`chatauth.credentials` (``VerifiedToken``, ``decode``,
``classify``, ``verify_signed``, the claim names and lineage keys) are
importable from here too.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self

from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.tokens import Token

from chatauth import revocation
from chatauth.conf import on_reload, settings
from chatauth.constants import TokenType

# Re-exported (``as``): chatauth.tokens stays the entry point for them.
from chatauth.credentials import (
    API_KEY_CLAIM,
    FAMILY_CLAIM,
    ISSUED_AT_CLAIM,
    SESSION_CLAIM,
    VerifiedToken,
    api_key_id,
    get_secret,
    new_family,
    session_key_id,
    verify_signed,
)
from chatauth.credentials import MAX_TOKEN_LENGTH as MAX_TOKEN_LENGTH
from chatauth.credentials import TYPE_CLAIM as TYPE_CLAIM
from chatauth.credentials import classify as classify
from chatauth.credentials import decode as decode
from chatauth.credentials import identifier_id as identifier_id
from chatauth.credentials import token_key as token_key
from chatauth.denylist import PASSWORD_CLAIM, password_version
from chatauth.exceptions import HookError, TokenError
from chatauth.internal.models import has_field

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from chatauth.models import APIKey

_backend: TokenBackend | None = None


def get_backend() -> TokenBackend:
    """simplejwt's backend for chatauth's key and algorithm (one per settings)."""
    global _backend
    if _backend is None:
        _backend = TokenBackend(
            settings.ALGORITHM,
            signing_key=get_secret(),
            audience=settings.AUDIENCE,
            issuer=settings.ISSUER,
            leeway=settings.LEEWAY,
        )
    return _backend


@on_reload
def reset_backend() -> None:
    global _backend
    _backend = None


# --- Minting -------------------------------------------------------------------------


class ChatToken(Token):
    """A simplejwt token whose lifetime and key are read from ``CHATAUTH`` when used."""

    lifetime_setting = ""

    # simplejwt declares ``lifetime`` a writable class attribute (Optional); a
    # read-only property of the setting stands in for it here.
    @property
    def lifetime(self) -> timedelta:  # type: ignore[override]
        # (a timedelta: chatauth.conf turns a number of seconds into one)
        lifetime: timedelta = getattr(settings, self.lifetime_setting)
        return lifetime

    @property
    def token_backend(self) -> TokenBackend:
        return get_backend()

    def set_iat(self, claim: str = "iat", at_time: Any = None) -> None:
        # Millisecond precision, which RFC 7519 allows ("NumericDate ... non-integer
        # values can be represented"): logout-everywhere compares ``iat`` with the
        # moment of logout, and whole seconds cannot tell a token minted just
        # before it from one minted just after.
        at_time = at_time or self.current_time
        self.payload[claim] = round(at_time.timestamp(), 3)

    def set_lifetime(self, lifetime: timedelta) -> None:
        self.set_exp(from_time=self.current_time, lifetime=lifetime)

    @classmethod
    def for_claims(cls, user_pk: Any, claims: dict[str, Any]) -> Self:
        token = cls()
        token["user_id"] = str(user_pk)
        token.payload.update(claims)
        return token


class AccessToken(ChatToken):
    token_type = TokenType.ACCESS
    lifetime_setting = "ACCESS_TOKEN_LIFETIME"


class RefreshToken(ChatToken):
    token_type = TokenType.REFRESH
    lifetime_setting = "REFRESH_TOKEN_LIFETIME"


class CopilotToken(ChatToken):
    """A copilot token: also meant for a Chainlit server, so skew-tolerant.

    Chainlit checks tokens with PyJWT and no leeway, and PyJWT refuses an
    ``iat`` in its future: a token minted on a host whose clock runs a few
    seconds ahead of Chainlit's would be refused until the clocks agree.  So
    ``iat`` is backdated by ``LEEWAY`` (the skew chatauth tolerates itself),
    and the exact issue time, which logout-everywhere compares with, is in
    :data:`ISSUED_AT_CLAIM`.
    """

    token_type = TokenType.COPILOT
    lifetime_setting = "COPILOT_TOKEN_LIFETIME"

    def set_iat(self, claim: str = "iat", at_time: Any = None) -> None:
        at_time = at_time or self.current_time
        super().set_iat(ISSUED_AT_CLAIM, at_time)
        if claim == "iat":
            self.payload["iat"] = int((at_time - settings.LEEWAY).timestamp())
        else:
            super().set_iat(claim, at_time)


@dataclass(frozen=True)
class TokenPair:
    access: AccessToken
    refresh: RefreshToken
    user: dict[str, Any]

    def as_response(self) -> dict[str, Any]:
        return {
            "access_token": str(self.access),
            "refresh_token": str(self.refresh),
            "token_type": "bearer",
            "expires_in": int(settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
            "user": self.user,
        }


def issue_pair(user: AbstractBaseUser, *, family: str | None = None) -> TokenPair:
    """Mint an access/refresh pair for ``user`` with its identity claims.

    ``family``: the login the pair continues (a refresh); a new login otherwise.
    """
    from chatauth.adapter import get_adapter

    family = family or new_family()
    claims = get_adapter().user_claims(user)
    bound = {FAMILY_CLAIM: family, **_password_claim(user)}
    access = AccessToken.for_claims(user.pk, {**claims, **bound})
    refresh = RefreshToken.for_claims(
        user.pk, {"identifier": claims["identifier"], **bound}
    )
    return TokenPair(access, refresh, claims)


def _password_claim(user: AbstractBaseUser) -> dict[str, str]:
    """``{"pwv": ...}``: the password version the token is minted under, so a
    change of the stored hash, by any path, refuses it (see
    :class:`chatauth.revocation.UserState`)."""
    from django.contrib.auth import get_user_model

    if not has_field(get_user_model(), "password"):
        return {}
    return {PASSWORD_CLAIM: password_version(user.password)}


def issue_copilot_token(
    user: AbstractBaseUser,
    lifetime: timedelta | None = None,
    *,
    web_session: Any = None,
    api_key: APIKey | None = None,
    family: str | None = None,
) -> CopilotToken:
    """Mint a copilot access token for ``user`` (default ``COPILOT_TOKEN_LIFETIME``).

    ``web_session``: the Django session it is minted for; it ends with that
    session (sign-out, deletion) and never outlives its expiry.  ``api_key``:
    the key minting it; revoking the key ends it.  ``family``: the login (of an
    access token) it is minted for; logging out of that login ends it.
    """
    from chatauth.adapter import get_adapter

    claims = get_adapter().user_claims(user)
    token = CopilotToken.for_claims(user.pk, {**claims, **_password_claim(user)})
    if lifetime is not None:
        token.set_lifetime(lifetime)
    if web_session is not None and web_session.session_key:
        token[SESSION_CLAIM] = session_key_id(web_session.session_key)
        ends = int(web_session.get_expiry_date().timestamp())
        if ends < token["exp"]:
            token["exp"] = ends
    if api_key is not None:
        token[API_KEY_CLAIM] = api_key_id(api_key.pk)
    if family is not None:
        token[FAMILY_CLAIM] = family
    return token


# --- Verifying -----------------------------------------------------------------------


def identify(verified: VerifiedToken) -> VerifiedToken:
    """Step 3: the user a Chainlit-format token names (found, or created as
    Chainlit's own flows do).  Other tokens carry their user id already."""
    if verified.user_pk is not None:
        return verified
    from chatauth.adapter import get_adapter
    from chatauth.hooks import User

    identifier = verified.identifier
    pk = revocation.cached_identity(identifier)
    if pk is None:
        # A revoked token must not create (or find) anyone: its identifier's
        # user may have been deleted, and this one must not come back.
        revocation.check_denied(verified)
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
        revocation.cache_identity(identifier, pk)
    return replace(verified, user_pk=pk)


def verify_token(
    raw: Any,
    expected: Collection[str] = TokenType.ACCESS_LIKE,
    *,
    cache_only: bool = False,
) -> VerifiedToken:
    """The one check of a presented token: valid, of an ``expected`` type, not
    revoked, its user able to log in.

    Every route and every WebSocket calls this (the async side through
    :func:`averify_token`).  Raises :class:`TokenError` (``token_not_valid``,
    ``user_inactive``, ``user_not_found``), :class:`TokenExpired` or
    :class:`~chatauth.exceptions.TokenRevoked`; with ``cache_only``,
    :class:`~chatauth.revocation.NeedsDatabase` when the cache cannot decide.
    """
    verified = verify_signed(raw, expected)
    if verified.user_pk is None and cache_only:
        raise revocation.NeedsDatabase()
    if cache_only:
        return revocation.check(identify(verified), cache_only=True)
    return _full_check(verified)


async def averify_token(
    raw: Any,
    expected: Collection[str] = TokenType.ACCESS_LIKE,
    *,
    thread_sensitive: bool = False,
) -> VerifiedToken:
    """:func:`verify_token` for async code, without blocking the event loop.

    The signature check (CPU only) runs on the loop.  The revocation check runs
    there too when the cache can decide it without blocking: a cache with no
    network I/O, or Django's Redis cache read through ``redis.asyncio``.  A
    cache miss, a cache failure or another cache backend goes to a worker
    thread (database and sync cache), as :func:`verify_token` would:
    ``thread_sensitive`` as in :func:`asgiref.sync.sync_to_async` (True in a
    Django request: the request's own sync thread and database connection).
    """
    from asgiref.sync import sync_to_async

    verified = signed = verify_signed(raw, expected)
    if verified.user_pk is None:
        # A Chainlit-format token: the user its identifier was last found as,
        # from the cache (the full check below finds it otherwise, and finds it
        # again if that answer is stale).
        user_pk = await revocation.acached_identity(verified.identifier)
        if user_pk is not None:
            verified = replace(verified, user_pk=user_pk)
    if verified.user_pk is not None:
        try:
            return await revocation.acheck(verified)
        except revocation.NeedsDatabase:
            verified = signed
    if thread_sensitive:
        return await sync_to_async(_full_check)(verified)
    return await sync_to_async(_check_in_worker, thread_sensitive=False)(verified)


def _full_check(verified: VerifiedToken) -> VerifiedToken:
    """Identity and revocation from the cache and the database."""
    try:
        return revocation.check(identify(verified))
    except revocation.IdentityChanged:
        # The identifier was found as a user it no longer names (renamed
        # since): forget that, and find it again.
        revocation.forget_identity(verified.identifier)
        return revocation.check(identify(verified))


def _check_in_worker(verified: VerifiedToken) -> VerifiedToken:
    from django.db import close_old_connections

    try:
        return _full_check(verified)
    finally:
        # A worker thread is not a request thread: nothing else ever closes its
        # connection once obsolete or broken (e.g. after a database restart).
        close_old_connections()
